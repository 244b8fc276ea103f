package oidc

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// fakeProvider is an in-process OpenID provider for unit tests: discovery,
// JWKS, a token endpoint that checks PKCE, client authentication and the
// redirect URI, and the failures tests ask for.
type fakeProvider struct {
	t      testing.TB
	srv    *httptest.Server
	key    *idp.IDP
	clock  *testutil.Clock
	secret string // "" for a public client
	// authMethod the token endpoint insists on: basic, post, none or
	// private_key_jwt (assertions verified with clientKey).
	authMethod string
	clientKey  crypto.PublicKey
	assertions []map[string]any // the claims of every client assertion seen

	down         atomic.Bool // discovery and token endpoint answer 503
	issParameter bool        // advertise authorization_response_iss_parameter_supported
	endSession   bool        // advertise an end_session_endpoint
	discoveries  atomic.Int32
	exchanges    atomic.Int32
	jwksFetches  atomic.Int32
	// drop: how many token requests to read and then close the
	// connection on, unanswered; dropped counts them.
	drop, dropped atomic.Int32

	mu    sync.Mutex
	codes map[string]codeGrant
	// refresh tokens: value → revoked
	refresh map[string]bool
	// idClaims overrides ID-token claims of the next responses (nil deletes).
	idClaims map[string]any
	// sign mints the ID token (default: key.Mint).
	sign func(claims map[string]any) (string, error)
	// refreshIDToken: whether refresh responses carry an ID token.
	refreshIDToken bool
	// refreshSub is the sub of refreshed ID tokens ("" = alice).
	refreshSub string
}

type codeGrant struct {
	challenge, nonce, redirectURI string
}

func newFakeProvider(t testing.TB, clock *testutil.Clock) *fakeProvider {
	t.Helper()
	key, err := idp.New("ES256")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{t: t, key: key, clock: clock, secret: "s3cr3t-client", authMethod: "basic", endSession: true,
		codes: map[string]codeGrant{}, refresh: map[string]bool{}}
	f.sign = func(c map[string]any) (string, error) { return f.key.Mint(c) }
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeProvider) issuer() string { return f.srv.URL }

func (f *fakeProvider) serve(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		f.discoveries.Add(1)
		doc := map[string]any{
			"issuer":                                f.issuer(),
			"authorization_endpoint":                f.issuer() + "/authorize?tenant=t1",
			"token_endpoint":                        f.issuer() + "/token",
			"jwks_uri":                              f.issuer() + "/jwks",
			"id_token_signing_alg_values_supported": []string{"ES256", "RS256", "HS256", "none"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
		}
		if f.endSession {
			doc["end_session_endpoint"] = f.issuer() + "/logout"
		}
		if f.issParameter {
			doc["authorization_response_iss_parameter_supported"] = true
		}
		json.NewEncoder(w).Encode(doc)
	case "/jwks":
		f.jwksFetches.Add(1)
		w.Write(f.key.JWKS())
	case "/token":
		if f.drop.Add(-1) >= 0 {
			f.dropped.Add(1)
			io.Copy(io.Discard, r.Body)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				f.t.Error(err)
				return
			}
			conn.Close()
			return
		}
		f.drop.Store(0)
		f.token(w, r)
	default:
		http.NotFound(w, r)
	}
}

func tokenError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":"secret detail from the provider"}`, code)
}

func (f *fakeProvider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		tokenError(w, 400, "invalid_request")
		return
	}
	if r.PostForm.Get("grant_type") == "authorization_code" {
		f.exchanges.Add(1)
	}
	user, pass, basic := r.BasicAuth()
	switch f.authMethod {
	case "basic":
		if !basic || user != "app" || pass != f.secret || r.PostForm.Has("client_secret") {
			tokenError(w, 401, "invalid_client")
			return
		}
	case "post":
		if basic || r.PostForm.Get("client_id") != "app" || r.PostForm.Get("client_secret") != f.secret {
			tokenError(w, 401, "invalid_client")
			return
		}
	case "none":
		if basic || r.PostForm.Get("client_id") != "app" || r.PostForm.Has("client_secret") {
			tokenError(w, 401, "invalid_client")
			return
		}
	case "private_key_jwt":
		if basic || r.PostForm.Has("client_secret") || !f.assertionOK(r.PostForm) {
			tokenError(w, 401, "invalid_client")
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		g, ok := f.codes[r.PostForm.Get("code")]
		delete(f.codes, r.PostForm.Get("code"))
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		switch {
		case !ok:
			tokenError(w, 400, "invalid_grant")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
			tokenError(w, 400, "invalid_grant")
			return
		case r.PostForm.Get("redirect_uri") != g.redirectURI:
			tokenError(w, 400, "invalid_grant")
			return
		}
		rt := fmt.Sprintf("refresh-%d", len(f.refresh))
		f.refresh[rt] = false
		f.respond(w, "access-1", rt, f.idToken(g.nonce, "alice"))
	case "refresh_token":
		revoked, ok := f.refresh[r.PostForm.Get("refresh_token")]
		if !ok || revoked {
			tokenError(w, 400, "invalid_grant")
			return
		}
		id := ""
		if f.refreshIDToken {
			sub := f.refreshSub
			if sub == "" {
				sub = "alice"
			}
			id = f.idToken("", sub)
		}
		f.respond(w, "access-2", "", id)
	default:
		tokenError(w, 400, "unsupported_grant_type")
	}
}

// assertionOK checks a private_key_jwt client assertion (RFC 7523).
func (f *fakeProvider) assertionOK(form url.Values) bool {
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return false
	}
	jws, err := jose.ParseSigned(form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		return false
	}
	payload, err := jws.Verify(f.clientKey)
	if err != nil {
		return false
	}
	var c map[string]any
	if json.Unmarshal(payload, &c) != nil {
		return false
	}
	c["_kid"] = jws.Signatures[0].Header.KeyID
	f.mu.Lock()
	f.assertions = append(f.assertions, c)
	f.mu.Unlock()
	exp, _ := c["exp"].(float64)
	return c["iss"] == "app" && c["sub"] == "app" && c["aud"] == f.issuer()+"/token" && c["jti"] != "" &&
		int64(exp) > f.clock.Now().Unix() && jws.Signatures[0].Header.KeyID != ""
}

func (f *fakeProvider) respond(w http.ResponseWriter, access, refresh, id string) {
	resp := map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 300}
	if refresh != "" {
		resp["refresh_token"] = refresh
	}
	if id != "" {
		resp["id_token"] = id
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// idToken mints an ID token around the provider's clock; the caller holds mu.
func (f *fakeProvider) idToken(nonce, sub string) string {
	now := f.clock.Now()
	c := map[string]any{
		"iss": f.issuer(), "aud": "app", "sub": sub, "sid": "sid-1", "tid": "tenant-1",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "auth_time": now.Add(-time.Second).Unix(),
		"name": "Alice Example", "email": "alice@example.com", "groups": []string{"admins", "staff"},
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	for k, v := range f.idClaims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok, err := f.sign(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// authorize plays the provider's authorization endpoint for a Location the
// gate produced: it checks the request and returns the code it issued.
func (f *fakeProvider) authorize(location string) (code, state string, q url.Values) {
	f.t.Helper()
	u, err := url.Parse(location)
	if err != nil {
		f.t.Fatal(err)
	}
	q = u.Query()
	if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("client_id") != "app" {
		f.t.Fatalf("authorization request %v lacks code flow parameters", q)
	}
	code = "code-" + q.Get("state")[1:8]
	f.mu.Lock()
	f.codes[code] = codeGrant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirectURI: q.Get("redirect_uri")}
	f.mu.Unlock()
	return code, q.Get("state"), q
}

func (f *fakeProvider) revokeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.refresh {
		f.refresh[k] = true
	}
}

func (f *fakeProvider) setClaims(c map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idClaims = c
}

// countingClaims is a Claimer that tests can inspect and break.
type countingClaims struct {
	mu   sync.Mutex
	seen map[authz.Digest]bool
	fail atomic.Bool
}

func (c *countingClaims) Claim(_ context.Context, key authz.Digest, _ int64) (bool, error) {
	if c.fail.Load() {
		return false, fmt.Errorf("store down")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[authz.Digest]bool{}
	}
	if c.seen[key] {
		return false, nil
	}
	c.seen[key] = true
	return true, nil
}

// recordingObserver records events.
type recordingObserver struct {
	mu   sync.Mutex
	disc []bool
}

func (o *recordingObserver) TokenRequested(string, time.Duration, bool) {}

func (o *recordingObserver) Discovered(_ string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.disc = append(o.disc, ok)
}

// env is one RP against one fake provider.
type env struct {
	t      testing.TB
	clock  *testutil.Clock
	fp     *fakeProvider
	rp     *RP
	claims *countingClaims
	obs    *recordingObserver
	logs   *testutil.SyncBuffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	clock := testutil.NewClock(time.Now().Truncate(time.Second))
	e := &env{t: t, clock: clock, fp: newFakeProvider(t, clock), claims: &countingClaims{}, obs: &recordingObserver{},
		logs: &testutil.SyncBuffer{}}
	rp, err := New(Options{Keys: RandomKeyRing(), Claims: e.claims, Clock: clock, Observer: e.obs,
		Logger: slogTo(e.logs)})
	if err != nil {
		t.Fatal(err)
	}
	e.rp = rp
	return e
}

func (e *env) config() Config {
	return Config{
		Issuer: e.fp.issuer(), ClientID: "app", ClientSecret: e.fp.secret, Scopes: []string{"openid", "profile", "email"},
		CallbackPath: "/_sessiongate/callback", Params: map[string]string{"acr_values": "mfa"},
		ReauthParams:          map[string]string{"prompt": "login", "max_age": "0"},
		PostLogoutRedirectURL: "https://app.example.com/bye", ClockSkew: 30 * time.Second, BindClaims: []string{"tid"},
		Headers: []HeaderClaim{{"x-sessiongate-email", "email"}, {"x-sessiongate-groups", "groups"}, {"x-sessiongate-name", "name"}},
	}
}

// signIn builds a SignIn of cfg and discovers its provider.
func (e *env) signIn(cfg Config) *SignIn {
	e.t.Helper()
	s, err := e.rp.SignIn("app", cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.rp.DiscoverNow(context.Background())
	return s
}

// browser holds the cookies one browser has.
type browser struct{ cookies map[string]string }

func newBrowser() *browser { return &browser{cookies: map[string]string{}} }

func (b *browser) header() string {
	var parts []string
	for k, v := range b.cookies {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

func (b *browser) set(setCookie string) {
	kv, _, _ := strings.Cut(setCookie, ";")
	k, v, _ := strings.Cut(kv, "=")
	b.cookies[k] = v
}

func (b *browser) request(path string) *authz.Request {
	return &authz.Request{Host: "app.example.com", Scheme: "https", Method: "GET", Path: path,
		Headers: authz.HeaderMap{"cookie": b.header(), "accept": "text/html"}}
}

// start runs Start for b and returns the provider's code and state.
func (e *env) start(s *SignIn, b *browser, endedAt int64) (code, state string, q url.Values) {
	e.t.Helper()
	loc, sc, err := s.Start(context.Background(), b.request("/app?x=1"), "https://app.example.com/app?x=1", endedAt)
	if err != nil {
		e.t.Fatal(err)
	}
	b.set(sc)
	return e.fp.authorize(loc)
}

func callbackPath(code, state string, extra ...string) string {
	q := url.Values{"code": {code}, "state": {state}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "/_sessiongate/callback?" + q.Encode()
}
