package redis

import (
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// loadKeys builds, in one allocation, the very keys sessionKey and
// scopeKey build, and skips what a Load skips.
func TestLoadKeys(t *testing.T) {
	scope := authz.ScopeDigest("https://idp.example", "alice", "sid-1")
	long := strings.Repeat("p", 300) // past loadKeys' stack buffer
	for _, prefix := range []string{"sessiongate", "", "tenant:a"} {
		s := &Store{o: Options{Prefix: prefix}}
		for _, c := range []struct {
			policy, id string
			scope      authz.Digest
		}{
			{"crm", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", scope},
			{"crm", "", scope},
			{"crm", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", authz.Digest{}},
			{"crm", "", authz.Digest{}},
			{long, "id\x00x", scope},
		} {
			var wantS, wantC string
			if c.id != "" {
				wantS = s.sessionKey(c.policy, c.id)
			}
			if c.scope != (authz.Digest{}) {
				wantC = s.scopeKey(c.policy, c.scope)
			}
			if sk, ck := s.loadKeys(c.policy, c.id, c.scope); sk != wantS || ck != wantC {
				t.Errorf("prefix %q, %q %q: loadKeys = %q, %q; want %q, %q", prefix, c.policy, c.id, sk, ck, wantS, wantC)
			}
		}
	}
	s := &Store{o: Options{Prefix: "sessiongate"}}
	if n := testing.AllocsPerRun(100, func() { s.loadKeys("crm", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", scope) }); n != 1 {
		t.Errorf("loadKeys: %v allocations, want 1", n)
	}
}
