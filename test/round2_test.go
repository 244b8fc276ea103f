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

// TestTokenlessEndCoversASignInAhead (S3): a browser signs out by cookie
// alone (no Authorization header) from a session whose token a fast IdP
// stamped 20 s ahead (auth_time within the 30 s clock skew). That token,
// replayed without the cookie, is refused: the end covers the session's
// sign-in. Before, the end was recorded at the gate's now, the token
// counted as a sign-in after it and opened a new session at once. A new
// sign-in (stamped later) is allowed at once.
func TestTokenlessEndCoversASignInAhead(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()})
	ahead := time.Now().Add(20 * time.Second).Unix()
	tok := s.token(t, "alice", authTime(ahead), claim("iat", ahead), claim("nbf", ahead))
	browser := s.client(t)
	r := browser.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)
	r = browser.Check("app.test", "/logout", "", true, "cookie: "+cookieName+"="+cookie)
	if r.Allowed || r.Reason != "signed_out" {
		t.Fatalf("sign-out by cookie: %v", r)
	}
	wantAPIDenied(t, s.apiClient(t).Check("app.test", "/", tok, false), "reauth_required", true)
	nextSecond()
	later := time.Now().Add(20 * time.Second).Unix()
	wantAllowed(t, s.apiClient(t).Check("app.test", "/", s.token(t, "alice", authTime(later), claim("iat", later), claim("nbf", later)), false))
}
