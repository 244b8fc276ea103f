package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// BenchmarkDecided is the metrics cost of every decision: the checks_total
// counter and the check_duration_seconds histogram.
func BenchmarkDecided(b *testing.B) {
	m := New(prometheus.NewRegistry())
	m.Policies([]string{"app", "crm"})
	d := &authz.Decision{Allow: true, Policy: "app", User: "alice"}
	b.ReportAllocs()
	for b.Loop() {
		m.Decided(d, 3*time.Microsecond)
	}
}
