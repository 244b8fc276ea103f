package metrics

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// checkCounters resolves the checks_total counter of a decision with a
// lookup of its policy name and two array indexes, instead of
// CounterVec.WithLabelValues, which hashes and validates three label values
// and takes a lock on every call (BenchmarkDecided: about a third of the
// metrics cost of a decision). Policies are found in a map copied on write
// and read without locks; a policy's counters are resolved on first use, so
// no series is exported that no decision made (Policies pre-creates the
// usual ones). Series are never deleted from the vector, so a cached counter
// is always the exported one. The zero value is ready to use.
type checkCounters struct {
	policies atomic.Pointer[map[string]*policyChecks]
	mu       sync.Mutex // serializes additions
}

// policyChecks holds one policy's counters by decisionIndex and reason.
type policyChecks [3][]atomic.Pointer[prometheus.Counter]

// decisionIndex is the index of Decision.Label(): allow, deny, dry_run_deny.
func decisionIndex(d *authz.Decision) int {
	switch {
	case d.DryRun:
		return 2
	case d.Allow:
		return 0
	}
	return 1
}

func (c *checkCounters) get(vec *prometheus.CounterVec, d *authz.Decision) prometheus.Counter {
	pc := c.policy(d.Policy)
	slots := pc[decisionIndex(d)]
	if int(d.Reason) >= len(slots) { // not a reason of this build: never cached
		return vec.WithLabelValues(d.Policy, d.Label(), d.Reason.String())
	}
	slot := &slots[d.Reason]
	if p := slot.Load(); p != nil {
		return *p
	}
	// Racing first uses resolve the same series; either pointer will do.
	ctr := vec.WithLabelValues(d.Policy, d.Label(), d.Reason.String())
	slot.Store(&ctr)
	return ctr
}

func (c *checkCounters) policy(name string) *policyChecks {
	if m := c.policies.Load(); m != nil {
		if pc, ok := (*m)[name]; ok {
			return pc
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[string]*policyChecks{}
	if m := c.policies.Load(); m != nil {
		if pc, ok := (*m)[name]; ok {
			return pc
		}
		next = maps.Clone(*m)
	}
	pc := &policyChecks{}
	for i := range pc {
		pc[i] = make([]atomic.Pointer[prometheus.Counter], len(authz.Reasons())+1) // + ReasonNone
	}
	next[name] = pc
	c.policies.Store(&next)
	return pc
}
