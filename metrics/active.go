package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// LiveSessions is implemented by session stores that can enumerate the
// sessions they hold (store/memory does). Ended sessions, and sessions whose
// record may be forgotten, are not visited.
type LiveSessions interface {
	EachLiveSession(fn func(*authz.Session)) error
}

// maxScanShare bounds the time spent counting sessions: a count is reused
// until ten times the scan's own duration has passed, so that a store of a
// million sessions (a scan of about 0.6s) is scanned at most every few
// seconds however often it is scraped, and a small one on every scrape.
const maxScanShare = 10

// SessionsActive is the sessiongate_sessions_active collector. A gauge kept
// from start and end events would drift: a session that times out without a
// request to discover it never emits an end. So the gauge is counted from
// the store on scrape, with the definition of the engine: a session is
// active while it could continue, not ended, within its policy's
// idle_timeout of its last activity and absolute_timeout of its sign-in.
type SessionsActive struct {
	src      LiveSessions
	policies func() []*authz.Policy
	clock    authz.Clock
	desc     *prometheus.Desc

	mu     sync.Mutex // serializes scans; concurrent scrapes share one
	counts map[string]int
	at     time.Time     // when counts was taken
	cost   time.Duration // how long taking it took
}

// NewSessionsActive counts the sessions of src for the policies that
// policies returns at each scrape (the current set: sessions of a removed
// policy are not reported). Register it on the same registry as New's.
func NewSessionsActive(src LiveSessions, policies func() []*authz.Policy, clock authz.Clock) *SessionsActive {
	return &SessionsActive{
		src: src, policies: policies, clock: clock,
		desc: prometheus.NewDesc(ns+"_sessions_active",
			"Sessions that could continue now: not ended, last activity within the policy's idle_timeout "+
				"and sign-in within its absolute_timeout. Counted on scrape from this replica's session store.",
			[]string{"policy"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *SessionsActive) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. When the store cannot be scanned
// the gauge is left out of the scrape rather than failing it:
// sessiongate_store_up says why.
func (c *SessionsActive) Collect(ch chan<- prometheus.Metric) {
	ps := c.policies()
	counts := c.count(ps)
	if counts == nil {
		return
	}
	for _, p := range ps {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[p.Name]), p.Name)
	}
}

// count returns the active sessions by policy name, scanning the store
// unless the last count is recent enough; nil if the scan failed.
func (c *SessionsActive) count(ps []*authz.Policy) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := c.clock.Now()
	if c.counts != nil && start.Sub(c.at) < maxScanShare*c.cost {
		return c.counts
	}
	type limits struct{ idle, absolute int64 }
	byName := make(map[string]limits, len(ps))
	for _, p := range ps {
		byName[p.Name] = limits{p.IdleTimeout.Milliseconds(), p.AbsoluteTimeout.Milliseconds()}
	}
	now := start.UnixMilli()
	counts := make(map[string]int, len(ps))
	err := c.src.EachLiveSession(func(s *authz.Session) {
		// The engine's own tests (S1, S2): a session past either limit
		// ends on its next request, so it is not active now.
		if l, ok := byName[s.Policy]; ok && now-s.LastActivity <= l.idle && now-s.SignIn <= l.absolute {
			counts[s.Policy]++
		}
	})
	if err != nil {
		c.counts = nil
		return nil
	}
	c.counts, c.at, c.cost = counts, start, c.clock.Now().Sub(start)
	return counts
}
