// Package metrics owns sessiongate's Prometheus metrics: their names, labels
// and buckets (DESIGN §2). It implements the event interfaces of the engine,
// the token verifier, the session store and the policy watcher, and registers
// on an injected registry, never the default one. Labels are bounded: policy
// names, decisions, reason codes, causes and fixed operation names only.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

const ns = "sessiongate"

// Metrics holds every collector.
type Metrics struct {
	checks         *prometheus.CounterVec
	checkCache     checkCounters // checks' counters by decision, for Decided
	duration       prometheus.Histogram
	started        *prometheus.CounterVec
	ended          *prometheus.CounterVec
	reauth         *prometheus.CounterVec
	cacheHits      prometheus.Counter
	cacheMisses    prometheus.Counter
	jwksRefreshes  *prometheus.CounterVec
	storeOps       *prometheus.CounterVec
	storeErrors    *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	lastReloadOK   prometheus.Gauge
	lastReloadTime prometheus.Gauge
	storeUp        prometheus.Gauge
	auditErrors    prometheus.Counter
	signIn         signInMetrics
	ends           endsMetrics
}

// New creates and registers the collectors on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "checks_total",
			Help: "Authorization checks by policy, decision (allow, deny, dry_run_deny) and reason."},
			[]string{"policy", "decision", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "check_duration_seconds",
			Help: "Time to decide one check inside sessiongate (excluding gRPC transport).",
			// A decision on a cached token takes microseconds, a signature
			// check tens of them, a shared store's round trip milliseconds;
			// the classic buckets resolve 5µs to 1s, the native ones (for
			// scrapes in protobuf) every 10%.
			Buckets:                         []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1},
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_started_total",
			Help: "Sessions started."}, []string{"policy"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_ended_total",
			Help: "Sessions ended by cause (idle, absolute, signed_out, identity_mismatch, idp_logout, idp_revoked, admin)."}, []string{"policy", "cause"}),
		reauth: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_reauthenticated_total",
			Help: "Sessions whose user signed in again (newer auth_time)."}, []string{"policy"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "token_cache_hits_total",
			Help: "Tokens found in the verified-token cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "token_cache_misses_total",
			Help: "Tokens verified because they were not in the cache."}),
		jwksRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jwks_refreshes_total",
			Help: "JWKS loads by result (success, failure)."}, []string{"result"}),
		storeOps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "store_operations_total",
			Help: "Session store operations by operation."}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "store_errors_total",
			Help: "Failed session store operations by operation."}, []string{"op"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "policy_reloads_total",
			Help: "Policy loads by result (success, failure)."}, []string{"result"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "policy_last_reload_successful",
			Help: "1 if the last policy load validated, 0 if the last good policy is still in force after a failure."}),
		lastReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "policy_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful policy load."}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "store_up",
			Help: "1 if the session store answered its last readiness check."}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "audit_write_errors_total",
			Help: "Audit events that could not be written (the session change itself took effect)."}),
		signIn: newSignInMetrics(),
		ends:   newEndsMetrics(),
	}
	reg.MustRegister(m.checks, m.duration, m.started, m.ended, m.reauth,
		m.cacheHits, m.cacheMisses, m.jwksRefreshes, m.storeOps, m.storeErrors, m.reloads,
		m.lastReloadOK, m.lastReloadTime, m.storeUp, m.auditErrors)
	m.signIn.register(reg)
	m.ends.register(reg)
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
		m.jwksRefreshes.WithLabelValues(r)
	}
	return m
}

// Policies pre-creates the per-policy series so that dashboards and alerts
// see zeros rather than absent series: a rate over a series that appears
// with its first denial would miss that denial, and a spike of a reason
// never seen before would have no baseline to compare with. Series of
// policies no longer loaded stay (they stop growing); the set of names is
// bounded by the policy files an operator ever deployed.
func (m *Metrics) Policies(names []string) {
	for _, p := range names {
		m.started.WithLabelValues(p)
		m.reauth.WithLabelValues(p)
		for _, c := range authz.Causes() {
			m.ended.WithLabelValues(p, c.String())
		}
		m.checks.WithLabelValues(p, "allow", "")
		for _, r := range authz.Reasons() {
			if r != authz.ReasonUnknownHost { // only ever without a policy
				m.checks.WithLabelValues(p, "deny", r.String())
			}
		}
	}
	m.checks.WithLabelValues("", "deny", authz.ReasonUnknownHost.String())
}

// Decided implements authz.Events.
func (m *Metrics) Decided(d *authz.Decision, elapsed time.Duration) {
	m.checkCache.get(m.checks, d).Inc()
	m.duration.Observe(elapsed.Seconds())
}

// SessionStarted implements authz.Events.
func (m *Metrics) SessionStarted(e authz.SessionEvent) {
	m.started.WithLabelValues(e.Policy).Inc()
}

// SessionEnded implements authz.Events.
func (m *Metrics) SessionEnded(e authz.SessionEvent) {
	m.ended.WithLabelValues(e.Policy, e.Cause.String()).Inc()
}

// SessionReauthenticated implements authz.Events.
func (m *Metrics) SessionReauthenticated(e authz.SessionEvent) {
	m.reauth.WithLabelValues(e.Policy).Inc()
}

// CacheHit and CacheMiss count verified-token cache lookups.
func (m *Metrics) CacheHit()  { m.cacheHits.Inc() }
func (m *Metrics) CacheMiss() { m.cacheMisses.Inc() }

// KeysRefreshed counts JWKS loads. The source is not a label: URLs and paths
// are unbounded; the log names them.
func (m *Metrics) KeysRefreshed(_ string, ok bool) { m.jwksRefreshes.WithLabelValues(result(ok)).Inc() }

// StoreUp records the store's readiness.
func (m *Metrics) StoreUp(up bool) { m.storeUp.Set(b2f(up)) }

// AuditWriteFailed counts an audit event that could not be written.
func (m *Metrics) AuditWriteFailed() { m.auditErrors.Inc() }

// PolicyReloaded records one policy load.
func (m *Metrics) PolicyReloaded(ok bool, at time.Time) {
	m.reloads.WithLabelValues(result(ok)).Inc()
	m.lastReloadOK.Set(b2f(ok))
	if ok {
		m.lastReloadTime.Set(float64(at.UnixMilli()) / 1000)
	}
}

func result(ok bool) string {
	if ok {
		return "success"
	}
	return "failure"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
