package envoy

import (
	"context"
	"slices"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
)

type fixedChecker authz.Decision

func (f fixedChecker) Check(context.Context, *authz.Request) authz.Decision { return authz.Decision(f) }

// S10: CGI-style upstreams (PHP, WSGI, Rack, many Go/Node shims) read "-" and
// "_" alike, so a client's "x_sessiongate_user" reaches them as the gate's
// identity header. Envoy passes underscore names by default: every alias a
// request carries must go, also when the gate sets the header itself.
func TestUnderscoreSpellingsAreRemoved(t *testing.T) {
	aliases := []string{"x_sessiongate_user", "x-sessiongate_user", "X_Sessiongate-User",
		"x_sessiongate_session_expires_at", "x-sessiongate-idle_expires-at", "x_sessiongate_expires_in", "x_sessiongate_reason"}
	for _, d := range []authz.Decision{
		{Allow: true, Policy: "app", User: "alice", SessionExpiresAt: 1, IdleExpiresAt: 1},
		{Allow: true, Policy: "app"}, // bypass
		{Allow: true, DryRun: true, Reason: authz.ReasonNoToken, Policy: "app"},
	} {
		headers := map[string]string{":path": "/", "x_other_header": "kept", "x-sessiongate-user": "admin"}
		for _, a := range aliases {
			headers[a] = "admin"
		}
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Host: "app.example.com", Path: "/", Headers: headers}}}}
		resp, err := NewService(fixedChecker(d)).Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		remove := resp.GetOkResponse().GetHeadersToRemove()
		for _, h := range aliases {
			if !slices.Contains(remove, h) {
				t.Errorf("user %q: headers_to_remove lacks %s", d.User, h)
			}
		}
		if slices.Contains(remove, "x_other_header") {
			t.Error("an unrelated underscore header is removed")
		}
		if d.User != "" && slices.Contains(remove, HeaderUser) {
			t.Errorf("the identity header the gate sets is removed too")
		}
		// The shared lists are never appended into.
		if len(removeAll) != 5 || len(removeWithUser) != 2 {
			t.Fatalf("shared remove lists changed: %v %v", removeAll, removeWithUser)
		}
	}
}

func TestIsGateHeaderAlias(t *testing.T) {
	for name, want := range map[string]bool{
		"x_sessiongate_user": true, "X_SESSIONGATE_REASON": true, "x-sessiongate_expires-in": true,
		"x-sessiongate-user": false, "x_sessiongate_users": false, "x_sessiongate": false, "": false,
	} {
		if got := authz.IsGateHeaderAlias(name); got != want {
			t.Errorf("IsGateHeaderAlias(%q) = %v, want %v", name, got, want)
		}
	}
}
