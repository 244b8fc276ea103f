package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// load is one batch of requests: request i of n is req(i), and check(i,
// resp) says whether its answer is the one the scenario expects.
type load struct {
	n     int
	req   func(i int) *authv3.CheckRequest
	check func(i int, resp *authv3.CheckResponse) error
}

// outcome is what drive measured.
type outcome struct {
	done      int // requests answered, ≤ n when the time limit cut the run
	elapsed   time.Duration
	latencies []time.Duration // sorted, one per answered request
	failures  int
	firstErr  error
}

// drive sends l over api from streams goroutines, each a stream of the one
// connection with one request in flight, until all n are answered or limit
// passes.
func drive(api authv3.AuthorizationClient, streams int, limit time.Duration, l load) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	lat := make([]time.Duration, l.n)
	var next, done, failures atomic.Int64
	var once sync.Once
	var firstErr error
	fail := func(err error) {
		failures.Add(1)
		once.Do(func() { firstErr = err })
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range streams {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= l.n {
					return
				}
				t := time.Now()
				resp, err := api.Check(ctx, l.req(i))
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("request %d: %w", i, err))
					}
					return
				}
				lat[i] = time.Since(t)
				done.Add(1)
				if l.check != nil {
					if err := l.check(i, resp); err != nil {
						fail(fmt.Errorf("request %d: %w", i, err))
					}
				}
			}
		})
	}
	wg.Wait()
	o := outcome{done: int(done.Load()), elapsed: time.Since(start), failures: int(failures.Load()), firstErr: firstErr}
	o.latencies = make([]time.Duration, 0, o.done)
	for _, d := range lat {
		if d > 0 {
			o.latencies = append(o.latencies, d)
		}
	}
	slices.Sort(o.latencies)
	return o
}

// percentile returns the q-quantile (0 < q ≤ 1) of sorted latencies.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// median of xs (not modified); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}
