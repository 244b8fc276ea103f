package policy

import (
	"slices"
	"testing"

	"github.com/sessiongate/sessiongate/token"
)

// TestTokenDefaultsAgree: the schema's token defaults and limits are the
// verifier's, so that a token.Config built by hand means what a policy file
// without the field means.
func TestTokenDefaultsAgree(t *testing.T) {
	if !slices.Equal(defaultAlgorithms(), token.DefaultAlgorithms()) {
		t.Errorf("algorithms: policy %v, token %v", defaultAlgorithms(), token.DefaultAlgorithms())
	}
	for _, c := range []struct {
		name          string
		policy, token int64
	}{
		{"max clock skew", int64(maxClockSkew), int64(token.MaxClockSkew)},
		{"max token bytes", defaultMaxTokenBytes, token.DefaultMaxBytes},
		{"jwks refresh", int64(defaultJWKSRefresh), int64(token.DefaultRefreshInterval)},
		{"jwks min refresh", int64(defaultJWKSMinRefresh), int64(token.DefaultMinRefreshInterval)},
	} {
		if c.policy != c.token {
			t.Errorf("%s: policy %d, token %d", c.name, c.policy, c.token)
		}
	}
}
