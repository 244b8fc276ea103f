package test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// Sign-in (login.oidc, S12–S17) as a person meets it: a real browser, the
// real provider's login form, and sessiongate behind real Caddy, real nginx
// (the shipped snippets) or the gRPC test proxy (Envoy's ext_authz filter),
// in front of an application that records what it receives.

const (
	gateCookie = "__Host-sessiongate" // the session cookie, and the prefix of the login cookies
	appPage    = "hello from the application"
	logoutPath = "/logout"
)

// signInPath is one way requests reach the gate.
type signInPath struct {
	name string
	// client is the provider client the path's policy uses, so that every
	// kind of client authentication is exercised.
	client, clientAuth string
	// start runs the proxy at listen. l, when set, is already listening
	// there (the gRPC proxy serves on it, so no other process can take the
	// port in between); the external proxies get it closed.
	start func(t *testing.T, gate *server, app, listen string, l net.Listener)
	// inProcess: the proxy can serve on a listener opened in advance.
	inProcess bool
}

var signInPaths = []signInPath{
	{"caddy", opClientID, "basic", func(t *testing.T, g *server, app, listen string, _ net.Listener) {
		startCaddy(t, g.httpAddr, app, listen)
	}, false},
	{"nginx", opPublicClient, "", func(t *testing.T, g *server, app, listen string, _ net.Listener) {
		startNginx(t, g.httpAddr, app, listen)
	}, false},
	{"envoy", opClientPost, "post", func(t *testing.T, g *server, app, _ string, l net.Listener) {
		serveEnvoyProxy(t, g.grpcAddr, app, l)
	}, true},
}

// proxyAddr is where the path's proxy will listen: for the gRPC proxy a
// listener opened now, for the others a free port.
func (p signInPath) proxyAddr(t *testing.T) (string, net.Listener) {
	t.Helper()
	if !p.inProcess {
		return freeAddr(t), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String(), l
}

func pathNamed(name string) signInPath {
	for _, p := range signInPaths {
		if p.name == name {
			return p
		}
	}
	panic("no path " + name)
}

// signInOpts shape one environment.
type signInOpts struct {
	idle, absolute time.Duration // defaults 1m, 1h
	accessTTL      int           // provider access-token lifetime, seconds; default 30
	store          string        // --store; default the embedded store
	keyFile        string        // --session-key-file contents; default none
	op             *oidcProvider // a provider to share; default a new one
}

// signInEnv is a provider, a gate, a proxy and the application.
type signInEnv struct {
	path signInPath
	op   *oidcProvider
	gate *server
	app  *recordingUpstream
	base string // http://app.localhost:PORT, as in the address bar
}

// oidcPolicy is the policy of the sign-in tests.
func oidcPolicy(op *oidcProvider, p signInPath, base string, o signInOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hosts: [%q]\nmode: enforce\n", faHost)
	fmt.Fprintf(&b, "session:\n  absolute_timeout: %s\n  idle_timeout: %s\n", o.absolute, o.idle)
	fmt.Fprintf(&b, "login:\n  oidc:\n    issuer: %s\n    client_id: %s\n", op.issuer, p.client)
	if p.clientAuth != "" {
		fmt.Fprintf(&b, "    client_secret_file: client.secret\n    client_auth: %s\n", p.clientAuth)
	}
	b.WriteString("    scopes: [openid, profile, email, offline_access]\n")
	b.WriteString("  reauth_params: {prompt: login, max_age: \"0\"}\n")
	b.WriteString("upstream:\n  access_token: authorization\n")
	fmt.Fprintf(&b, "logout:\n  path: %s\n  redirect_url: %s%s\n", logoutPath, base, opSignedOut)
	b.WriteString("bypass: [/public/]\n")
	return b.String()
}

func newSignInEnv(t *testing.T, p signInPath, o signInOpts) *signInEnv {
	t.Helper()
	if o.idle == 0 {
		o.idle = time.Minute
	}
	if o.absolute == 0 {
		o.absolute = time.Hour
	}
	e := &signInEnv{path: p, op: o.op}
	if e.op == nil {
		e.op = startProvider(t, providerOpts{AccessTokenTTL: o.accessTTL})
	}
	listen, l := p.proxyAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	e.base = "http://" + faHost + ":" + port
	e.gate = startSignInGate(t, e.op, p, e.base, o)
	logGateMetricsOnFailure(t, e.gate)
	e.app = startRecordingUpstream(t)
	p.start(t, e.gate, e.app.addr(), listen, l)
	return e
}

// startSignInGate starts sessiongate with the sign-in policy for base.
func startSignInGate(t *testing.T, op *oidcProvider, p signInPath, base string, o signInOpts) *server {
	t.Helper()
	var args []string
	if o.store != "" {
		args = append(args, "--store", o.store)
	}
	if o.keyFile != "" {
		kf := filepath.Join(t.TempDir(), "session.keys")
		writeFile(t, kf, o.keyFile)
		args = append(args, "--session-key-file", kf)
	}
	return startServerOpts(t, map[string]string{"app": oidcPolicy(op, p, base, o)}, serverOpts{
		extraArgs: args,
		setup: func(dir string) {
			writeFile(t, filepath.Join(dir, "client.secret"), opClientSecret+"\n")
		},
	})
}

// logGateMetricsOnFailure logs the gate's decision and sign-in counters
// when the test fails, while the gate still runs.
func logGateMetricsOnFailure(t *testing.T, s *server) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		_, body, err := s.httpGet("/metrics")
		if err != nil {
			return
		}
		var b strings.Builder
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "sessiongate_") && !strings.HasSuffix(l, " 0") && !strings.Contains(l, "_bucket") &&
				(strings.Contains(l, "checks_total") || strings.Contains(l, "sessions_") || strings.Contains(l, "sign_in") ||
					strings.Contains(l, "refresh") || strings.Contains(l, "callback")) {
				b.WriteString(l + "\n")
			}
		}
		t.Logf("gate metrics:\n%s", b.String())
	})
}

// appCookie is a cookie of the application itself.
func appCookie(name, value string) *network.Cookie {
	return &network.Cookie{Name: name, Value: value, Path: "/", SameSite: network.CookieSameSiteLax}
}

// cookieWithValue is the gate's session cookie with a given value.
func cookieWithValue(name, value string) *network.Cookie {
	return &network.Cookie{Name: name, Value: value, Path: "/", Secure: true, HTTPOnly: true, SameSite: network.CookieSameSiteLax}
}

// url is an address of the application.
func (e *signInEnv) url(path string) string { return e.base + path }

// atLoginForm waits until the browser shows the provider's login form.
func (e *signInEnv) atLoginForm(t *testing.T, tb *tab) {
	t.Helper()
	tb.waitURL(t, "the provider's login form", func(u *url.URL) bool {
		return strings.HasPrefix(u.String(), e.op.issuer+"/interaction/")
	})
	tb.waitVisible(t, "#username")
}

// atPage waits until the browser shows the application at path (with query).
func (e *signInEnv) atPage(t *testing.T, tb *tab, path string) {
	t.Helper()
	want := e.url(path)
	tb.waitURL(t, "the application at "+path, func(u *url.URL) bool { return u.String() == want })
	waitText(t, tb, appPage)
}

// signIn goes from the login form to the page.
func (e *signInEnv) signIn(t *testing.T, tb *tab, user, path string) {
	t.Helper()
	e.atLoginForm(t, tb)
	tb.signIn(t, user, opPassword)
	e.atPage(t, tb, path)
}

// wantSignedInUpstream asserts what the application got with the last
// request: the user's identity, the access token, and no gate cookie
// (S15); it returns the access token.
func (e *signInEnv) wantSignedInUpstream(t *testing.T, user string) string {
	t.Helper()
	got := e.last()
	if got.header == nil {
		t.Fatal("the application got no request")
	}
	u := e.op.users[user]
	for h, want := range map[string]string{"X-Sessiongate-User": user, "X-Sessiongate-Name": u.Name, "X-Sessiongate-Email": u.Email} {
		if v := got.header.Values(h); len(v) != 1 || v[0] != want {
			t.Errorf("application got %s = %q, want [%s]", h, v, want)
		}
	}
	if g := got.header.Get("X-Sessiongate-Groups"); !strings.Contains(g, "staff") {
		t.Errorf("application got X-Sessiongate-Groups = %q, want the groups", g)
	}
	auth := got.header.Values("Authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || len(auth[0]) < len("Bearer ")+16 {
		t.Fatalf("application got Authorization %q, want one Bearer access token", auth)
	}
	token := strings.TrimPrefix(auth[0], "Bearer ")
	e.gate.remember(token)
	for _, c := range got.header.Values("Cookie") {
		if strings.Contains(c, gateCookie) {
			t.Errorf("application got the gate's cookies: %q", c)
		}
	}
	return token
}

// last is the last page request the application received.
func (e *signInEnv) last() upstreamRequest {
	e.app.mu.Lock()
	defer e.app.mu.Unlock()
	for i := len(e.app.got) - 1; i >= 0; i-- {
		if e.app.got[i].uri != "/favicon.ico" {
			return e.app.got[i]
		}
	}
	return upstreamRequest{}
}

// hits is the number of requests the application has received for pages
// (the browser's own /favicon.ico requests aside, which come when they come).
func (e *signInEnv) hits() int {
	e.app.mu.Lock()
	defer e.app.mu.Unlock()
	n := 0
	for _, r := range e.app.got {
		if r.uri != "/favicon.ico" {
			n++
		}
	}
	return n
}

// sessionCookie is the browser's session cookie value ("" if none).
func (e *signInEnv) sessionCookie(t *testing.T, tb *tab) string {
	t.Helper()
	c := tb.cookies(t, e.url("/"))[gateCookie]
	if c == nil {
		return ""
	}
	if !c.Secure || !c.HTTPOnly {
		t.Errorf("session cookie: Secure %v HttpOnly %v, want both", c.Secure, c.HTTPOnly)
	}
	e.gate.remember(c.Value)
	return c.Value
}

// wantPage asserts an error page: the status the browser got for url, and
// what it says.
func (e *signInEnv) wantPage(t *testing.T, tb *tab, urlPrefix string, status int, says string) {
	t.Helper()
	waitText(t, tb, says)
	// The page may still be loading when its title shows: wait for all of it.
	tb.waitVisible(t, "a.retry")
	if got := tb.status(urlPrefix); got != status {
		t.Errorf("status of %s = %d, want %d\n%s", urlPrefix, got, status, tb.lastResponses())
	}
}

// started counts session_started audit events.
func (e *signInEnv) started(t *testing.T) int {
	return len(e.gate.findEvents(t, map[string]string{"event": "session_started"}))
}

// TestSignInJourney: a person signs in (in two tabs at once), works, goes
// idle, is asked for credentials again, and signs out — through Caddy,
// nginx and the gRPC proxy, each with another kind of provider client
// (client_secret_basic, a public client with PKCE alone, client_secret_post).
func TestSignInJourney(t *testing.T) {
	t.Parallel()
	for _, p := range signInPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			const idle = 5 * time.Second
			e := newSignInEnv(t, p, signInOpts{idle: idle})
			b := newBrowser(t)
			tb := b.firstTab(t)

			// An application cookie reaches the application; the gate's do not.
			tb.setCookie(t, e.url("/"), appCookie("theme", "dark"))

			// Two tabs sign in at once: each lands on its own page.
			tb2 := b.newTab(t)
			tb.navigate(t, e.url("/dashboard?tab=1"))
			e.atLoginForm(t, tb)
			tb2.navigate(t, e.url("/reports"))
			e.atLoginForm(t, tb2)
			tb.signIn(t, "alice", opPassword)
			e.atPage(t, tb, "/dashboard?tab=1")
			token := e.wantSignedInUpstream(t, "alice")
			if c := e.last().header.Get("Cookie"); c != "theme=dark" {
				t.Errorf("application got Cookie %q, want only its own theme=dark", c)
			}
			tb2.signIn(t, "alice", opPassword)
			e.atPage(t, tb2, "/reports")
			e.wantSignedInUpstream(t, "alice")
			first := e.sessionCookie(t, tb)
			if first == "" {
				t.Fatal("no session cookie after sign-in")
			}
			if s := e.op.stats(t); s.Logins != 2 || s.Codes != 2 {
				t.Errorf("provider: %d logins and %d codes, want 2 and 2", s.Logins, s.Codes)
			}
			// The login transactions' return URLs came from the gate, not the
			// query: the callback's Location was the page, and no token or
			// code ever sat in a URL the application saw.
			e.app.mu.Lock()
			for _, r := range e.app.got {
				if strings.Contains(r.uri, "code=") || strings.Contains(r.uri, token) {
					t.Errorf("application saw %q", r.uri)
				}
			}
			e.app.mu.Unlock()

			// The next requests continue the session: no provider round trip.
			tb.navigate(t, e.url("/next"))
			e.atPage(t, tb, "/next")
			e.wantSignedInUpstream(t, "alice")

			// Inactivity: the provider asks for credentials again
			// (prompt=login), and the person lands back on the page.
			time.Sleep(idle + time.Second)
			tb.navigate(t, e.url("/dashboard?tab=1"))
			e.atLoginForm(t, tb)
			if !strings.Contains(tb.location(), "/interaction/") {
				t.Fatalf("not the provider's form: %s", tb.location())
			}
			tb.signIn(t, "alice", opPassword)
			e.atPage(t, tb, "/dashboard?tab=1")
			e.wantSignedInUpstream(t, "alice")
			old := e.sessionCookie(t, tb)
			if old == "" || old == first {
				t.Fatal("signing in again must open a new session with a new cookie")
			}

			// Sign-out: the gate ends the session and sends the browser to
			// the provider, which signs the person out too (RP-Initiated
			// Logout: confirm), then to the signed-out page.
			tb.navigate(t, e.url(logoutPath))
			tb.waitURL(t, "the provider's sign-out", func(u *url.URL) bool { return strings.HasPrefix(u.String(), e.op.issuer) })
			tb.waitVisible(t, `button[name="logout"]`)
			tb.run(t, "confirm sign-out", chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
			tb.waitURL(t, "the signed-out page", func(u *url.URL) bool {
				return strings.HasPrefix(u.String(), e.url(opSignedOut))
			})
			if c := e.sessionCookie(t, tb); c != "" {
				t.Errorf("session cookie still set after sign-out")
			}
			hits := e.hits()

			// The back button, and the old cookie put back: never the page;
			// the provider asks for credentials (its session ended too).
			tb.backTo(t, e.url("/dashboard?tab=1"))
			e.atLoginForm(t, tb)
			tb.setCookie(t, e.url("/"), cookieWithValue(gateCookie, old))
			tb.navigate(t, e.url("/work"))
			e.atLoginForm(t, tb)
			if e.hits() != hits {
				t.Errorf("the application got %d requests after sign-out", e.hits()-hits)
			}
			logins := e.op.stats(t).Logins
			tb.signIn(t, "alice", opPassword)
			e.atPage(t, tb, "/work")
			e.wantSignedInUpstream(t, "alice")
			if got := e.op.stats(t).Logins; got != logins+1 {
				t.Errorf("the sign-in after sign-out did not ask for credentials (%d logins, want %d)", got, logins+1)
			}
			if ended := e.gate.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "signed_out"}); len(ended) != 1 {
				t.Errorf("%d session_ended events with cause signed_out, want 1", len(ended))
			}
		})
	}
}

// TestSignInCallbackErrors: a replayed callback, a foreign state, the
// provider's error=access_denied and the provider down at the callback each
// get their page, and none opens a session (S13).
func TestSignInCallbackErrors(t *testing.T) {
	t.Parallel()
	for _, p := range signInPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			e := newSignInEnv(t, p, signInOpts{})
			tb := newBrowser(t).firstTab(t)
			cb := e.url(opCallbackPath)

			// error=access_denied: the person cancels at the provider.
			tb.navigate(t, e.url("/dashboard"))
			e.atLoginForm(t, tb)
			tb.run(t, "cancel", chromedp.Click(chromedp.CSS("#cancel")))
			e.wantPage(t, tb, cb, 403, "Sign-in was refused")
			if e.started(t) != 0 || e.sessionCookie(t, tb) != "" {
				t.Fatal("a refused sign-in opened a session")
			}

			// A foreign state: never issued to this browser.
			tb.navigate(t, cb+"?code=forged-code&state=1AAAAAAAAAAAAAAAAAAAAAA&iss="+url.QueryEscape(e.op.issuer))
			e.wantPage(t, tb, cb, 400, "Sign-in could not be completed")

			// A replayed callback: sign in, then the same callback URL again.
			tb.navigations()
			tb.navigate(t, e.url("/dashboard"))
			e.signIn(t, tb, "bob", "/dashboard")
			e.gate.waitEvents(t, 1, map[string]string{"event": "session_started"})
			var callback string
			for _, u := range tb.navigations() {
				if strings.HasPrefix(u, cb+"?") {
					callback = u
				}
			}
			if callback == "" {
				t.Fatal("no callback among the navigations")
			}
			started := e.started(t)
			tb.navigate(t, callback)
			e.wantPage(t, tb, cb, 400, "Sign-in could not be completed")
			if e.started(t) != started {
				t.Error("a replayed callback opened a session")
			}
			hits := e.hits()

			// The provider goes down between its answer and the callback:
			// the code cannot be redeemed.
			b2 := newBrowser(t)
			tb2 := b2.firstTab(t)
			tb2.navigate(t, e.url("/reports"))
			e.atLoginForm(t, tb2)
			tb2.pauseRequests(t, "*"+opCallbackPath+"*")
			tb2.signIn(t, "alice", opPassword)
			id := tb2.nextPaused(t)
			e.op.stop()
			tb2.resume(t, id)
			e.wantPage(t, tb2, cb, 503, "Sign-in is unavailable")
			if got := e.started(t); got != started {
				t.Errorf("a callback with the provider down opened a session (%d sessions started, want %d)", got, started)
			}
			if got := e.hits(); got != hits {
				t.Errorf("a callback with the provider down reached the application (%d requests, want %d)", got, hits)
			}
			if e.sessionCookie(t, tb2) != "" {
				t.Error("a callback with the provider down set a session cookie")
			}
		})
	}
}

// TestSignInProviderIgnoresReauth: a provider that ignores prompt=login
// (single sign-on with the old auth_time) gets no session after an end and
// no redirect loop: the person sees a page that says so (S14).
func TestSignInProviderIgnoresReauth(t *testing.T) {
	t.Parallel()
	const idle = 4 * time.Second
	e := newSignInEnv(t, pathNamed("envoy"), signInOpts{idle: idle})
	tb := newBrowser(t).firstTab(t)
	tb.navigate(t, e.url("/dashboard"))
	e.signIn(t, tb, "alice", "/dashboard")
	hits := e.hits()

	time.Sleep(idle + time.Second)
	e.op.ignorePromptLogin(t, true)
	tb.navigations()
	tb.navigate(t, e.url("/dashboard"))
	e.wantPage(t, tb, e.url(opCallbackPath), 403, "Please sign in with your credentials")
	// No loop: one trip to the provider, one callback, and it stays there.
	time.Sleep(2 * time.Second)
	var auths, callbacks int
	for _, u := range tb.navigations() {
		switch {
		case strings.HasPrefix(u, e.op.issuer+"/auth"):
			auths++
		case strings.HasPrefix(u, e.url(opCallbackPath)):
			callbacks++
		}
	}
	if auths != 1 || callbacks != 1 {
		t.Errorf("%d authorization requests and %d callbacks, want one each (no loop)", auths, callbacks)
	}
	if e.hits() != hits {
		t.Errorf("the application got %d requests", e.hits()-hits)
	}
	if got := metricValue(e.gate.metrics(t), "sessiongate_checks_total",
		map[string]string{"policy": "app", "decision": "deny", "reason": "reauth_not_performed"}); got != 1 {
		t.Errorf("checks_total{reason=reauth_not_performed} = %v, want 1", got)
	}

	// The provider honours prompt=login again: "Try again" asks for
	// credentials and opens a session.
	e.op.ignorePromptLogin(t, false)
	tb.run(t, "try again", chromedp.Click(chromedp.CSS("a.retry")))
	e.atLoginForm(t, tb)
	tb.signIn(t, "alice", opPassword)
	tb.waitURL(t, "the application", func(u *url.URL) bool { return strings.HasPrefix(u.String(), e.base+"/") })
	waitText(t, tb, appPage)
}

// TestSignInRefresh: the access token is refreshed once per session even
// under 50 concurrent requests (S16), the refresh keeps the sign-in, and a
// grant revoked at the provider ends the session (idp_revoked).
func TestSignInRefresh(t *testing.T) {
	t.Parallel()
	const ttl = 20
	e := newSignInEnv(t, pathNamed("envoy"), signInOpts{accessTTL: ttl, idle: 5 * time.Minute})
	tb := newBrowser(t).firstTab(t)
	tb.navigate(t, e.url("/dashboard"))
	e.signIn(t, tb, "alice", "/dashboard")
	first := e.wantSignedInUpstream(t, "alice")
	cookie := e.sessionCookie(t, tb)

	// Past the access token's lifetime, 50 requests at once.
	time.Sleep(ttl*time.Second + time.Second)
	before := e.op.stats(t).Refreshes
	client := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authority := strings.TrimPrefix(e.base, "http://")
	_, port, _ := net.SplitHostPort(authority)
	var wg sync.WaitGroup
	statuses := make([]string, 50)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://127.0.0.1:"+port+fmt.Sprintf("/api/item/%d", i), nil)
			req.Host = authority
			req.Header.Set("Cookie", gateCookie+"="+cookie)
			req.Header.Set("Accept", "text/html")
			req.Header.Set("Sec-Fetch-Mode", "navigate")
			res, err := client.Do(req)
			if err != nil {
				statuses[i] = err.Error()
				return
			}
			res.Body.Close()
			statuses[i] = res.Status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != "200 OK" {
			t.Errorf("request %d: %s, want 200 OK", i, s)
		}
	}
	if got := e.op.stats(t).Refreshes - before; got != 1 {
		t.Errorf("%d refreshes at the provider for 50 concurrent requests, want 1", got)
	}
	second := e.wantSignedInUpstream(t, "alice")
	if second == first {
		t.Error("the application still gets the expired access token")
	}

	// The provider revokes the grant: the next refresh is refused, the
	// session ends (idp_revoked), and the browser is sent to sign in again.
	e.op.revoke(t, "alice")
	time.Sleep(ttl*time.Second + time.Second)
	tb.navigate(t, e.url("/dashboard"))
	e.atLoginForm(t, tb)
	if evs := e.gate.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "idp_revoked"}); len(evs) != 1 {
		t.Errorf("%d session_ended events with cause idp_revoked, want 1", len(evs))
	}
	e.signIn(t, tb, "alice", "/dashboard")
}

// TestSignInReplicas: two replicas on one real redis-server with one
// session key: a sign-in on one, the next request on the other; the
// provider's tokens are in Redis only sealed (S15).
func TestSignInReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := pathNamed("envoy")
	op := startProvider(t, providerOpts{})
	listenA, lA := p.proxyAddr(t)
	listenB, lB := p.proxyAddr(t)
	_, portA, _ := net.SplitHostPort(listenA)
	base := "http://" + faHost + ":" + portA
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	o := signInOpts{idle: time.Minute, absolute: time.Hour, store: srv.URL(), keyFile: base64.StdEncoding.EncodeToString(key) + "\n"}
	a := &signInEnv{path: p, op: op, base: base, gate: startSignInGate(t, op, p, base, o), app: startRecordingUpstream(t)}
	p.start(t, a.gate, a.app.addr(), listenA, lA)
	_, portB, _ := net.SplitHostPort(listenB)
	baseB := "http://" + faHost + ":" + portB
	b := &signInEnv{path: p, op: op, base: baseB, gate: startSignInGate(t, op, p, base, o), app: startRecordingUpstream(t)}
	p.start(t, b.gate, b.app.addr(), listenB, lB)

	tb := newBrowser(t).firstTab(t)
	tb.navigate(t, a.url("/dashboard"))
	a.signIn(t, tb, "alice", "/dashboard")
	tokenA := a.wantSignedInUpstream(t, "alice")
	cookie := a.sessionCookie(t, tb)
	b.gate.remember(cookie)
	b.gate.remember(tokenA)

	// The same browser on the other replica (cookies belong to the host,
	// whatever the port): signed in, no provider round trip.
	logins := op.stats(t).Logins
	tb.navigate(t, b.url("/reports"))
	b.atPage(t, tb, "/reports")
	if tokenB := b.wantSignedInUpstream(t, "alice"); tokenB != tokenA {
		t.Error("the other replica sent another access token upstream without a refresh")
	}
	if op.stats(t).Logins != logins {
		t.Error("the other replica sent the browser to the provider")
	}

	// Nothing the provider issued is readable in Redis.
	tokens := op.tokens(t)
	if len(tokens) < 2 {
		t.Fatalf("provider issued %d tokens, want an access token, a refresh token and an ID token", len(tokens))
	}
	dump := redisDump(t, srv.Addr())
	for _, tok := range tokens {
		if strings.Contains(dump, tok) {
			t.Errorf("token %.8s… (len %d) readable in Redis", tok, len(tok))
		}
		if i := strings.LastIndexByte(tok, '.'); i > 0 && strings.Contains(dump, tok[i+1:]) {
			t.Errorf("signature of token %.8s… readable in Redis", tok)
		}
	}
	if strings.Contains(dump, opClientSecret) {
		t.Error("client secret readable in Redis")
	}

	// Sign-out on B ends the session on A too.
	tb.navigate(t, b.url(logoutPath))
	tb.waitURL(t, "the provider's sign-out", func(u *url.URL) bool { return strings.HasPrefix(u.String(), op.issuer) })
	hits := a.hits()
	tb.setCookie(t, a.url("/"), cookieWithValue(gateCookie, cookie))
	tb.navigate(t, a.url("/dashboard"))
	tb.waitURL(t, "the provider, not the page", func(u *url.URL) bool { return strings.HasPrefix(u.String(), op.issuer) })
	if a.hits() != hits {
		t.Error("replica A let the signed-out session through")
	}
}

// redisDump returns every key of the server with its value read by type,
// and its DUMP, as redis-cli prints them.
func redisDump(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cli := requireBinary(t, "redis-cli", "redis-tools")
	run := func(args ...string) string {
		out, err := exec.Command(cli, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var b strings.Builder
	keys := strings.Fields(strings.ReplaceAll(run("--scan"), "\"", ""))
	if len(keys) == 0 {
		t.Fatal("Redis holds no keys: the replicas did not use it")
	}
	for _, k := range keys {
		b.WriteString(k + "\n")
		switch strings.TrimSpace(run("TYPE", k)) {
		case "string":
			b.WriteString(run("GET", k))
		case "hash":
			b.WriteString(run("HGETALL", k))
		case "set":
			b.WriteString(run("SMEMBERS", k))
		case "zset":
			b.WriteString(run("ZRANGE", k, "0", "-1"))
		case "list":
			b.WriteString(run("LRANGE", k, "0", "-1"))
		}
		b.WriteString(run("DUMP", k))
	}
	return b.String()
}

// TestSignInLocalPolicyIsValid: the policy of docs/sign-in-locally.md.
func TestSignInLocalPolicyIsValid(t *testing.T) {
	t.Parallel()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runBin(t, "validate", filepath.Join(root, "test", "oidcprovider", "policies")); code != 0 {
		t.Errorf("sessiongate validate test/oidcprovider/policies: exit %d\n%s%s", code, out, errOut)
	}
}
