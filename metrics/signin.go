package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// Sign-in (login.oidc) metrics: callbacks by result, their latency,
// refreshes by result, discovery attempts, and which policies can sign in.

// SignInResults are the result label values of sign_ins_total: success or
// the reason a callback was refused.
func SignInResults() []string {
	return []string{"success", authz.ReasonSignInFailed.String(), authz.ReasonSignInDenied.String(),
		authz.ReasonReauthNotPerformed.String(), authz.ReasonProviderUnavailable.String(),
		authz.ReasonStoreUnavailable.String()}
}

// RefreshResults are the result label values of token_refreshes_total.
func RefreshResults() []string { return []string{"success", "revoked", "failure"} }

type signInMetrics struct {
	signIns     *prometheus.CounterVec
	callback    prometheus.Histogram
	tokenReqs   *prometheus.HistogramVec
	refreshes   *prometheus.CounterVec
	discoveries *prometheus.CounterVec
}

func newSignInMetrics() signInMetrics {
	return signInMetrics{
		signIns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sign_ins_total",
			Help: "Sign-in callbacks (login.oidc) by policy and result: success (a session opened), " +
				"or the reason the callback was refused."}, []string{"policy", "result"}),
		callback: prometheus.NewHistogram(providerLatency("sign_in_callback_duration_seconds",
			"Time to handle a sign-in callback: transaction check, code exchange, ID-token validation and opening the session.")),
		tokenReqs: prometheus.NewHistogramVec(providerLatency("oidc_token_request_duration_seconds",
			"Round trips to the identity provider's token endpoint by grant (authorization_code: a sign-in's code exchange; refresh_token) "+
				"and result (success, failure): the provider's share of a callback or refresh."),
			[]string{"grant", "result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "token_refreshes_total",
			Help: "Access-token refreshes by policy and result: success, revoked (invalid_grant: the session ends), failure (provider unreachable or broken)."},
			[]string{"policy", "result"}),
		discoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "oidc_discoveries_total",
			Help: "Identity provider discovery attempts by result (success, failure)."}, []string{"result"}),
	}
}

// providerLatency is the histogram of a duration that a round trip to the
// identity provider dominates: a code exchange is one, plus a key fetch on
// the first sign-in or after a rotation.
func providerLatency(name, help string) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help,
		Buckets:                         []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}
}

func (s signInMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(s.signIns, s.callback, s.tokenReqs, s.refreshes, s.discoveries)
	for _, r := range []string{"success", "failure"} {
		s.discoveries.WithLabelValues(r)
	}
}

// SignInPolicies pre-creates the sign-in series of the login.oidc
// policies, as Policies does for the rest.
func (m *Metrics) SignInPolicies(names []string) {
	for _, p := range names {
		for _, r := range SignInResults() {
			m.signIn.signIns.WithLabelValues(p, r)
		}
		for _, r := range RefreshResults() {
			m.signIn.refreshes.WithLabelValues(p, r)
		}
	}
}

// The engine counts sign-ins and refreshes through these.
var _ authz.SignInCounter = (*Metrics)(nil)

// SignInFinished counts one callback and observes its latency.
func (m *Metrics) SignInFinished(policy, result string, elapsed time.Duration) {
	m.signIn.signIns.WithLabelValues(policy, result).Inc()
	m.signIn.callback.Observe(elapsed.Seconds())
}

// Refreshed counts one refresh.
func (m *Metrics) Refreshed(policy, result string) {
	m.signIn.refreshes.WithLabelValues(policy, result).Inc()
}

// TokenRequested observes one token endpoint round trip (oidc.Observer).
func (m *Metrics) TokenRequested(grant string, elapsed time.Duration, ok bool) {
	m.signIn.tokenReqs.WithLabelValues(grant, result(ok)).Observe(elapsed.Seconds())
}

// Discovered counts one discovery attempt; the issuer is not a label.
func (m *Metrics) Discovered(_ string, ok bool) {
	m.signIn.discoveries.WithLabelValues(result(ok)).Inc()
}

// ReadySignIn is implemented by sign-ins that know whether they can start
// (package oidc: the provider's configuration was discovered).
type ReadySignIn interface {
	Ready() error
}

// ProviderUp is the sessiongate_oidc_provider_up collector: per login.oidc
// policy of the current set, 1 when its provider's configuration is loaded
// and sign-ins can start, 0 when they cannot. Read on scrape.
type ProviderUp struct {
	policies func() []*authz.Policy
	desc     *prometheus.Desc
}

// NewProviderUp reports the policies that policies returns at each scrape.
func NewProviderUp(policies func() []*authz.Policy) *ProviderUp {
	return &ProviderUp{policies: policies, desc: prometheus.NewDesc(ns+"_oidc_provider_up",
		"1 if the policy's identity provider configuration is discovered and sign-ins can start, 0 if not.",
		[]string{"policy"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *ProviderUp) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ProviderUp) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.policies() {
		r, ok := p.Login.SignIn.(ReadySignIn)
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, b2f(r.Ready() == nil), p.Name)
	}
}
