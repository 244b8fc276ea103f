package forwardauth

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// S10: CGI-style upstreams read "-" and "_" alike, so the underscore
// spellings of the gate's headers must be removed as well (Envoy flavor).
func TestEnvoyRemovesUnderscoreSpellings(t *testing.T) {
	for _, d := range []authz.Decision{
		{Allow: true, User: "alice", SessionExpiresAt: 1, IdleExpiresAt: 1, ExpiresIn: -1},
		{Allow: true, ExpiresIn: -1},
	} {
		w := httptest.NewRecorder()
		WriteResponse(w, Envoy, &d)
		got := strings.Split(w.Header().Get(HeaderEnvoyRemove), ", ")
		for _, h := range []string{"x_sessiongate_user", "x-sessiongate_user", "x_sessiongate_session_expires_at", "x_sessiongate_reason"} {
			found := false
			for _, g := range got {
				found = found || g == h
			}
			if !found {
				t.Errorf("user %q: %s lacks %s", d.User, HeaderEnvoyRemove, h)
			}
		}
	}
}

func TestEnvoyRemoveListsKeepTheCanonicalNamesFirst(t *testing.T) {
	if !strings.HasPrefix(envoyRemoveWithUser, "x-sessiongate-expires-in, x-sessiongate-reason, ") ||
		strings.Contains(envoyRemoveWithUser, "x-sessiongate-user,") {
		t.Errorf("with user: %q", envoyRemoveWithUser)
	}
	if !strings.HasPrefix(envoyRemoveAll, "x-sessiongate-user, x-sessiongate-session-expires-at, x-sessiongate-idle-expires-at, x-sessiongate-expires-in, x-sessiongate-reason, ") {
		t.Errorf("all: %q", envoyRemoveAll)
	}
}
