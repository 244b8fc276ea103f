package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
)

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wantSignInErr checks err is a *SignInError of reason whose detail
// contains detail.
func wantSignInErr(t *testing.T, err error, reason authz.Reason, detail string) {
	t.Helper()
	se, ok := errors.AsType[*authz.SignInError](err)
	if !ok {
		t.Fatalf("err = %v, want a SignInError %s", err, reason)
	}
	if se.Reason != reason || !strings.Contains(se.Detail, detail) {
		t.Fatalf("err = %s %q, want %s containing %q", se.Reason, se.Detail, reason, detail)
	}
}

func TestDiscoveryFailureAndRecovery(t *testing.T) {
	e := newEnv(t)
	e.fp.down.Store(true)
	s := e.signIn(e.config())
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "503") || strings.Contains(err.Error(), "maintenance") {
		t.Fatalf("Ready() = %v, want the status without the provider's body", err)
	}
	_, _, err := s.Start(context.Background(), newBrowser().request("/"), "", 0)
	wantSignInErr(t, err, authz.ReasonProviderUnavailable, "could not be loaded")

	// Backoff: not asked again before a second has passed.
	e.fp.down.Store(false)
	e.rp.DiscoverNow(context.Background())
	if n := e.fp.discoveries.Load(); n != 0 {
		t.Fatalf("discovery asked %d times during the backoff", n)
	}
	e.clock.Advance(discoveryRetryMin)
	e.rp.DiscoverNow(context.Background())
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready() after recovery = %v", err)
	}
	if _, _, err := s.Start(context.Background(), newBrowser().request("/"), "", 0); err != nil {
		t.Fatal(err)
	}

	// A failed refresh keeps the last good configuration.
	e.fp.down.Store(true)
	e.clock.Advance(DiscoveryRefresh)
	e.rp.DiscoverNow(context.Background())
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready() after a failed refresh = %v, want the old configuration kept", err)
	}
	if got, want := e.obs.disc, []bool{false, true, false}; !reflect.DeepEqual(got, want) {
		t.Errorf("discoveries observed %v, want %v", got, want)
	}

	// A second policy of the same issuer shares the discovery.
	s2, err := e.rp.SignIn("other", e.config())
	if err != nil {
		t.Fatal(err)
	}
	if s2.Ready() != nil || s2.disc != s.disc {
		t.Error("a second policy of the issuer does not share its discovery")
	}
}

func TestDiscoveryRefusesAnotherIssuer(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Issuer += "/" // go-oidc compares exactly
	s := e.signIn(cfg)
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "another issuer") {
		t.Fatalf("Ready() = %v", err)
	}
}

func TestS12CodeFlow(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	loc, sc, err := s.Start(context.Background(), b.request("/app?x=1"), "https://app.example.com/app?x=1", 0)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(loc)
	q := u.Query()
	if got := u.Scheme + "://" + u.Host + u.Path; got != e.fp.issuer()+"/authorize" {
		t.Errorf("authorization endpoint %s", got)
	}
	for k, want := range map[string]string{
		"tenant": "t1", "response_type": "code", "client_id": "app",
		"redirect_uri": "https://app.example.com/_sessiongate/callback", "scope": "openid profile email",
		"code_challenge_method": "S256", "acr_values": "mfa",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 22 {
			t.Errorf("%s = %q, want at least 128 random bits", k, q.Get(k))
		}
	}
	for _, k := range []string{"prompt", "max_age"} {
		if q.Has(k) {
			t.Errorf("%s sent for a browser whose session never existed", k)
		}
	}
	if !strings.HasPrefix(sc, "__Host-sessiongate-login-0=") || !strings.HasSuffix(sc, "; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax") {
		t.Errorf("Set-Cookie %q", sc)
	}
	if strings.Contains(sc, q.Get("state")) || strings.Contains(sc, q.Get("nonce")) {
		t.Error("the transaction cookie carries the state or nonce in clear")
	}
	b.set(sc)
	code, state, _ := e.fp.authorize(loc)

	si, err := s.Finish(context.Background(), b.request(callbackPath(code, state, "iss", e.fp.issuer())))
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	wantClaims := &authz.Claims{Issuer: e.fp.issuer(), Subject: "alice", SID: "sid-1", Audience: []string{"app"},
		IssuedAt: now.Unix() * 1000, AuthTime: (now.Unix() - 1) * 1000, Expiry: now.Add(5*time.Minute).Unix() * 1000,
		Bind: []string{"tenant-1"}, Identity: authz.IdentityDigest(e.fp.issuer(), "alice", []string{"tenant-1"}),
		Scope: authz.ScopeDigest(e.fp.issuer(), "alice", "sid-1")}
	if !reflect.DeepEqual(si.Claims, wantClaims) {
		t.Errorf("claims\n got %+v\nwant %+v", si.Claims, wantClaims)
	}
	g := si.Grant
	if g.AccessToken != "access-1" || g.RefreshToken != "refresh-0" || g.IDToken == "" || g.AccessExpiry == 0 {
		t.Errorf("grant %+v", g)
	}
	wantHeaders := []authz.Header{{Name: "x-sessiongate-email", Value: "alice@example.com"}, {Name: "x-sessiongate-groups", Value: "admins,staff"}, {Name: "x-sessiongate-name", Value: "Alice Example"}}
	if !reflect.DeepEqual(g.Headers, wantHeaders) {
		t.Errorf("headers %v, want %v", g.Headers, wantHeaders)
	}
	if si.ReturnURL != "https://app.example.com/app?x=1" || si.EndedAt != 0 {
		t.Errorf("return URL %q, endedAt %d", si.ReturnURL, si.EndedAt)
	}
}

func TestS12ReauthParamsWhenEnded(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	ended := e.clock.Now().Add(-time.Minute).UnixMilli()
	code, state, q := e.start(s, b, ended)
	if q.Get("prompt") != "login" || q.Get("max_age") != "0" {
		t.Errorf("reauth params missing: %v", q)
	}
	si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	if err != nil {
		t.Fatal(err)
	}
	if si.EndedAt != ended {
		t.Errorf("EndedAt %d, want %d", si.EndedAt, ended)
	}
}

func TestReturnURLThatCannotComeBackGoesToTheRoot(t *testing.T) {
	for _, ret := range []string{"https://app.example.com/" + strings.Repeat("x", MaxReturnURL),
		"https://app.example.com/_sessiongate/callback?code=old&state=used"} {
		returnsToRoot(t, ret)
	}
}

// returnsToRoot checks a sign-in started with ret returns to the site root.
func returnsToRoot(t *testing.T, ret string) {
	t.Helper()
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	loc, sc, err := s.Start(context.Background(), b.request("/"), ret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc) > 4096 {
		t.Errorf("Set-Cookie of %d bytes", len(sc))
	}
	b.set(sc)
	code, state, _ := e.fp.authorize(loc)
	si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	if err != nil {
		t.Fatal(err)
	}
	if si.ReturnURL != "" {
		t.Errorf("return URL %q, want the site root", si.ReturnURL)
	}
}

func TestRedirectURIFromRequest(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	for _, c := range []struct{ host, scheme, want string }{
		{"App.Example.com:8443", "https", "https://app.example.com:8443/_sessiongate/callback"},
		{"localhost:8080", "http", "http://localhost:8080/_sessiongate/callback"},
		{"[::1]:8443", "", "https://[::1]:8443/_sessiongate/callback"},
	} {
		r := &authz.Request{Host: c.host, Scheme: c.scheme, Path: "/"}
		loc, _, err := s.Start(context.Background(), r, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(loc)
		if got := u.Query().Get("redirect_uri"); got != c.want {
			t.Errorf("%s %s: redirect_uri %q, want %q", c.scheme, c.host, got, c.want)
		}
	}
	for _, host := range []string{"", "evil.example/x", "user@app.example.com", "a b", "app.example.com\r\nx: y"} {
		_, _, err := s.Start(context.Background(), &authz.Request{Host: host, Path: "/"}, "", 0)
		wantSignInErr(t, err, authz.ReasonSignInFailed, "host")
	}
}

func TestClientAuthentication(t *testing.T) {
	for _, c := range []struct {
		name, method, configured, secret string
	}{
		{"basic by default", "basic", "", "s3cr3t-client"},
		{"basic", "basic", "basic", "s3cr3t-client"},
		{"post", "post", "post", "s3cr3t-client"},
		{"public client", "none", "", ""},
		{"public client named", "none", "none", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.fp.authMethod, e.fp.secret = c.method, c.secret
			cfg := e.config()
			cfg.ClientAuth, cfg.ClientSecret = c.configured, c.secret
			s := e.signIn(cfg)
			b := newBrowser()
			code, state, _ := e.start(s, b, 0)
			if _, err := s.Finish(context.Background(), b.request(callbackPath(code, state))); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A provider that lists only client_secret_post gets post.
	e := newEnv(t)
	s := e.signIn(e.config())
	md := *s.disc.cur.Load()
	md.authMethods = []string{"client_secret_post"}
	if got := s.clientAuth(&md); got != "post" {
		t.Errorf("auto client auth = %q, want post", got)
	}
}

func TestS13TwoTabs(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	code1, state1, _ := e.start(s, b, 0)
	code2, state2, _ := e.start(s, b, 0)
	if state1[0] == state2[0] {
		t.Fatalf("two attempts share slot %c", state1[0])
	}
	// The second tab finishes first; both sign in.
	for _, c := range [][2]string{{code2, state2}, {code1, state1}} {
		if _, err := s.Finish(context.Background(), b.request(callbackPath(c[0], c[1]))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestS13SlotsAreReused(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	var states []string
	for range LoginSlots {
		_, st, _ := e.start(s, b, 0)
		states = append(states, st)
		e.clock.Advance(time.Second)
	}
	if len(b.cookies) != LoginSlots {
		t.Fatalf("%d cookies after %d attempts", len(b.cookies), LoginSlots)
	}
	// One more takes the oldest slot (0); the others still finish.
	code, st, _ := e.start(s, b, 0)
	if st[0] != '0' || len(b.cookies) != LoginSlots {
		t.Fatalf("fifth attempt took slot %c, %d cookies", st[0], len(b.cookies))
	}
	if _, err := s.Finish(context.Background(), b.request(callbackPath(code, st))); err != nil {
		t.Fatal(err)
	}
	_, err := s.Finish(context.Background(), b.request(callbackPath("code-x", states[0])))
	wantSignInErr(t, err, authz.ReasonSignInFailed, "not started in this browser")
}

// TestS13Refusals: every callback that must not open a session, and that no
// code is exchanged for those refused before the exchange.
func TestS13Refusals(t *testing.T) {
	cases := []struct {
		name     string
		cfg      func(*Config)
		prep     func(*setup) *authz.Request
		reason   authz.Reason
		detail   string
		exchange bool // whether the code reaches the token endpoint
	}{
		{name: "unknown state", prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath(x.code, "1AAAAAAAAAAAAAAAAAAAAAA"))
		}, reason: authz.ReasonSignInFailed, detail: "not started in this browser"},
		{name: "malformed state", prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath(x.code, "<script>"))
		}, reason: authz.ReasonSignInFailed, detail: "names no login attempt"},
		{name: "missing state", prep: func(x *setup) *authz.Request {
			return x.b.request("/_sessiongate/callback?code=" + x.code)
		}, reason: authz.ReasonSignInFailed, detail: "names no login attempt"},
		{name: "repeated state", prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath(x.code, x.st) + "&state=" + x.st)
		}, reason: authz.ReasonSignInFailed, detail: "repeats the parameter state"},
		{name: "another browser", prep: func(x *setup) *authz.Request {
			return newBrowser().request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonSignInFailed, detail: "not started in this browser"},
		{name: "another browser's attempt in the same slot", prep: func(x *setup) *authz.Request {
			other := newBrowser()
			x.e.start(x.s, other, 0)
			return other.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonSignInFailed, detail: "not started in this browser"},
		{name: "expired", prep: func(x *setup) *authz.Request {
			x.e.clock.Advance(LoginTTL*time.Second + time.Millisecond)
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonSignInFailed, detail: "expired"},
		{name: "wrong iss parameter", prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath(x.code, x.st, "iss", "https://evil.example.com"))
		}, reason: authz.ReasonSignInFailed, detail: "another issuer"},
		{name: "missing iss parameter the provider promises", cfg: nil, prep: func(x *setup) *authz.Request {
			md := *x.s.disc.cur.Load()
			md.issParameter = true
			x.s.disc.cur.Store(&md)
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonSignInFailed, detail: "lacks the iss"},
		{name: "provider said access_denied", prep: func(x *setup) *authz.Request {
			return x.b.request("/_sessiongate/callback?error=access_denied&error_description=secret+words&state=" + x.st)
		}, reason: authz.ReasonSignInDenied, detail: "refused the sign-in (access_denied)"},
		{name: "provider said something unregistered", prep: func(x *setup) *authz.Request {
			return x.b.request("/_sessiongate/callback?error=%3Cscript%3E&state=" + x.st)
		}, reason: authz.ReasonSignInDenied, detail: "refused the sign-in"},
		{name: "no code", prep: func(x *setup) *authz.Request {
			return x.b.request("/_sessiongate/callback?state=" + x.st)
		}, reason: authz.ReasonSignInFailed, detail: "no authorization code"},
		{name: "code refused", prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath("code-forged", x.st))
		}, reason: authz.ReasonSignInFailed, detail: "refused the authorization code (invalid_grant)", exchange: true},
		{name: "store cannot claim", prep: func(x *setup) *authz.Request {
			x.e.claims.fail.Store(true)
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonStoreUnavailable, detail: "could not record"},
		{name: "provider down at the exchange", prep: func(x *setup) *authz.Request {
			x.e.fp.down.Store(true)
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonProviderUnavailable, detail: "token endpoint"},
		{name: "wrong client secret", cfg: func(c *Config) { c.ClientSecret = "wrong" }, prep: func(x *setup) *authz.Request {
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonSignInFailed, detail: "(invalid_client)", exchange: true},
		{name: "ID token wrong iss", prep: idClaims(map[string]any{"iss": "https://evil.example.com"}),
			reason: authz.ReasonSignInFailed, detail: "iss is not the issuer", exchange: true},
		{name: "ID token wrong aud", prep: idClaims(map[string]any{"aud": "other-app"}),
			reason: authz.ReasonSignInFailed, detail: "aud does not include the client", exchange: true},
		{name: "ID token several audiences without azp", prep: idClaims(map[string]any{"aud": []string{"app", "other"}}),
			reason: authz.ReasonSignInFailed, detail: "azp is not the client", exchange: true},
		{name: "ID token another azp", prep: idClaims(map[string]any{"azp": "other"}),
			reason: authz.ReasonSignInFailed, detail: "azp is not the client", exchange: true},
		{name: "ID token bad nonce", prep: idClaims(map[string]any{"nonce": "guessed"}),
			reason: authz.ReasonSignInFailed, detail: "nonce does not match", exchange: true},
		{name: "ID token without nonce", prep: idClaims(map[string]any{"nonce": nil}),
			reason: authz.ReasonSignInFailed, detail: "nonce does not match", exchange: true},
		{name: "ID token expired", prep: idClaims(map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}),
			reason: authz.ReasonSignInFailed, detail: "expired", exchange: true},
		{name: "ID token iat in the future", prep: idClaims(map[string]any{"iat": time.Now().Add(time.Hour).Unix()}),
			reason: authz.ReasonSignInFailed, detail: "iat is in the future", exchange: true},
		{name: "ID token without iat", prep: idClaims(map[string]any{"iat": nil}),
			reason: authz.ReasonSignInFailed, detail: "no iat", exchange: true},
		{name: "ID token auth_time in the future", prep: idClaims(map[string]any{"auth_time": time.Now().Add(time.Hour).Unix()}),
			reason: authz.ReasonSignInFailed, detail: "auth_time is in the future", exchange: true},
		{name: "ID token without auth_time when required", cfg: func(c *Config) { c.RequireAuthTime = true },
			prep: idClaims(map[string]any{"auth_time": nil}), reason: authz.ReasonSignInFailed, detail: "no auth_time", exchange: true},
		{name: "ID token without sub", prep: idClaims(map[string]any{"sub": ""}),
			reason: authz.ReasonSignInFailed, detail: "missing sub", exchange: true},
		{name: "ID token sub that is no header value", prep: idClaims(map[string]any{"sub": "alice\r\nx-admin: 1"}),
			reason: authz.ReasonSignInFailed, detail: "sub cannot be a header value", exchange: true},
		{name: "ID token alg none", prep: signWith(func(x *setup, c map[string]any) (string, error) { return x.e.fp.key.MintNone(c) }),
			reason: authz.ReasonSignInFailed, detail: "algorithm not allowed", exchange: true},
		{name: "ID token HS256 keyed with the public key", prep: signWith(func(x *setup, c map[string]any) (string, error) {
			return x.e.fp.key.MintHS256WithPublicKey(c)
		}), reason: authz.ReasonSignInFailed, detail: "algorithm not allowed", exchange: true},
		{name: "ID token forged", prep: signWith(func(x *setup, c map[string]any) (string, error) { return x.e.fp.key.MintForged(c) }),
			reason: authz.ReasonSignInFailed, detail: "signature does not verify", exchange: true},
		{name: "ID token algorithm the policy does not allow", cfg: func(c *Config) { c.Algorithms = []string{"RS256"} },
			prep:   func(x *setup) *authz.Request { return x.b.request(callbackPath(x.code, x.st)) },
			reason: authz.ReasonSignInFailed, detail: "algorithm not allowed", exchange: true},
		{name: "re-authentication asked, no auth_time", prep: func(x *setup) *authz.Request {
			x.code, x.st, _ = x.e.start(x.s, x.b, x.e.clock.Now().UnixMilli()-1000)
			x.e.fp.setClaims(map[string]any{"auth_time": nil})
			return x.b.request(callbackPath(x.code, x.st))
		}, reason: authz.ReasonReauthNotPerformed, detail: "auth_time", exchange: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			x := &setup{e: e, s: e.signIn(cfg), b: newBrowser()}
			x.code, x.st, _ = e.start(x.s, x.b, 0)
			r := c.prep(x)
			before := e.fp.exchanges.Load()
			si, err := x.s.Finish(context.Background(), r)
			if si != nil {
				t.Error("a refused callback returned a sign-in")
			}
			wantSignInErr(t, err, c.reason, c.detail)
			if exchanged := e.fp.exchanges.Load() > before; exchanged != c.exchange {
				t.Errorf("code exchanged: %v, want %v", exchanged, c.exchange)
			}
			assertNoSecrets(t, err.Error(), x)
		})
	}
}

// setup is a started login attempt that a refusal case turns into a
// callback request.
type setup struct {
	e    *env
	s    *SignIn
	b    *browser
	code string
	st   string
}

// idClaims prepares a valid callback whose ID token has claims overridden.
func idClaims(over map[string]any) func(x *setup) *authz.Request {
	return func(x *setup) *authz.Request {
		x.e.fp.setClaims(over)
		return x.b.request(callbackPath(x.code, x.st))
	}
}

func signWith(sign func(x *setup, c map[string]any) (string, error)) func(x *setup) *authz.Request {
	return func(x *setup) *authz.Request {
		x.e.fp.mu.Lock()
		x.e.fp.sign = func(c map[string]any) (string, error) { return sign(x, c) }
		x.e.fp.mu.Unlock()
		return x.b.request(callbackPath(x.code, x.st))
	}
}

// assertNoSecrets checks a message names no code, state, cookie or secret.
func assertNoSecrets(t *testing.T, msg string, x *setup) {
	t.Helper()
	secrets := []string{x.code, x.st, x.e.fp.secret, "secret detail", "secret words", "access-", "refresh-", "eyJ"}
	for _, v := range x.b.cookies {
		secrets = append(secrets, v)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error %q contains a secret (%q)", msg, s)
		}
	}
}

func TestS13Replay(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	b := newBrowser()
	code, state, _ := e.start(s, b, 0)
	r := b.request(callbackPath(code, state))
	if _, err := s.Finish(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	exchanges := e.fp.exchanges.Load()
	_, err := s.Finish(context.Background(), r)
	wantSignInErr(t, err, authz.ReasonSignInFailed, "already used")
	if e.fp.exchanges.Load() != exchanges {
		t.Error("a replayed callback exchanged its code")
	}
	// Also on another replica (same key ring and claim store).
	rp2, _ := New(Options{Keys: e.rp.keys, Claims: e.claims, Clock: e.clock})
	s2, _ := rp2.SignIn("app", e.config())
	rp2.DiscoverNow(context.Background())
	_, err = s2.Finish(context.Background(), r)
	wantSignInErr(t, err, authz.ReasonSignInFailed, "already used")
}

func TestS13KeyFromAnotherPolicy(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	other, _ := e.rp.SignIn("other", e.config())
	b := newBrowser()
	code, state, _ := e.start(other, b, 0)
	_, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	wantSignInErr(t, err, authz.ReasonSignInFailed, "not started in this browser")
}

func TestS16Refresh(t *testing.T) {
	signedIn := func(t *testing.T) (*env, *SignIn, *authz.Grant) {
		e := newEnv(t)
		s := e.signIn(e.config())
		b := newBrowser()
		code, state, _ := e.start(s, b, 0)
		si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
		if err != nil {
			t.Fatal(err)
		}
		return e, s, si.Grant
	}
	t.Run("without ID token keeps the identity", func(t *testing.T) {
		_, s, g := signedIn(t)
		ng, err := s.Refresh(context.Background(), g)
		if err != nil {
			t.Fatal(err)
		}
		if ng.AccessToken != "access-2" || ng.RefreshToken != g.RefreshToken || ng.IDToken != g.IDToken || !reflect.DeepEqual(ng.Headers, g.Headers) {
			t.Errorf("refreshed grant %+v from %+v", ng, g)
		}
	})
	t.Run("new ID token of the same user", func(t *testing.T) {
		e, s, g := signedIn(t)
		e.fp.refreshIDToken = true
		e.fp.setClaims(map[string]any{"name": "Alice Renamed"})
		ng, err := s.Refresh(context.Background(), g)
		if err != nil {
			t.Fatal(err)
		}
		if ng.IDToken == g.IDToken || !slices.Contains(ng.Headers, authz.Header{Name: "x-sessiongate-name", Value: "Alice Renamed"}) {
			t.Errorf("refreshed grant %+v", ng)
		}
	})
	t.Run("new ID token of another user ends the session", func(t *testing.T) {
		e, s, g := signedIn(t)
		e.fp.refreshIDToken, e.fp.refreshSub = true, "mallory"
		_, err := s.Refresh(context.Background(), g)
		if !errors.Is(err, authz.ErrGrantRevoked) {
			t.Fatalf("err = %v, want ErrGrantRevoked", err)
		}
	})
	t.Run("invalid_grant", func(t *testing.T) {
		e, s, g := signedIn(t)
		e.fp.revokeAll()
		_, err := s.Refresh(context.Background(), g)
		if !errors.Is(err, authz.ErrGrantRevoked) {
			t.Fatalf("err = %v, want ErrGrantRevoked", err)
		}
	})
	t.Run("provider down is not a revocation", func(t *testing.T) {
		e, s, g := signedIn(t)
		e.fp.down.Store(true)
		_, err := s.Refresh(context.Background(), g)
		if err == nil || errors.Is(err, authz.ErrGrantRevoked) {
			t.Fatalf("err = %v, want a failure that is not a revocation", err)
		}
		if strings.Contains(err.Error(), g.RefreshToken) || strings.Contains(err.Error(), "maintenance") {
			t.Errorf("error %q leaks", err)
		}
	})
	t.Run("no refresh token", func(t *testing.T) {
		_, s, g := signedIn(t)
		g.RefreshToken = ""
		if _, err := s.Refresh(context.Background(), g); err == nil || errors.Is(err, authz.ErrGrantRevoked) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestS17EndSessionURL(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config())
	g := &authz.Grant{IDToken: "eyJ.id.token"}
	u, err := url.Parse(s.EndSessionURL(newBrowser().request("/logout"), g))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Path != "/logout" || q.Get("id_token_hint") != g.IDToken || q.Get("client_id") != "app" ||
		q.Get("post_logout_redirect_uri") != "https://app.example.com/bye" || len(q.Get("state")) < 22 {
		t.Errorf("end session URL %s", u)
	}
	// No live session: the provider still ends its own.
	u, _ = url.Parse(s.EndSessionURL(newBrowser().request("/logout"), nil))
	if u.Query().Has("id_token_hint") || u.Query().Get("client_id") != "app" {
		t.Errorf("end session URL without grant %s", u)
	}
	// A provider without end_session_endpoint: straight to the redirect URL.
	e2 := newEnv(t)
	e2.fp.endSession = false
	s2 := e2.signIn(e2.config())
	if got := s2.EndSessionURL(newBrowser().request("/logout"), g); got != "https://app.example.com/bye" {
		t.Errorf("without end_session_endpoint: %s", got)
	}
}

func TestSealOpenRotation(t *testing.T) {
	e := newEnv(t)
	g := &authz.Grant{AccessToken: "at", RefreshToken: "rt", IDToken: "id", AccessExpiry: 1_700_000_000_123,
		Headers: []authz.Header{{Name: "x-a", Value: "1"}, {Name: "x-b", Value: "ü"}}}
	k1, k2 := make([]byte, KeySize), make([]byte, KeySize)
	k2[0] = 1
	old, _ := NewKeyRing(k1)
	rotated, _ := NewKeyRing(k2, k1)
	retired, _ := NewKeyRing(k2)
	mk := func(keys *KeyRing, policy string) *SignIn {
		rp, _ := New(Options{Keys: keys, Clock: e.clock})
		s, err := rp.SignIn(policy, e.config())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sealed, err := mk(old, "app").Seal(g)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "at") && strings.Contains(string(sealed), "rt") {
		t.Error("sealed grant shows its tokens")
	}
	got, err := mk(rotated, "app").Open(sealed)
	if err != nil || !reflect.DeepEqual(got, g) {
		t.Fatalf("rotated ring opens %+v, %v", got, err)
	}
	resealed, _ := mk(rotated, "app").Seal(g)
	if _, err := mk(old, "app").Open(resealed); err == nil {
		t.Error("a ring without the new key opened what it sealed")
	}
	if _, err := mk(retired, "app").Open(sealed); err == nil {
		t.Error("a retired key still opens")
	}
	if _, err := mk(old, "other").Open(sealed); err == nil {
		t.Error("another policy opened the grant")
	}
	for i := range sealed {
		bad := slices.Clone(sealed)
		bad[i] ^= 0x40
		if _, err := mk(old, "app").Open(bad); err == nil {
			t.Fatalf("a grant with byte %d flipped opened", i)
		}
	}
	if _, err := mk(old, "app").Open(sealed[:10]); err == nil {
		t.Error("a truncated grant opened")
	}
}

func TestIdentityHeaderValues(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Headers = []HeaderClaim{{"x-a", "a"}, {"x-b", "b"}, {"x-c", "c"}, {"x-d", "d"}, {"x-e", "e"}, {"x-f", "f"}, {"x-g", "g"}}
	s := e.signIn(cfg)
	m := map[string]json.RawMessage{
		"a": []byte(`"Zoë  "`), "b": []byte(`"evil\r\nx-sessiongate-user: root"`), "c": []byte(`["x","y\u0000"]`),
		"d": []byte(`42`), "e": []byte(`null`), "f": []byte(`"` + strings.Repeat("g", MaxHeaderValue+1) + `"`), "g": []byte(`{"k": true}`),
	}
	got := s.headers(m)
	want := []authz.Header{{Name: "x-a", Value: "Zoë"}, {Name: "x-d", Value: "42"}, {Name: "x-g", Value: `{"k":true}`}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("headers %q, want %q", got, want)
	}
}

func TestParseKeyFile(t *testing.T) {
	hexKey := strings.Repeat("ab", 32)
	b64 := "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
	ring, err := ParseKeyFile([]byte("# current\n" + hexKey + "\n\n  " + strings.TrimRight(b64, "=") + "x\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") || strings.Contains(err.Error(), "q6ur") {
		t.Fatalf("ring %v, err %v: want a line-4 error naming no key", ring, err)
	}
	if _, err := ParseKeyFile([]byte(hexKey + "\n" + b64 + "\n")); err == nil || !strings.Contains(err.Error(), "repeats") {
		t.Errorf("the same key twice: %v", err)
	}
	ring, err = ParseKeyFile([]byte("# rotation: new first\n" + strings.Repeat("cd", 32) + "\n" + b64 + "\n"))
	if err != nil || len(ring.keys) != 2 {
		t.Fatalf("ring %v, err %v", ring, err)
	}
	if _, err := ParseKeyFile([]byte("# nothing\n")); err == nil {
		t.Error("a file without keys was accepted")
	}
}

func TestConfigRefused(t *testing.T) {
	e := newEnv(t)
	for _, mut := range []func(*Config){
		func(c *Config) { c.Issuer = "http://idp.example.com" },
		func(c *Config) { c.ClientID = "" },
		func(c *Config) { c.ClientAuth = "jwt" },
		func(c *Config) { c.ClientAuth, c.ClientSecret = "post", "" },
		func(c *Config) { c.Scopes = []string{"profile"} },
		func(c *Config) { c.Algorithms = []string{"HS256"} },
	} {
		cfg := e.config()
		mut(&cfg)
		if _, err := e.rp.SignIn("app", cfg); err == nil || strings.Contains(err.Error(), e.fp.secret) {
			t.Errorf("config %+v: err %v", cfg, err)
		}
	}
}

func TestAccessVerifierUsesDiscoveredKeys(t *testing.T) {
	e := newEnv(t)
	e.fp.down.Store(true)
	s := e.signIn(e.config())
	var built []string
	v := s.AccessVerifier(func(uri string) (authz.Verifier, error) {
		built = append(built, uri)
		return okVerifier{}, nil
	})
	_, err := v.Verify(context.Background(), "tok", e.clock.Now())
	if authz.TokenReason(err) != authz.ReasonInvalidToken {
		t.Fatalf("before discovery: %v", err)
	}
	e.fp.down.Store(false)
	e.clock.Advance(time.Second)
	e.rp.DiscoverNow(context.Background())
	for range 2 {
		if _, err := v.Verify(context.Background(), "tok", e.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(built, []string{e.fp.issuer() + "/jwks"}) {
		t.Errorf("built %v", built)
	}
}

type okVerifier struct{}

func (okVerifier) Verify(context.Context, string, time.Time) (*authz.Claims, error) {
	return &authz.Claims{Subject: "api"}, nil
}

// TestTokenEndpointRedirectNotFollowed: the code, the PKCE verifier and
// the client secret go to the discovered token endpoint and nowhere else.
func TestTokenEndpointRedirectNotFollowed(t *testing.T) {
	var reached atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer elsewhere.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		e := newEnv(t)
		e.fp.authMethod, e.fp.secret = "post", "s3cr3t-client"
		s := e.signIn(e.config())
		md := *s.disc.cur.Load()
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+"/token", status)
		}))
		md.tokenURL = redirector.URL + "/token"
		s.disc.cur.Store(&md)
		cfg := e.config()
		cfg.ClientAuth = "post"
		s2, _ := e.rp.SignIn("app", cfg)
		b := newBrowser()
		code, state, _ := e.start(s2, b, 0)
		_, err := s2.Finish(context.Background(), b.request(callbackPath(code, state)))
		wantSignInErr(t, err, authz.ReasonProviderUnavailable, "token endpoint")
		redirector.Close()
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

func TestDiscoveredEndpointsMustBeHTTPS(t *testing.T) {
	for _, c := range []struct {
		endpoint, issuer string
		ok               bool
	}{
		{"https://idp.example.com/token", "https://idp.example.com", true},
		{"https://other.example.com/token", "https://idp.example.com", true},
		{"http://idp.example.com/token", "https://idp.example.com", false},
		{"http://127.0.0.1:9000/token", "http://127.0.0.1:9000", true},
		{"http://localhost:9000/token", "http://127.0.0.1:9000", true},
		{"http://idp.example.com/token", "http://127.0.0.1:9000", false},
		{"http://127.0.0.1:9000/token", "https://idp.example.com", false},
		{"/token", "https://idp.example.com", false},
		{"", "https://idp.example.com", false},
		{"ftp://idp.example.com/token", "https://idp.example.com", false},
	} {
		if got := endpointOK(c.endpoint, c.issuer); got != c.ok {
			t.Errorf("endpointOK(%q, %q) = %v, want %v", c.endpoint, c.issuer, got, c.ok)
		}
	}
}

// TestPrivateKeyJWT: with a client key, every token request (code exchange
// and refresh) carries a fresh client assertion signed by it, and no
// secret; RSA, EC and Ed25519 keys in PKCS #8, PKCS #1 and SEC 1 PEM.
func TestPrivateKeyJWT(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	for _, c := range []struct {
		name string
		pem  []byte
		pub  crypto.PublicKey
		auth string
	}{
		{"RSA PKCS #8", pkcs8(rsaKey), rsaKey.Public(), "private_key_jwt"},
		{"RSA PKCS #1, chosen by the key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), rsaKey.Public(), ""},
		{"EC SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), ecKey.Public(), "private_key_jwt"},
		{"Ed25519", pkcs8(edKey), edKey.Public(), "private_key_jwt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.fp.authMethod, e.fp.clientKey = "private_key_jwt", c.pub
			cfg := e.config()
			cfg.ClientSecret, cfg.ClientAuth, cfg.ClientKey = "", c.auth, c.pem
			s := e.signIn(cfg)
			b := newBrowser()
			code, state, _ := e.start(s, b, 0)
			si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Refresh(context.Background(), si.Grant); err != nil {
				t.Fatal(err)
			}
			e.fp.mu.Lock()
			defer e.fp.mu.Unlock()
			if n := len(e.fp.assertions); n != 2 || e.fp.assertions[0]["jti"] == e.fp.assertions[1]["jti"] {
				t.Errorf("%d assertions %v, want two with their own jti", n, e.fp.assertions)
			}
		})
	}
	// The kid is the key's thumbprint, or the one configured.
	for _, kid := range []string{"", "registered-key-1"} {
		e := newEnv(t)
		e.fp.authMethod, e.fp.clientKey = "private_key_jwt", ecKey.Public()
		cfg := e.config()
		cfg.ClientSecret, cfg.ClientKey, cfg.ClientKeyID = "", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), kid
		s := e.signIn(cfg)
		b := newBrowser()
		code, state, _ := e.start(s, b, 0)
		if _, err := s.Finish(context.Background(), b.request(callbackPath(code, state))); err != nil {
			t.Fatal(err)
		}
		want := kid
		if want == "" {
			thumb, _ := (&jose.JSONWebKey{Key: ecKey.Public()}).Thumbprint(crypto.SHA256)
			want = base64.RawURLEncoding.EncodeToString(thumb)
		}
		if got := e.fp.assertions[0]["_kid"]; got != want {
			t.Errorf("kid %v, want %q", got, want)
		}
	}
	// Another key than the provider's: refused like a wrong secret.
	e := newEnv(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.fp.authMethod, e.fp.clientKey = "private_key_jwt", other.Public()
	cfg := e.config()
	cfg.ClientSecret, cfg.ClientKey = "", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	s := e.signIn(cfg)
	b := newBrowser()
	code, state, _ := e.start(s, b, 0)
	_, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	wantSignInErr(t, err, authz.ReasonSignInFailed, "(invalid_client)")

	// Keys that cannot sign are refused when the policy loads, naming no
	// key material.
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, k := range [][]byte{[]byte("not a key"), pkcs8(small), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage")})} {
		cfg := e.config()
		cfg.ClientSecret, cfg.ClientKey = "", k
		if _, err := e.rp.SignIn("app", cfg); err == nil || strings.Contains(err.Error(), "garbage") || strings.Contains(err.Error(), "MII") {
			t.Errorf("client key %.20q: err %v", k, err)
		}
	}
	cfg = e.config()
	cfg.ClientAuth = "private_key_jwt"
	if _, err := e.rp.SignIn("app", cfg); err == nil {
		t.Error("private_key_jwt without a key accepted")
	}
}

// The policy's lifetime goes to the provider as max_age on every sign-in,
// so that its ID tokens say when the user signed in (auth_time) and a
// provider sign-in older than a session may live asks for credentials; a
// re-authentication's max_age=0 replaces it.
func TestS12MaxAgeIsThePolicyLifetime(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.MaxAge = 8*time.Hour + time.Millisecond // rounded up to whole seconds
	s := e.signIn(cfg)
	loc, _, err := s.Start(context.Background(), newBrowser().request("/"), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(loc)
	if got := u.Query()["max_age"]; len(got) != 1 || got[0] != "28801" {
		t.Errorf("max_age %v, want [28801]", got)
	}
	_, _, q := e.start(s, newBrowser(), e.clock.Now().Add(-time.Minute).UnixMilli())
	if got := q["max_age"]; len(got) != 1 || got[0] != "0" || q.Get("prompt") != "login" {
		t.Errorf("after an end: max_age %v prompt %q, want [0] login", got, q.Get("prompt"))
	}
}

// TestCodeExchangeResentOnDroppedKeepAlive: a provider that closes a
// kept-alive connection with the code exchange unanswered (the keep-alive
// race) gets the exchange once more, on a new connection, and the sign-in
// completes. A fresh connection closed unanswered is not resent, and the
// failure says what happened; a refresh is never resent.
func TestCodeExchangeResentOnDroppedKeepAlive(t *testing.T) {
	e := newEnv(t)
	s := e.signIn(e.config()) // discovery leaves a kept-alive connection
	b := newBrowser()
	code, state, _ := e.start(s, b, 0)
	e.fp.drop.Store(1)
	si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	if err != nil {
		t.Fatalf("sign-in after one dropped exchange: %v", err)
	}
	if d, x := e.fp.dropped.Load(), e.fp.exchanges.Load(); d != 1 || x != 1 {
		t.Errorf("%d dropped and %d answered exchanges, want 1 and 1", d, x)
	}

	// Every attempt dropped: the one on the kept-alive connection, then the
	// one on a fresh connection, which ends it.
	b = newBrowser()
	code, state, _ = e.start(s, b, 0)
	e.fp.dropped.Store(0)
	e.fp.drop.Store(10)
	_, err = s.Finish(context.Background(), b.request(callbackPath(code, state)))
	wantSignInErr(t, err, authz.ReasonProviderUnavailable, "(connection closed without an answer)")
	if d := e.fp.dropped.Load(); d != 2 {
		t.Errorf("%d attempts, want 2 (kept-alive, then fresh)", d)
	}

	e.fp.dropped.Store(0)
	e.fp.drop.Store(1)
	if _, err := s.Refresh(context.Background(), si.Grant); err == nil {
		t.Fatal("a refresh whose connection was dropped succeeded")
	}
	if d := e.fp.dropped.Load(); d != 1 {
		t.Errorf("a dropped refresh was sent %d times, want once", d)
	}
	if _, err := s.Refresh(context.Background(), si.Grant); err != nil {
		t.Errorf("the refresh token after a dropped refresh: %v", err)
	}
}
