package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// KeyCounter is implemented by token verifiers that can tell how many usable
// signature keys they hold now (token's verifiers do).
type KeyCounter interface {
	KeyCount() int
}

// TokenKeys is the sessiongate_token_keys collector: the usable signature
// keys of each policy's token verification, read on scrape. 0 means that
// every token of that policy is refused (a jwks_uri never fetched since the
// start), which a rate of failed JWKS refreshes alone would not tell apart
// from an IdP blip with good keys still in force.
type TokenKeys struct {
	policies func() []*authz.Policy
	desc     *prometheus.Desc
}

// NewTokenKeys reports the policies that policies returns at each scrape.
// Register it on the same registry as New's.
func NewTokenKeys(policies func() []*authz.Policy) *TokenKeys {
	return &TokenKeys{policies: policies, desc: prometheus.NewDesc(ns+"_token_keys",
		"Usable signature keys loaded for the policy's tokens; 0: every token of the policy is refused (invalid_token) until its JWKS loads.",
		[]string{"policy"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *TokenKeys) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *TokenKeys) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.policies() {
		if k, ok := p.Verifier.(KeyCounter); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(k.KeyCount()), p.Name)
		}
	}
}

// PoliciesWithoutKeys returns the names of the policies whose verifier
// holds no usable key, and whether every policy that verifies tokens is
// among them; readiness reports both.
func PoliciesWithoutKeys(ps []*authz.Policy) (names []string, all bool) {
	counted := 0
	for _, p := range ps {
		if k, ok := p.Verifier.(KeyCounter); ok {
			counted++
			if k.KeyCount() == 0 {
				names = append(names, p.Name)
			}
		}
	}
	return names, counted > 0 && len(names) == counted
}
