package metrics

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/authz"
)

// keysVerifier is a verifier fake that holds n keys.
type keysVerifier struct{ n int }

func (keysVerifier) Verify(context.Context, string, time.Time) (*authz.Claims, error) {
	return nil, &authz.TokenError{Reason: authz.ReasonInvalidToken}
}
func (v keysVerifier) KeyCount() int { return v.n }

// TestTokenKeys: one gauge per policy whose verifier counts its keys, read
// at each scrape; readiness learns which policies have none, and whether
// that is every policy with tokens.
func TestTokenKeys(t *testing.T) {
	crm := &authz.Policy{Name: "crm", Verifier: keysVerifier{0}}
	api := &authz.Policy{Name: "api", Verifier: keysVerifier{2}}
	plain := &authz.Policy{Name: "plain"} // no counting verifier: no series
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewTokenKeys(policies(crm, api, plain)))
	wantSamples(t, reg, map[string]float64{
		`sessiongate_token_keys{policy="crm"}`: 0,
		`sessiongate_token_keys{policy="api"}`: 2,
	})
	for _, tc := range []struct {
		ps    []*authz.Policy
		names []string
		all   bool
	}{
		{[]*authz.Policy{crm, api, plain}, []string{"crm"}, false},
		{[]*authz.Policy{crm, plain}, []string{"crm"}, true},
		{[]*authz.Policy{api}, nil, false},
		{[]*authz.Policy{plain}, nil, false},
	} {
		names, all := PoliciesWithoutKeys(tc.ps)
		if !slices.Equal(names, tc.names) || all != tc.all {
			t.Errorf("PoliciesWithoutKeys: %v %v, want %v %v", names, all, tc.names, tc.all)
		}
	}
}
