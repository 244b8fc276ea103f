package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// BenchmarkSteadyTraffic drives the real engine with steady traffic (every
// session sends a request every 500 ms, with its cookie, or as an API client
// without cookies) and reports, after a warm-up in which every session has
// begun:
//
//   - rt/allowed: round trips to Redis per allowed request, counted by a
//     go-redis hook (a pipeline is one), plus the subscription's heartbeats;
//   - cmds/allowed: commands sent per allowed request, the same way (a
//     flush of N sessions' activity is N commands in one round trip);
//   - p50-µs, p99-µs: the engine's decision time, and the same for the
//     embedded store under the same traffic, for comparison.
//
// It takes about a minute: run it alone, once:
//
//	go test -run '^$' -bench SteadyTraffic -benchtime 1x ./store/redis/
func BenchmarkSteadyTraffic(b *testing.B) {
	const sessions, every, window = 400, 500 * time.Millisecond, 20 * time.Second
	for _, tc := range []struct {
		store  string
		idle   time.Duration
		cookie bool
	}{
		{"memory", 30 * time.Minute, true}, {"redis", 30 * time.Minute, true}, {"redis", 5 * time.Minute, true},
		{"redis", 30 * time.Minute, false},
	} {
		b.Run(fmt.Sprintf("%s/idle=%v/cookie=%v", tc.store, tc.idle, tc.cookie), func(b *testing.B) {
			var store authz.Store
			var rs *Store
			var hook counter
			if tc.store == "memory" {
				m, err := memory.New(memory.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				store = m
			} else {
				rs = open(b, redistest.Start(b).URL(), Options{})
				rs.c.AddHook(&hook)
				store = rs
			}
			for b.Loop() {
				res := steadyTraffic(b, store, tc.idle, tc.cookie, sessions, every, window, func() {
					hook.trips.Store(0)
					hook.cmds.Store(0)
				})
				b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(res.p99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(res.allowed)/window.Seconds(), "allowed/s")
				if rs != nil {
					beats := float64(window / (rs.o.MaxStale / 4))
					b.ReportMetric((float64(hook.trips.Load())+beats)/float64(res.allowed), "rt/allowed")
					b.ReportMetric((float64(hook.cmds.Load())+beats)/float64(res.allowed), "cmds/allowed")
				}
			}
		})
	}
}

type steadyResult struct {
	allowed  int
	p50, p99 time.Duration
}

// steadyTraffic begins one session per client, calls measure, then runs
// every client for window, with its session's cookie or without, and
// returns what it saw after measure.
func steadyTraffic(b *testing.B, store authz.Store, idle time.Duration, cookie bool, clients int, every, window time.Duration, measure func()) steadyResult {
	v := fakeVerifier{}
	p := benchPolicy(v, idle)
	e, err := authz.NewEngine(authz.Options{Policies: onePolicy{p}, Store: store})
	if err != nil {
		b.Fatal(err)
	}
	headers := make([]authz.HeaderMap, clients)
	for i := range headers {
		tok := "tok-" + strconv.Itoa(i)
		now := time.Now().UnixMilli()
		v[tok] = &authz.Claims{Issuer: "iss", Subject: tok, AuthTime: now, IssuedAt: now, Expiry: now + 3600_000,
			Identity: authz.IdentityDigest("iss", tok, nil), Scope: authz.ScopeDigest("iss", tok, "")}
		headers[i] = authz.HeaderMap{"authorization": "Bearer " + tok}
		d := e.Check(context.Background(), &authz.Request{Host: "app.test", Path: "/", Headers: headers[i]})
		if !d.Allow || len(d.SetCookie) != 1 {
			b.Fatalf("begin: %+v", d)
		}
		if cookie {
			headers[i]["cookie"] = strings.SplitN(d.SetCookie[0], ";", 2)[0]
		}
	}
	measure()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(window)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			// Spread the clients over the interval, as real users are.
			time.Sleep(time.Duration(i) * every / time.Duration(clients))
			for t := time.Now(); t.Before(end); t = t.Add(every) {
				time.Sleep(time.Until(t))
				start := time.Now()
				d := e.Check(context.Background(), &authz.Request{Host: "app.test", Path: "/", Headers: headers[i]})
				mine = append(mine, time.Since(start))
				if !d.Allow {
					b.Errorf("denied in steady traffic: %+v", d)
					return
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		b.Fatal("no request allowed")
	}
	slices.Sort(lat)
	return steadyResult{allowed: len(lat), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// benchPolicy is a token-mode policy "app" on the verifier v.
func benchPolicy(v fakeVerifier, idle time.Duration) *authz.Policy {
	return &authz.Policy{
		Name: "app", Hosts: []string{"app.test"}, AbsoluteTimeout: 8 * time.Hour, IdleTimeout: idle,
		ActivityGranularity: idle / 100, // the policy default
		TokenSources:        []authz.TokenSource{{Kind: authz.FromHeader, Name: "authorization"}},
		MaxTokenBytes:       16 << 10, Verifier: v,
		Login:  authz.Login{URL: "https://login.test/", ReturnParam: "rd"},
		Cookie: authz.Cookie{Name: "__Host-sessiongate", SameSite: "Lax"},
	}
}

// counter counts what the client sends to Redis: round trips (a pipeline
// is one) and commands.
type counter struct{ trips, cmds atomic.Int64 }

func (h *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

type onePolicy struct{ p *authz.Policy }

func (o onePolicy) Match(string) *authz.Policy { return o.p }

// fakeVerifier maps tokens to claims, as a verifier with a warm verified-
// token cache does.
type fakeVerifier map[string]*authz.Claims

func (v fakeVerifier) Verify(_ context.Context, raw string, _ time.Time) (*authz.Claims, error) {
	if c, ok := v[raw]; ok {
		return c, nil
	}
	return nil, &authz.TokenError{Reason: authz.ReasonInvalidToken, Detail: "unknown"}
}

// BenchmarkLoadCached: a Load the near cache answers, of a token session
// and of a sign-in session with a sealed grant of the size package oidc
// seals (2,206 bytes). The live tier keeps the grant apart from the record,
// so the sign-in session's Load copies its ~150-byte record, not the grant:
//
//	go test -run '^$' -bench LoadCached -benchmem ./store/redis/
func BenchmarkLoadCached(b *testing.B) {
	s := open(b, redistest.Start(b).URL(), Options{})
	for _, grant := range []int{0, 2206} {
		b.Run(fmt.Sprintf("grant=%d", grant), func(b *testing.B) {
			r := newSession("bench")
			if grant > 0 {
				r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, strings.Repeat("g", grant), r.Created
			}
			if err := s.Begin(context.Background(), r); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				lk, err := s.Load(context.Background(), r.Policy, r.ID, r.Scope)
				if err != nil || len(lk.Session.Grant) != grant {
					b.Fatalf("Load: %v, %d bytes of grant", err, len(lk.Session.Grant))
				}
			}
		})
	}
}
