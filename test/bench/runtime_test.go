package bench

import (
	"math"
	"runtime"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"
)

// reportCPU reports the CPU time of the process per operation, from the
// call to the call of the function it returns: unlike ns/op, it does not
// count time spent waiting for a core that other work on the machine holds.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() { b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op") }
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fullGC times one forced, complete collection: its mark phase is what
// grows with the number of pointers the heap holds.
func fullGC() time.Duration {
	start := time.Now()
	runtime.GC()
	return time.Since(start)
}

// pauseWatch reads the stop-the-world pauses of the collector since it was
// made, from runtime/metrics (/sched/pauses/total/gc:seconds, which replaced
// /gc/pauses:seconds).
type pauseWatch struct{ start *metrics.Float64Histogram }

const pausesMetric = "/sched/pauses/total/gc:seconds"

func newPauseWatch() *pauseWatch { return &pauseWatch{start: readPauses()} }

func readPauses() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: pausesMetric}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// since returns the median and the largest pause since the watch was made
// (upper bucket bounds: the histogram is exact to a few percent).
func (w *pauseWatch) since() (p50, max time.Duration) {
	now := readPauses()
	var total uint64
	counts := make([]uint64, len(now.Counts))
	for i := range now.Counts {
		counts[i] = now.Counts[i] - w.start.Counts[i]
		total += counts[i]
	}
	if total == 0 {
		return 0, 0
	}
	var seen uint64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		bound := now.Buckets[i+1]
		if math.IsInf(bound, 1) {
			bound = now.Buckets[i]
		}
		upper := time.Duration(bound * float64(time.Second))
		if seen < (total+1)/2 && seen+c >= (total+1)/2 {
			p50 = upper
		}
		seen += c
		max = upper
	}
	return p50, max
}
