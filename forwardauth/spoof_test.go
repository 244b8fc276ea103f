package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// S10: CGI-style upstreams read "-" and "_" alike, so the underscore
// spellings of the gate's headers that a request carries must be removed as
// well (Envoy flavor).
func TestEnvoyRemovesUnderscoreSpellings(t *testing.T) {
	for _, d := range []authz.Decision{
		{Allow: true, User: "alice", SessionExpiresAt: 1, IdleExpiresAt: 1},
		{Allow: true},
	} {
		r := httptest.NewRequest("GET", "http://gate/auth/envoy/x", nil)
		r.RemoteAddr = "127.0.0.1:1234"
		r.Header["X_sessiongate_user"] = []string{"admin"}
		r.Header["X-Sessiongate_reason"] = []string{"x"}
		r.Header["X_other"] = []string{"kept"}
		w := httptest.NewRecorder()
		writeResponse(w, Envoy, &d, r.Header)
		got := strings.Split(w.Header().Get(HeaderEnvoyRemove), ", ")
		for _, h := range []string{"x_sessiongate_user", "x-sessiongate_reason", "x-sessiongate-reason"} {
			found := false
			for _, g := range got {
				found = found || g == h
			}
			if !found {
				t.Errorf("user %q: %s %q lacks %s", d.User, HeaderEnvoyRemove, got, h)
			}
		}
		for _, g := range got {
			if g == "x_other" || (d.User != "" && g == authz.HeaderUser) {
				t.Errorf("user %q: %s removes %s", d.User, HeaderEnvoyRemove, g)
			}
		}
	}
}

func TestEnvoyRemoveLists(t *testing.T) {
	if envoyRemoveWithUser != "x-sessiongate-expires-in, x-sessiongate-reason" {
		t.Errorf("with user: %q", envoyRemoveWithUser)
	}
	if envoyRemoveAll != "x-sessiongate-user, x-sessiongate-session-expires-at, x-sessiongate-idle-expires-at, x-sessiongate-expires-in, x-sessiongate-reason" {
		t.Errorf("all: %q", envoyRemoveAll)
	}
	if gateAliases(http.Header{"X-Sessiongate-User": {"a"}}) != nil {
		t.Error("the canonical name is not an alias")
	}
}
