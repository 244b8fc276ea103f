package metrics

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sessiongate/sessiongate/authz"
)

// TestCheckCountersResolveTheirSeries: each decision increments exactly the
// series of its policy, label and reason, also when first seen by many
// goroutines at once.
func TestCheckCountersResolveTheirSeries(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "checks_total"}, []string{"policy", "decision", "reason"})
	var c checkCounters
	decisions := []authz.Decision{
		{Allow: true, Policy: "app"},
		{Policy: "app", Reason: authz.ReasonNoToken},
		{Allow: true, DryRun: true, Policy: "app", Reason: authz.ReasonNoToken},
		{Policy: "crm", Reason: authz.ReasonNoToken},
		{Reason: authz.ReasonUnknownHost},
	}
	const rounds = 50
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range rounds {
				for i := range decisions {
					c.get(vec, &decisions[i]).Inc()
				}
			}
		})
	}
	wg.Wait()
	for _, d := range decisions {
		if got := counterValue(t, vec.WithLabelValues(d.Policy, d.Label(), d.Reason.String())); got != 4*rounds {
			t.Errorf("%s/%s/%s = %v, want %d", d.Policy, d.Label(), d.Reason, got, 4*rounds)
		}
	}
	ch := make(chan prometheus.Metric, 2*len(decisions))
	vec.Collect(ch)
	if n := len(ch); n != len(decisions) {
		t.Errorf("%d series, want %d", n, len(decisions))
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
