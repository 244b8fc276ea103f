package test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestBadTokens (S5): every malformed, forged or out-of-date token is denied
// with invalid_token (token_expired for an expired one), never allowed and
// never a gRPC error, and a browser is sent to log in without re-auth
// parameters (no session ended).
func TestBadTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"api": pol{Hosts: []string{"api.test"}}.yaml()})
	now := time.Now().Unix()
	mint := func(f func() (string, error)) string {
		t.Helper()
		tok, err := f()
		if err != nil {
			t.Fatal(err)
		}
		s.remember(tok)
		return tok
	}
	good := s.token(t, "mallory")
	other, err := idp.New(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	big := baseClaims("mallory", claim("pad", strings.Repeat("A", 100<<10)))

	cases := []struct {
		name, tok, reason string
	}{
		{"alg none", mint(func() (string, error) { return s.idp.MintNone(baseClaims("mallory")) }), "invalid_token"},
		{"alg none without signature dot", strings.TrimSuffix(mint(func() (string, error) { return s.idp.MintNone(baseClaims("mallory")) }), "."), "invalid_token"},
		{"HS256 keyed with the public key", mint(func() (string, error) { return s.idp.MintHS256WithPublicKey(baseClaims("mallory")) }), "invalid_token"},
		{"forged with a foreign key, same kid", mint(func() (string, error) { return s.idp.MintForged(baseClaims("mallory")) }), "invalid_token"},
		{"tampered payload", mint(func() (string, error) { return idp.Tamper(good, baseClaims("admin")) }), "invalid_token"},
		{"signature of another token", func() string {
			other := s.token(t, "admin")
			return good[:strings.LastIndexByte(good, '.')] + other[strings.LastIndexByte(other, '.'):]
		}(), "invalid_token"},
		{"alg header RS512 over an RS256 signature", mint(func() (string, error) {
			return s.idp.MintWith(map[string]any{"alg": "RS512"}, baseClaims("mallory"))
		}), "invalid_token"},
		{"expired", s.token(t, "mallory", claim("iat", now-900), claim("nbf", now-900), claim("auth_time", now-900), claim("exp", now-120)), "token_expired"},
		{"not yet valid", s.token(t, "mallory", claim("nbf", now+600)), "invalid_token"},
		{"issued in the future", s.token(t, "mallory", claim("iat", now+600), claim("nbf", nil)), "invalid_token"},
		{"wrong aud", s.token(t, "mallory", claim("aud", "other-app")), "invalid_token"},
		{"wrong aud list", s.token(t, "mallory", claim("aud", []string{"x", "y"})), "invalid_token"},
		{"no aud", s.token(t, "mallory", claim("aud", nil)), "invalid_token"},
		{"wrong iss", s.token(t, "mallory", claim("iss", "https://evil.example/realms/app")), "invalid_token"},
		{"iss with trailing slash", s.token(t, "mallory", claim("iss", testIssuer+"/")), "invalid_token"},
		{"no exp", s.token(t, "mallory", claim("exp", nil)), "invalid_token"},
		{"no sub", s.token(t, "", claim("sub", nil)), "invalid_token"},
		{"exp as string", s.token(t, "mallory", claim("exp", "9999999999")), "invalid_token"},
		{"unknown kid", mint(func() (string, error) {
			return s.idp.MintWith(map[string]any{"kid": "no-such-key"}, baseClaims("mallory"))
		}), "invalid_token"},
		{"another issuer's key", mint(func() (string, error) { return other.Mint(baseClaims("mallory")) }), "invalid_token"},
		{"payload not JSON", mint(func() (string, error) { return s.idp.MintRaw([]byte("not json")) }), "invalid_token"},
		{"payload a JSON array", mint(func() (string, error) { return s.idp.MintRaw([]byte(`["sub","mallory"]`)) }), "invalid_token"},
		{"garbage", "garbage", "invalid_token"},
		{"three garbage parts", "aaaa.bbbb.cccc", "invalid_token"},
		{"dots only", "..", "invalid_token"},
		{"JWE-shaped", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "invalid_token"},
		{"100 KB signed token", mint(func() (string, error) { return s.idp.Mint(big) }), "invalid_token"},
		{"4 MiB token", strings.Repeat("x", 4<<20), "invalid_token"},
	}
	c := s.apiClient(t)
	b := s.apiClient(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIDenied(t, c.Check("api.test", "/items", tc.tok, false), tc.reason, false)
			r := b.Check("api.test", "/items?id=1", tc.tok, true)
			wantLoginRedirect(t, r, tc.reason, "https://api.test/items?id=1", false)
			wantNoSetCookie(t, r)
			if strings.Contains(r.Location, tc.tok) {
				t.Errorf("token appears in the Location")
			}
		})
	}
	// After all that the good token still works: nothing was poisoned (a
	// forged token must not evict or replace the real key or cache entry).
	wantAllowed(t, c.Check("api.test", "/items", good, false))
	wantMetric(t, s.metrics(t), "sessiongate_checks_total", map[string]string{"policy": "api", "decision": "allow", "reason": ""}, 1)
	wantMetric(t, s.metrics(t), "sessiongate_sessions_started_total", map[string]string{"policy": "api"}, 1)
}

// TestTokenFromHeaderForms: the Bearer scheme is case-insensitive, other
// schemes are not tokens.
func TestTokenFromHeaderForms(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"api": pol{Hosts: []string{"api.test"}}.yaml()})
	tok := s.token(t, "alice")
	c := s.apiClient(t)
	wantAllowed(t, c.Check("api.test", "/", "", false, "authorization: bearer "+tok))
	wantAllowed(t, c.Check("api.test", "/", "", false, "authorization: BEARER "+tok))
	wantAPIDenied(t, c.Check("api.test", "/", "", false, "authorization: Token "+tok), "no_token", false)
	wantAPIDenied(t, c.Check("api.test", "/", "", false, "x-access-token: "+tok), "no_token", false)
}

// TestTokenExpiryMidSession: an expired token is token_expired (not a
// session end); the refreshed token continues the same session.
func TestTokenExpiryMidSession(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, TokenExtra: "  clock_skew: 0s\n"}.yaml()})
	at := time.Now().Unix()
	exp := at + 2
	c := s.client(t)
	short := s.token(t, "alice", authTime(at), claim("exp", exp))
	r := c.Check("app.test", "/", short, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)

	sleepUntil(time.Unix(exp, 0).Add(300 * time.Millisecond))
	wantAPIDenied(t, c.Check("app.test", "/api", short, false), "token_expired", false)
	r = c.Check("app.test", "/page", short, true)
	wantLoginRedirect(t, r, "token_expired", "https://app.test/page", false)
	wantNoSetCookie(t, r) // the session did not end

	now := time.Now().Unix()
	r = c.Check("app.test", "/page", s.token(t, "alice", authTime(at), claim("iat", now), claim("exp", now+600)), true)
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
	if got, _ := c.cookie("app.test", cookieName); got != cookie {
		t.Errorf("cookie changed across a token refresh")
	}
	if got, want := unixHeader(t, r, expiresHeader), at+3600; got != want {
		t.Errorf("%s = %d, want %d (same session)", expiresHeader, got, want)
	}
}

// TestKeyRotation (S5): a key added to the issuer's JWKS is accepted without
// a restart; a key removed from it is refused, even for tokens verified
// (and cached) before.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"},
		TokenExtra: "  jwks_refresh_interval: 1s\n  jwks_min_refresh_interval: 1s\n"}.yaml()})
	jwks := s.dir + "/" + jwksFileName
	c := s.apiClient(t)
	oldTok := s.token(t, "alice")
	wantAllowed(t, c.Check("app.test", "/", oldTok, false))

	next := newIDP(t)
	mintNext := func() string {
		tok, err := next.Mint(baseClaims("bob"))
		if err != nil {
			t.Fatal(err)
		}
		s.remember(tok)
		return tok
	}
	// Before the rotation the new key is unknown.
	wantAPIDenied(t, c.Check("app.test", "/", mintNext(), false), "invalid_token", false)

	replaceFile(t, jwks, string(idp.JWKSOf(s.idp, next)))
	if !waitFor(4*time.Second, func() bool { return c.Check("app.test", "/", mintNext(), false).Allowed }) {
		t.Fatalf("token of the added key still refused 4s after the JWKS changed")
	}
	wantAllowed(t, c.Check("app.test", "/", oldTok, false))

	replaceFile(t, jwks, string(next.JWKS()))
	if !waitFor(4*time.Second, func() bool {
		r := c.Check("app.test", "/", oldTok, false)
		return !r.Allowed && r.Reason == "invalid_token"
	}) {
		t.Fatalf("token of the removed key still accepted 4s after the JWKS changed")
	}
	wantAPIDenied(t, c.Check("app.test", "/", s.token(t, "carol"), false), "invalid_token", false)
	wantAllowed(t, c.Check("app.test", "/", mintNext(), false))
}

// TestBindClaims (S4): with bind_claims [tid], a token of the same user in
// another tenant does not continue the session.
func TestBindClaims(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, SessionExtra: "  bind_claims: [tid]\n"}.yaml()})
	c := s.client(t)
	wantAllowed(t, c.Check("app.test", "/", s.token(t, "alice", claim("tid", "tenant-1")), true))
	wantAllowed(t, c.Check("app.test", "/", s.token(t, "alice", claim("tid", "tenant-1")), true))
	wantLoginRedirect(t, c.Check("app.test", "/", s.token(t, "alice", claim("tid", "tenant-2")), true), "identity_mismatch", "https://app.test/", true)
}

// TestNoTokenKeysIsToldAndNotReady: a policy whose jwks_uri has not answered
// since the start has no keys. The replica says so instead of claiming to
// be ready: /readyz 503 naming the policy, gRPC health NOT_SERVING,
// sessiongate_token_keys 0, a log line that there never were keys, and each
// refused token logged at the default level with its reason. Once the IdP
// answers, all of it turns and tokens are accepted.
func TestNoTokenKeysIsToldAndNotReady(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	var jwks atomic.Pointer[[]byte]
	idpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b := jwks.Load(); up.Load() && b != nil {
			w.Write(*b)
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer idpSrv.Close()
	p := strings.Replace(pol{Hosts: []string{"app.test"}}.yaml(), "jwks_file: "+jwksFileName,
		"jwks_uri: "+idpSrv.URL+"/jwks\n  jwks_refresh_interval: 2s\n  jwks_min_refresh_interval: 1s", 1)
	s := startServerOpts(t, map[string]string{"app": p}, serverOpts{live: true})
	b := s.idp.JWKS()
	jwks.Store(&b)

	const notReady = "not ready: no token keys for policy app: the JWKS has not loaded since the start (see the log)\n"
	if !waitFor(5*time.Second, func() bool { code, body, _ := s.httpGet("/readyz"); return code == 503 && body == notReady }) {
		code, body, err := s.httpGet("/readyz")
		t.Fatalf("GET /readyz with no keys: %d %q %v, want 503 %q", code, body, err, notReady)
	}
	if st, err := s.healthStatus(""); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health with no keys: %v %v, want NOT_SERVING", st, err)
	}
	if m := s.metrics(t); !strings.Contains(m, `sessiongate_token_keys{policy="app"} 0`) {
		t.Errorf("no sessiongate_token_keys 0 for app:\n%s", m)
	}
	tok := s.token(t, "alice")
	wantDenied(t, s.client(t).Check("app.test", "/", tok, false), 401, "invalid_token")
	if !s.waitLog("no keys were ever loaded from it") || strings.Contains(s.stderr.String(), "keeping the last good keys") {
		t.Errorf("the log does not say that there are no keys")
	}
	if !s.waitLog(`"level":"WARN","msg":"token refused","policy":"app","reason":"invalid_token","detail":"no keys loaded"`) {
		t.Errorf("the refused token is not logged at warning level with its reason")
	}

	up.Store(true)
	if err := s.waitReady(10 * time.Second); err != nil {
		t.Fatalf("not ready once the JWKS answers: %v", err)
	}
	if m := s.metrics(t); !strings.Contains(m, `sessiongate_token_keys{policy="app"} 1`) {
		t.Errorf("sessiongate_token_keys not 1 once loaded")
	}
	wantAllowed(t, s.client(t).Check("app.test", "/", s.token(t, "alice"), false))
}
