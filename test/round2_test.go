package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/audit"
)

// TestIdentityThatCannotBeAHeader: a validly signed token whose sub holds
// CR, LF, NUL or another control byte, or outer spaces, is refused
// (invalid_token) over gRPC and over HTTP. Before, over gRPC the raw value
// reached x-sessiongate-user, and over HTTP Go dropped the header holding
// NUL, so that /auth/envoy allowed without listing x-sessiongate-user for
// removal and a client-sent copy reached the upstream (S10).
func TestIdentityThatCannotBeAHeader(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{faHost}}.yaml()})
	c := s.apiClient(t)
	direct := &http.Client{Timeout: 10 * time.Second}
	for _, sub := range []string{"alice\r\nx-injected: 1", "al\x00ice", "alice\x1b", " alice"} {
		tok := s.token(t, sub)
		wantAPIDenied(t, c.Check(faHost, "/", tok, false), "invalid_token", false)
		r := faDo(t, direct, "http://"+s.httpAddr+"/auth/envoy/", "", []string{"Host: " + faHost,
			"Authorization: Bearer " + tok, "X-Sessiongate-User: admin"})
		if r.status != 401 || r.header.Get("X-Sessiongate-Reason") != "invalid_token" {
			t.Errorf("sub %q over /auth/envoy: %d %q, want 401 invalid_token", sub, r.status, r.header.Get("X-Sessiongate-Reason"))
		}
		if strings.Contains(r.header.Get("X-Sessiongate-User"), "alice") {
			t.Errorf("sub %q reached a header", sub)
		}
	}
	wantAllowed(t, c.Check(faHost, "/", s.token(t, "alice smith"), false))
}

// TestForwardedURIJoinedOnOneLine: a forwarded URI that a proxy appended to
// the client's copy on one line ("/public/x, /admin") is ambiguous, like two
// lines: the request describes itself and the bypass does not apply; nor
// does a comma or a space in the path bypass over gRPC. Before, the joined
// value was taken as a path under /public/ and allowed without a token.
func TestForwardedURIJoinedOnOneLine(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{faHost}, Bypass: []string{"/public/"}}.yaml()})
	direct := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct{ endpoint, header string }{
		{"/auth/nginx", "X-Original-URI"}, {"/auth/forward", "X-Forwarded-Uri"},
	} {
		for _, uri := range []string{"/public/x, /admin", "/public/x,/admin"} {
			r := faDo(t, direct, "http://"+s.httpAddr+tc.endpoint, "", []string{"X-Forwarded-Host: " + faHost, tc.header + ": " + uri})
			if r.status == 200 {
				t.Errorf("%s %s: %q allowed without a token", tc.endpoint, tc.header, uri)
			}
		}
		r := faDo(t, direct, "http://"+s.httpAddr+tc.endpoint, "", []string{"X-Forwarded-Host: " + faHost, tc.header + ": /public/x"})
		wantFAStatus(t, r, 200)
	}
	c := s.apiClient(t)
	for _, path := range []string{"/public/x, /admin", "/public/x /admin"} {
		wantAPIDenied(t, c.Check(faHost, path, "", false), "no_token", false)
	}
}

// TestHashSubjectInLogLines: with --audit-hash-subject, the operator log's
// WARN lines (identity mismatch, and an ended session presented with
// another identity's token) carry the subjects' audit hashes, as the audit
// events do, never the subjects. Before, only the audit events were hashed.
func TestHashSubjectInLogLines(t *testing.T) {
	t.Parallel()
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()},
		serverOpts{extraArgs: []string{"--audit-hash-subject"}})
	const aliceSub, bobSub = "alice-7c1f0e", "bob-93d2aa"
	aliceTok, bobTok := s.token(t, aliceSub), s.token(t, bobSub)
	alice := s.client(t)
	r := alice.Check("app.test", "/", aliceTok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)
	wantAPIDenied(t, alice.Check("app.test", "/", bobTok, false), "identity_mismatch", true)
	wantAPIDenied(t, alice.Check("app.test", "/", bobTok, false, "cookie: "+cookieName+"="+cookie), "reauth_required", true)
	if !s.waitLog("ended session presented with another identity") {
		t.Fatalf("no WARN lines:\n%s", s.stderr.String())
	}
	logs := s.stderr.String()
	for _, sub := range []string{aliceSub, bobSub} {
		if strings.Contains(logs, sub) {
			t.Errorf("subject %q in the log in clear:\n%s", sub, logs)
		}
		if !strings.Contains(logs, audit.Hash(sub)) {
			t.Errorf("no hash of %q in the log:\n%s", sub, logs)
		}
	}
}
