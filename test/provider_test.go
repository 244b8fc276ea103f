package test

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	jose "github.com/go-jose/go-jose/v4"
)

// A real OpenID provider for the sign-in tests: oidc-provider from npm
// (test/oidcprovider, pinned by its package-lock.json, installed by
// `npm ci` in that directory), started with node on a loopback port.

// Users and clients the provider knows.
const (
	opPassword     = "correct horse battery staple"
	opClientID     = "app"
	opClientSecret = "app-secret-0123456789abcdef0123456789" // confidential, client_secret_basic
	opClientPost   = "app-post"                              // confidential, client_secret_post
	opPublicClient = "spa"                                   // public, PKCE alone
	opClientJWT    = "app-jwt"                               // confidential, private_key_jwt with opClientKey
	opCallbackPath = "/_sessiongate/callback"
	opSignedOut    = "/public/signed-out"
)

// opUser is one account of the provider.
type opUser struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	Name     string   `json:"name"`
	Email    string   `json:"email"`
	Groups   []string `json:"groups"`
}

type opClient struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string `json:"post_logout_redirect_uris,omitempty"`
	BackchannelLogoutURI    string   `json:"backchannel_logout_uri,omitempty"`
	JWKS                    any      `json:"jwks,omitempty"` // the public keys of private_key_jwt
}

// opClientKey is the private key of the private_key_jwt client, one per
// test binary (PKCS #8 PEM), and opClientJWKS its public JWKS.
var opClientKey, opClientJWKS = func() ([]byte, any) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	// The key id sessiongate puts in its assertions: the RFC 7638 thumbprint.
	thumb, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err)
	}
	jwk, err := (&jose.JSONWebKey{Key: k.Public(), Use: "sig", Algorithm: "ES256",
		KeyID: base64.RawURLEncoding.EncodeToString(thumb)}).MarshalJSON()
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), map[string]any{"keys": []json.RawMessage{jwk}}
}()

// providerOpts configure startProvider.
type providerOpts struct {
	// AccessTokenTTL in seconds; default 30.
	AccessTokenTTL int
	// Hosts get a redirect URI and a post-logout redirect URI each
	// (http://HOST/…, any port); default [faHost].
	Hosts []string
	// BackchannelLogoutURI for the confidential clients (the gate's
	// /oidc/backchannel-logout); default none.
	BackchannelLogoutURI string
}

// oidcProvider is a running provider process.
type oidcProvider struct {
	issuer  string
	addr    string
	users   map[string]opUser
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     *syncBuffer
	stopped sync.Once
}

// opDir is the directory of the provider script.
func opDir(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "test", "oidcprovider")
}

// startProvider starts the provider with two users, alice and bob, and
// waits for its discovery document.
func startProvider(t *testing.T, o providerOpts) *oidcProvider {
	t.Helper()
	node := requireBinary(t, "node", "nodejs")
	dir := opDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider")); err != nil {
		msg := "oidc-provider not installed (run: npm ci --prefix test/oidcprovider)"
		if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
			t.Fatal(msg + "; SESSIONGATE_REQUIRE_EXTERNAL=1")
		}
		t.Skip(msg)
	}
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = 30
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{faHost}
	}
	var redirects, postLogout []string
	for _, h := range o.Hosts {
		redirects = append(redirects, "http://"+h+opCallbackPath)
		postLogout = append(postLogout, "http://"+h+opSignedOut)
	}
	users := []opUser{
		{Username: "alice", Password: opPassword, Name: "Alice Example", Email: "alice@example.com", Groups: []string{"staff", "admins"}},
		{Username: "bob", Password: opPassword, Name: "Bob Example", Email: "bob@example.com", Groups: []string{"staff"}},
	}
	clients := []opClient{
		{ClientID: opClientID, ClientSecret: opClientSecret, RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout,
			BackchannelLogoutURI: o.BackchannelLogoutURI},
		{ClientID: opClientPost, ClientSecret: opClientSecret, TokenEndpointAuthMethod: "client_secret_post",
			RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout, BackchannelLogoutURI: o.BackchannelLogoutURI},
		{ClientID: opPublicClient, RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout},
		{ClientID: opClientJWT, TokenEndpointAuthMethod: "private_key_jwt", JWKS: opClientJWKS,
			RedirectURIs: redirects, PostLogoutRedirectURIs: postLogout},
	}
	for attempt := 0; ; attempt++ {
		addr := freeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		p := &oidcProvider{issuer: "http://" + addr, addr: addr, users: map[string]opUser{}, log: &syncBuffer{}}
		for _, u := range users {
			p.users[u.Username] = u
		}
		cfg, _ := json.Marshal(map[string]any{"port": json.Number(port), "issuer": p.issuer,
			"accessTokenTTL": o.AccessTokenTTL, "users": users, "clients": clients})
		cfgFile := filepath.Join(t.TempDir(), "provider.json")
		writeFile(t, cfgFile, string(cfg))
		err := p.start(node, dir, cfgFile)
		if err == nil {
			t.Cleanup(func() {
				p.stop()
				if t.Failed() {
					t.Logf("provider log:\n%s", tail(p.log.String(), 4000))
				}
			})
			return p
		}
		p.stop()
		// A port taken meanwhile, or a start that stalled (seen once on a
		// machine at load 20: node stopped after its first line): again.
		if attempt < 3 && (strings.Contains(p.log.String(), "EADDRINUSE") || errors.Is(err, errNoReadyLine)) {
			t.Logf("oidc-provider did not start (%v), again:\n%s", err, p.log.String())
			continue
		}
		t.Fatalf("oidc-provider did not start: %v\n%s", err, p.log.String())
	}
}

var errNoReadyLine = errors.New("no ready line after 45s")

func (p *oidcProvider) start(node, dir, cfgFile string) error {
	cmd := exec.Command(node, "server.js", cfgFile)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stderr = p.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.done = cmd, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			p.log.Write(append(sc.Bytes(), '\n'))
			if !signalled && strings.HasPrefix(sc.Text(), "ready ") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	select {
	case <-ready:
	case <-p.done:
		return fmt.Errorf("exited: %v", p.waitErr)
	case <-time.After(45 * time.Second): // node starts slowly on a loaded machine
		return errNoReadyLine
	}
	// Discovery answers: what the gate waits for too.
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var d struct {
			Issuer string `json:"issuer"`
		}
		if last = p.getJSON("/.well-known/openid-configuration", &d); last == nil {
			if d.Issuer != p.issuer {
				return fmt.Errorf("discovery issuer %q, want %q", d.Issuer, p.issuer)
			}
			return nil
		}
	}
	return fmt.Errorf("discovery: %v", last)
}

// stop ends the provider (a provider outage); later calls do nothing.
func (p *oidcProvider) stop() {
	p.stopped.Do(func() {
		if p.cmd == nil || p.done == nil {
			return
		}
		terminate(p.cmd, p.done, 5*time.Second)
	})
}

// Without keep-alive: a POST on a connection the provider just timed out
// is not resent by net/http (the keep-alive race).
var opHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (p *oidcProvider) getJSON(path string, v any) error {
	res, err := opHTTP.Get(p.issuer + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

func (p *oidcProvider) post(t *testing.T, pathAndQuery string) {
	t.Helper()
	res, err := opHTTP.Post(p.issuer+pathAndQuery, "text/plain", nil)
	if err != nil {
		t.Fatalf("provider POST %s: %v", pathAndQuery, err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("provider POST %s: %s", pathAndQuery, res.Status)
	}
}

// opStats are the provider's counters.
type opStats struct {
	Logins        int `json:"logins"`        // credentials typed and accepted
	Codes         int `json:"codes"`         // authorization codes redeemed
	Refreshes     int `json:"refreshes"`     // refresh tokens redeemed
	RefreshErrors int `json:"refreshErrors"` // refresh attempts refused
}

func (p *oidcProvider) stats(t *testing.T) opStats {
	t.Helper()
	var s opStats
	if err := p.getJSON("/_test/stats", &s); err != nil {
		t.Fatalf("provider stats: %v", err)
	}
	return s
}

// ignorePromptLogin makes the provider drop prompt=login and max_age: its
// single sign-on then answers with the old auth_time (S14).
func (p *oidcProvider) ignorePromptLogin(t *testing.T, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	p.post(t, "/_test/ignore-prompt-login?on="+v)
}

// revoke revokes every grant of the account at the provider: its refresh
// tokens are refused with invalid_grant from then on.
func (p *oidcProvider) revoke(t *testing.T, account string) {
	t.Helper()
	p.post(t, "/_test/revoke?account="+account)
}

// TestProviderHarness: the local provider and the browser work together
// without the gate: the browser is sent to the authorization endpoint,
// types the credentials into the provider's form and comes back with a
// code; prompt=login asks again, unless the provider is told to ignore it;
// a wrong password is refused; cancelling gives error=access_denied.
func TestProviderHarness(t *testing.T) {
	t.Parallel()
	op := startProvider(t, providerOpts{})
	var mu sync.Mutex
	var got []url.Values
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != opCallbackPath {
			http.NotFound(w, r) // the browser's /favicon.ico, say: not a callback
			return
		}
		mu.Lock()
		got = append(got, r.URL.Query())
		mu.Unlock()
		fmt.Fprint(w, "<!doctype html><p>back at the application</p>")
	}))
	t.Cleanup(app.Close)
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	callback := "http://" + faHost + ":" + port + opCallbackPath
	authorize := func(extra string) string {
		q := url.Values{"client_id": {opPublicClient}, "response_type": {"code"}, "scope": {"openid profile email"},
			"redirect_uri": {callback}, "state": {randHex(8)}, "nonce": {randHex(8)},
			"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}
		return op.issuer + "/auth?" + q.Encode() + extra
	}
	last := func() url.Values {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return nil
		}
		return got[len(got)-1]
	}
	atCallback := func(u *url.URL) bool { return u.Port() == port && u.Path == opCallbackPath }

	tb := newBrowser(t).firstTab(t)
	tb.navigate(t, authorize(""))
	tb.signIn(t, "alice", "wrong password")
	tb.waitVisible(t, "#error")
	tb.signIn(t, "alice", opPassword)
	tb.waitURL(t, "the callback with a code", atCallback)
	// The tab's URL changes when the navigation starts, before the
	// callback server has recorded the request.
	waitFor(5*time.Second, func() bool { return last() != nil })
	q := last()
	if q.Get("code") == "" || q.Get("iss") != op.issuer {
		t.Fatalf("callback query %v: want a code and iss", q)
	}

	// The code gives a refresh token (no offline_access asked); it works
	// until the grant is revoked, then it is invalid_grant.
	tok := op.tokenRequest(t, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
		"redirect_uri": {callback}, "client_id": {opPublicClient}, "code_verifier": {"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"}})
	if tok["refresh_token"] == "" || tok["id_token"] == "" || tok["access_token"] == "" {
		t.Fatalf("token response without access, refresh or ID token: %v", keys(tok))
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"]}, "client_id": {opPublicClient}}
	tok = op.tokenRequest(t, refresh)
	op.revoke(t, "alice")
	refresh.Set("refresh_token", tok["refresh_token"])
	if got := op.tokenRequest(t, refresh); got["error"] != "invalid_grant" {
		t.Errorf("refresh after revocation: %v, want invalid_grant", got)
	}
	if s := op.stats(t); s.Refreshes != 1 || s.RefreshErrors != 1 || s.Codes != 1 {
		t.Errorf("provider stats %+v, want 1 code, 1 refresh, 1 refused refresh", s)
	}
	if n := len(op.tokens(t)); n != 6 { // access, refresh and ID token, twice
		t.Errorf("provider lists %d issued tokens, want 6", n)
	}

	// Single sign-on: no form; prompt=login: the form again.
	tb.navigate(t, authorize(""))
	tb.waitURL(t, "the callback without a form", atCallback)
	tb.navigate(t, authorize("&prompt=login&max_age=0"))
	tb.waitVisible(t, "#username")
	tb.signIn(t, "alice", opPassword)
	tb.waitURL(t, "the callback after typing credentials", atCallback)

	// Told to ignore prompt=login: single sign-on again.
	op.ignorePromptLogin(t, true)
	tb.navigate(t, authorize("&prompt=login&max_age=0"))
	tb.waitURL(t, "the callback without a form", atCallback)
	op.ignorePromptLogin(t, false)

	// Cancel on the form: the callback gets error=access_denied.
	tb.navigate(t, authorize("&prompt=login"))
	tb.waitVisible(t, "#cancel")
	tb.run(t, "cancel", chromedp.Click(chromedp.CSS("#cancel")))
	tb.waitURL(t, "the callback with an error", func(u *url.URL) bool { return atCallback(u) && u.Query().Get("error") != "" })
	waitFor(5*time.Second, func() bool { return last().Get("error") != "" })
	if q := last(); q.Get("error") != "access_denied" {
		t.Errorf("cancelled sign-in: callback query %v, want error=access_denied", q)
	}
	if s := op.stats(t); s.Logins != 2 {
		t.Errorf("provider counted %d logins, want 2 (the wrong password and single sign-on are not)", s.Logins)
	}

	// RP-Initiated Logout asks for confirmation, then signs out: the next
	// authorization request shows the form.
	tb.navigate(t, op.issuer+"/session/end?client_id="+opPublicClient)
	tb.waitVisible(t, `button[name="logout"]`)
	tb.run(t, "confirm sign-out", chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
	waitText(t, tb, "Sign-out Success")
	tb.navigate(t, authorize(""))
	tb.waitVisible(t, "#username")
}

// tokenRequest posts to the token endpoint and returns the JSON answer's
// string fields.
func (p *oidcProvider) tokenRequest(t *testing.T, form url.Values) map[string]string {
	t.Helper()
	res, err := opHTTP.PostForm(p.issuer+"/token", form)
	if err != nil {
		t.Fatalf("token endpoint: %v", err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatalf("token endpoint: %v", err)
	}
	out := map[string]string{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// tokens lists every access, refresh and ID token the provider issued.
func (p *oidcProvider) tokens(t *testing.T) []string {
	t.Helper()
	var out []string
	if err := p.getJSON("/_test/tokens", &out); err != nil {
		t.Fatalf("provider tokens: %v", err)
	}
	return out
}
