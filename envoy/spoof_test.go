package envoy

import (
	"slices"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// S10: CGI-style upstreams (PHP, WSGI, Rack, many Go/Node shims) read "-" and
// "_" alike, so a client's "x_sessiongate_user" reaches them as the gate's
// identity header. Envoy passes underscore names by default; every spelling
// the gate's headers can take must go, also when the gate sets the header.
func TestUnderscoreSpellingsAreRemoved(t *testing.T) {
	for _, d := range []authz.Decision{
		{Allow: true, Policy: "app", User: "alice", SessionExpiresAt: 1, IdleExpiresAt: 1, ExpiresIn: -1},
		{Allow: true, Policy: "app", ExpiresIn: -1}, // bypass
		{Allow: true, DryRun: true, Reason: authz.ReasonNoToken, Policy: "app", ExpiresIn: -1},
	} {
		remove := ToResponse(&d).GetOkResponse().GetHeadersToRemove()
		for _, h := range []string{"x_sessiongate_user", "x-sessiongate_user", "x_sessiongate-user",
			"x_sessiongate_session_expires_at", "x-sessiongate-idle_expires-at", "x_sessiongate_expires_in", "x_sessiongate_reason"} {
			if !slices.Contains(remove, h) {
				t.Errorf("user %q: headers_to_remove lacks %s", d.User, h)
			}
		}
		if d.User != "" && slices.Contains(remove, HeaderUser) {
			t.Errorf("the identity header the gate sets is removed too")
		}
	}
}
