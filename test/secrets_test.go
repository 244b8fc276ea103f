package test

import (
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestNoSecretsInLogsOrMetrics (S7): after a scenario that exercises every
// path that logs — sessions started and ended, sign-out, identity mismatch,
// rejected tokens of every kind, tokens in cookies and query strings — at
// debug level, neither stdout, stderr nor /metrics holds a token (or its
// signature) or a session cookie value, and /metrics names policies, never
// hosts, paths or users.
func TestNoSecretsInLogsOrMetrics(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}, Absolute: 20 * time.Second, Idle: time.Second, LogoutPath: "/logout",
			From: []string{"header:authorization", "cookie:access_token"}}.yaml(),
	})
	alice, bob := s.client(t), s.client(t)
	aliceTok, bobTok := s.token(t, "alice"), s.token(t, "bob")

	wantAllowed(t, alice.Check("app.test", "/", aliceTok, true))
	// Token in a cookie instead of the header.
	wantAllowed(t, bob.Check("app.test", "/", "", true, "cookie: access_token="+bobTok))
	// Identity mismatch: bob's token with alice's cookie.
	aliceCookie, _ := alice.cookie("app.test", cookieName)
	wantAPIDenied(t, bob.Check("app.test", "/", bobTok, false, "cookie: "+cookieName+"="+aliceCookie), "identity_mismatch", true)
	// Rejected tokens: forged, tampered, expired, HMAC, none, oversized.
	bad := []string{}
	for _, f := range []func() (string, error){
		func() (string, error) { return s.idp.MintForged(baseClaims("carol")) },
		func() (string, error) { return idp.Tamper(aliceTok, baseClaims("admin")) },
		func() (string, error) { return s.idp.MintHS256WithPublicKey(baseClaims("carol")) },
		func() (string, error) { return s.idp.MintNone(baseClaims("carol")) },
		func() (string, error) {
			return s.idp.Mint(baseClaims("carol", claim("exp", time.Now().Unix()-3600), claim("iat", time.Now().Unix()-7200)))
		},
		func() (string, error) {
			return s.idp.Mint(baseClaims("carol", claim("pad", strings.Repeat("B", 20<<10))))
		},
	} {
		tok, err := f()
		if err != nil {
			t.Fatal(err)
		}
		s.remember(tok)
		bad = append(bad, tok)
	}
	c := s.client(t)
	for _, tok := range bad {
		if r := c.Check("app.test", "/", tok, false); r.Allowed {
			t.Fatalf("bad token allowed: %v", r)
		}
		if r := c.Check("app.test", "/", "", true, "cookie: access_token="+tok); r.Allowed {
			t.Fatalf("bad cookie token allowed: %v", r)
		}
		if r := c.Check("app.test", "/cb?access_token="+tok+"&id_token="+tok, "", true); strings.Contains(r.Location, tok[len(tok)/2:]) {
			t.Errorf("token from the query in Location %q", r.Location)
		}
	}
	// Idle end, then sign-out of a new sign-in.
	carol := s.client(t)
	carolTok := s.token(t, "carol")
	wantAllowed(t, carol.Check("app.test", "/", carolTok, true))
	time.Sleep(1500 * time.Millisecond)
	wantLoginRedirect(t, carol.Check("app.test", "/", carolTok, true), "idle_timeout", "https://app.test/", true)
	nextSecond()
	carolTok2 := s.token(t, "carol")
	wantAllowed(t, carol.Check("app.test", "/", carolTok2, true))
	wantDenied(t, carol.Check("app.test", "/logout", carolTok2, true), 302, "signed_out")

	metrics := s.metrics(t)
	for _, raw := range []string{"app.test", "/logout", "alice", "bob", "carol", "access_token"} {
		if strings.Contains(metrics, raw) {
			t.Errorf("/metrics contains %q: labels must be bounded (policy names and closed sets)", raw)
		}
	}
	s.stop() // drains stdout and stderr
	// The scan is only meaningful if the logs are the real, verbose ones.
	if !strings.Contains(s.stdout.String(), `"subject":"alice"`) || !strings.Contains(s.stdout.String(), "identity_mismatch") {
		t.Errorf("audit log lacks the scenario's events:\n%s", s.stdout.String())
	}
	if !strings.Contains(s.stderr.String(), `"level":"DEBUG"`) || !strings.Contains(s.stderr.String(), "token rejected") {
		t.Errorf("stderr lacks the debug log of rejected tokens:\n%s", s.stderr.String())
	}
	s.mu.Lock()
	n := len(s.secrets)
	s.mu.Unlock()
	if n < 12 {
		t.Errorf("only %d secrets tracked; the scan would prove little", n)
	}
	for _, l := range s.leaks(metrics) {
		t.Error(l)
	}
	// The scanner itself finds what it looks for.
	if got := findSecrets(map[string]bool{aliceTok: true}, map[string]string{"x": "err=" + aliceTok[strings.LastIndexByte(aliceTok, '.')+1:]}); len(got) != 1 {
		t.Errorf("findSecrets misses a leaked signature: %v", got)
	}
}
