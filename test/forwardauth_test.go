package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Forward-auth through real proxies: nginx (auth_request) and Caddy, each
// started from the repository's example configuration
// (forwardauth/examples) with its addresses replaced by free loopback
// ports, in front of an upstream that records what it receives, driven by
// a browser-like client with a cookie jar that does not follow redirects.

const faHost = "app.localhost" // *.localhost: the jar sends Secure cookies over http, as browsers do

// The spoofed gate headers a client sends; none may reach the upstream.
var faSpoof = []string{
	"X-Sessiongate-User: admin", "X-Sessiongate-Session-Expires-At: 99999999999",
	"X-Sessiongate-Idle-Expires-At: 99999999999", "X-Sessiongate-Expires-In: 999999",
	"X-Sessiongate-Reason: ok",
}

// faFlowPolicy is the policy forwardAuthFlow walks through.
func faFlowPolicy(idle time.Duration) string {
	return pol{
		Hosts: []string{faHost}, Absolute: time.Hour, Idle: idle,
		LogoutPath: "/logout", Bypass: []string{"/public/"},
		From: []string{"header:authorization", "cookie:access_token"},
	}.yaml()
}

func TestForwardAuthProxies(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	s := startServer(t, map[string]string{"app": faFlowPolicy(idle)})
	for _, p := range []struct {
		name  string
		start func(t *testing.T, gate, app string, at ...string) string
	}{
		{"nginx", startNginx},
		{"caddy", startCaddy},
	} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			up := startRecordingUpstream(t)
			proxy := p.start(t, s.httpAddr, up.addr())
			forwardAuthFlow(t, s, up, newFABrowser(t, proxy), "alice-"+p.name, idle)
		})
	}
}

// forwardAuthFlow walks one user through sign-in, inactivity, a new
// sign-in and sign-out, checking what the browser and the upstream see.
func forwardAuthFlow(t *testing.T, s *server, up *recordingUpstream, b *faBrowser, sub string, idle time.Duration) {
	wantReturn := "http://" + b.authority + "/dashboard?tab=1"

	// No token: a browser goes to the login page with its URL, an API
	// client gets a challenge; the application sees neither.
	r := b.get(t, "/dashboard?tab=1", true)
	wantFARedirect(t, r, "no_token", loginURL, map[string]string{"rd": wantReturn})
	r = b.get(t, "/api/items", false)
	wantFADenied(t, r, 401, "no_token")
	if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="sessiongate"` {
		t.Errorf("401 WWW-Authenticate = %q", got)
	}
	// The proxy sets the forwarded headers itself: a client cannot make the
	// gate check a bypassed path or another host instead of the real one.
	r = b.get(t, "/admin", false, "X-Original-URI: /public/x", "X-Forwarded-Uri: /public/x",
		"X-Original-Method: OPTIONS", "X-Forwarded-Method: OPTIONS", "X-Forwarded-Host: other.localhost")
	wantFADenied(t, r, 401, "no_token")
	up.wantHits(t, 0)

	// Sign in (token in the Authorization header): allowed, the session
	// cookie is set, the upstream sees the gate's identity, not the spoof.
	tok := s.token(t, sub)
	r = b.get(t, "/dashboard?tab=1", true, append([]string{"Authorization: Bearer " + tok}, faSpoof...)...)
	wantFAStatus(t, r, 200)
	cookie := b.cookie(t, cookieName)
	if cookie == "" {
		t.Fatalf("no %s cookie in the jar after sign-in; Set-Cookie %q", cookieName, r.header.Values("Set-Cookie"))
	}
	s.remember(cookie)
	got := up.wantHits(t, 1)
	wantFAIdentity(t, got, sub)
	if got.uri != "/dashboard?tab=1" {
		t.Errorf("upstream got %q, want the original URI", got.uri)
	}

	// The token as a cookie continues the same session: no new cookie.
	b.setCookie(t, "access_token", tok)
	r = b.get(t, "/next", true, faSpoof...)
	wantFAStatus(t, r, 200)
	if sc := r.header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("continuing the session set cookies %q", sc)
	}
	got = up.wantHits(t, 2)
	wantFAIdentity(t, got, sub)
	// The request had no Authorization: the application gets none, not an
	// empty one (which some frameworks refuse as malformed).
	if v, ok := got.header["Authorization"]; ok {
		t.Errorf("a request without Authorization reached the application with Authorization %q", v)
	}

	// A bypassed path needs no session; the spoofed identity is still gone.
	r = newFABrowser(t, b.proxy).get(t, "/public/logo.png", false, faSpoof...)
	wantFAStatus(t, r, 200)
	got = up.wantHits(t, 3)
	for _, h := range []string{"X-Sessiongate-User", "X-Sessiongate-Session-Expires-At", "X-Sessiongate-Idle-Expires-At",
		"X-Sessiongate-Expires-In", "X-Sessiongate-Reason"} {
		if v := got.header.Get(h); v != "" {
			t.Errorf("bypassed path: upstream got %s = %q, want it absent or empty", h, v)
		}
	}

	// Inactivity ends the session: the browser goes back to the login page
	// with the re-authentication parameters; the token alone is refused.
	time.Sleep(idle + time.Second)
	r = b.get(t, "/dashboard?tab=1", true)
	wantFARedirect(t, r, "idle_timeout", loginURL, map[string]string{"rd": wantReturn, "prompt": "login", "max_age": "0"})
	r = newFABrowser(t, b.proxy).get(t, "/api/items", false, "Authorization: Bearer "+tok)
	wantFADenied(t, r, 401, "reauth_required")
	up.wantHits(t, 3)

	// A new sign-in opens a new session.
	nextSecond()
	tok2 := s.token(t, sub)
	b.setCookie(t, "access_token", tok2)
	r = b.get(t, "/dashboard?tab=1", true)
	wantFAStatus(t, r, 200)
	cookie2 := b.cookie(t, cookieName)
	if cookie2 == "" || cookie2 == cookie {
		t.Fatalf("a new sign-in must set a new session cookie; Set-Cookie %q", r.header.Values("Set-Cookie"))
	}
	s.remember(cookie2)
	wantFAIdentity(t, up.wantHits(t, 4), sub)

	// Sign-out: to the signed-out page, cookie cleared, never upstream.
	r = b.get(t, "/logout", true)
	wantFARedirect(t, r, "signed_out", signedOutURL, map[string]string{})
	if b.cookie(t, cookieName) != "" {
		t.Errorf("session cookie still in the jar after sign-out; Set-Cookie %q", r.header.Values("Set-Cookie"))
	}
	// Refused afterwards: with the token cookie, and with the old session
	// cookie replayed by hand.
	r = b.get(t, "/dashboard?tab=1", true)
	wantFARedirect(t, r, "reauth_required", loginURL, map[string]string{"rd": wantReturn, "prompt": "login", "max_age": "0"})
	r = newFABrowser(t, b.proxy).get(t, "/api/items", false,
		"Authorization: Bearer "+tok2, "Cookie: "+cookieName+"="+cookie2)
	wantFADenied(t, r, 401, "reauth_required")
	up.wantHits(t, 4)
}

// TestForwardAuthEndpoints: the endpoints on --http-addr without a proxy:
// the Envoy flavour gets the original path verbatim (no redirect by the
// operator mux), and forwarded headers from a peer outside
// --trusted-proxies are ignored, so it cannot choose the host or path.
func TestForwardAuthEndpoints(t *testing.T) {
	t.Parallel()
	policy := pol{Hosts: []string{faHost}, Bypass: []string{"/public/"}}.yaml()
	forged := []string{"X-Original-URI: /public/x", "X-Forwarded-Uri: /public/x", "X-Forwarded-Host: " + faHost,
		"X-Forwarded-Proto: https", "X-Original-Method: GET", "X-Forwarded-Method: GET"}
	direct := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(t *testing.T, s *server, path string, headers ...string) faResponse {
		t.Helper()
		return faDo(t, direct, "http://"+s.httpAddr+path, "", headers)
	}

	trusting := startServer(t, map[string]string{"app": policy})
	for _, ep := range []string{"/auth/nginx", "/auth/forward"} {
		wantFAStatus(t, call(t, trusting, ep, forged...), 200) // loopback is trusted by default
	}
	r := call(t, trusting, "/auth/envoy/public/../admin", "Host: "+faHost)
	wantFADenied(t, r, 401, "no_token") // dot segments never bypass
	wantFAStatus(t, call(t, trusting, "/auth/envoy/public/x", "Host: "+faHost), 200)
	r = call(t, trusting, "/auth/envoy/public/x", "Host: "+faHost, "X-Sessiongate-User: admin")
	if got := r.header.Get("X-Envoy-Auth-Headers-To-Remove"); !strings.Contains(got, "x-sessiongate-user") {
		t.Errorf("envoy bypass: X-Envoy-Auth-Headers-To-Remove = %q, want the user header listed", got)
	}
	wantFAStatus(t, call(t, trusting, "/auth/unknown"), 404)

	distrusting := startServerOpts(t, map[string]string{"app": policy},
		serverOpts{extraArgs: []string{"--trusted-proxies", "192.0.2.0/24"}})
	for _, ep := range []string{"/auth/nginx", "/auth/forward"} {
		// The request describes itself: its Host is the gate's address.
		wantFADenied(t, call(t, distrusting, ep, forged...), 403, "unknown_host")
		// Even naming the application's host, the path is the endpoint's.
		r = call(t, distrusting, ep, append([]string{"Host: " + faHost}, forged...)...)
		wantFADenied(t, r, 401, "no_token")
	}

	// A bad list is refused at start, naming the flag.
	_, stderr, code := runBin(t, "serve", "--policies", t.TempDir(), "--trusted-proxies", "10.0.0.0/8,nope",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(stderr, "--trusted-proxies") || !strings.Contains(stderr, "nope") {
		t.Errorf("serve --trusted-proxies nope: exit %d, stderr %q", code, stderr)
	}
}

// ---------------------------------------------------------------------------
// Browser

type faBrowser struct {
	proxy     string // proxy listen address
	authority string // faHost:port, as in the browser's address bar
	client    *http.Client
	jar       *cookiejar.Jar
}

// newFABrowser connects every request to the proxy, whatever the URL's
// host, and never follows redirects so that they can be asserted.
func newFABrowser(t *testing.T, proxy string) *faBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(proxy)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, proxy)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &faBrowser{proxy: proxy, authority: net.JoinHostPort(faHost, port), jar: jar, client: &http.Client{
		Transport: tr, Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *faBrowser) url(path string) string { return "http://" + b.authority + path }

// get sends a GET as a browser navigation (nav) or an API call, with extra
// "Name: value" headers.
func (b *faBrowser) get(t *testing.T, path string, nav bool, headers ...string) faResponse {
	t.Helper()
	accept := "application/json"
	if nav {
		accept = "text/html,application/xhtml+xml"
		headers = append(headers, "Sec-Fetch-Mode: navigate")
	}
	return faDo(t, b.client, b.url(path), accept, headers)
}

func (b *faBrowser) cookie(t *testing.T, name string) string {
	t.Helper()
	u, _ := url.Parse(b.url("/"))
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func (b *faBrowser) setCookie(t *testing.T, name, value string) {
	t.Helper()
	u, _ := url.Parse(b.url("/"))
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

type faResponse struct {
	status int
	header http.Header
	body   string
}

// faDo sends a GET with extra "Name: value" headers ("Host: h" sets the host).
func faDo(t *testing.T, c *http.Client, u, accept string, headers []string) faResponse {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Add(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	return faResponse{status: res.StatusCode, header: res.Header, body: string(body)}
}

func wantFAStatus(t *testing.T, r faResponse, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; headers %v; body %.200q", r.status, status, r.header, r.body)
	}
}

// wantFADenied asserts a denial with its reason and no-store.
func wantFADenied(t *testing.T, r faResponse, status int, reason string) {
	t.Helper()
	wantFAStatus(t, r, status)
	if got := r.header.Get("X-Sessiongate-Reason"); got != reason {
		t.Errorf("X-Sessiongate-Reason = %q, want %q", got, reason)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
}

// wantFARedirect asserts a 302 to base whose query is exactly params.
func wantFARedirect(t *testing.T, r faResponse, reason, base string, params map[string]string) {
	t.Helper()
	wantFADenied(t, r, 302, reason)
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatalf("Location %q: %v", r.header.Get("Location"), err)
	}
	q := loc.Query()
	loc.RawQuery = ""
	if loc.String() != base {
		t.Errorf("Location %q does not go to %s", r.header.Get("Location"), base)
	}
	if len(q) != len(params) {
		t.Errorf("Location %q: parameters %v, want %v", r.header.Get("Location"), q, params)
	}
	for k, v := range params {
		if q.Get(k) != v {
			t.Errorf("Location %q: %s = %q, want %q", r.header.Get("Location"), k, q.Get(k), v)
		}
	}
}

// wantFAIdentity asserts that the upstream got exactly the gate's identity
// headers: the subject, and deadlines in the future but not the spoof's.
func wantFAIdentity(t *testing.T, got upstreamRequest, sub string) {
	t.Helper()
	if v := got.header.Values("X-Sessiongate-User"); len(v) != 1 || v[0] != sub {
		t.Errorf("upstream X-Sessiongate-User = %q, want exactly [%s]", v, sub)
	}
	now := time.Now().Unix()
	for _, h := range []string{"X-Sessiongate-Session-Expires-At", "X-Sessiongate-Idle-Expires-At"} {
		v := got.header.Values(h)
		n, err := strconv.ParseInt(strings.Join(v, ","), 10, 64)
		if err != nil || n < now || n >= 99999999999 {
			t.Errorf("upstream %s = %q, want the gate's own deadline", h, v)
		}
	}
	for _, h := range []string{"X-Sessiongate-Expires-In", "X-Sessiongate-Reason"} {
		if v := got.header.Get(h); v != "" {
			t.Errorf("upstream %s = %q, want it absent or empty", h, v)
		}
	}
}

// ---------------------------------------------------------------------------
// Upstream

type upstreamRequest struct {
	uri    string
	header http.Header
}

// recordingUpstream is the application: it records every request.
type recordingUpstream struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []upstreamRequest
}

func startRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, upstreamRequest{uri: r.RequestURI, header: r.Header.Clone()})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "no-store") // the back button asks again
		fmt.Fprintln(w, "hello from the application")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *recordingUpstream) addr() string { return u.srv.Listener.Addr().String() }

// wantHits asserts the number of requests received so far and returns the
// last one.
func (u *recordingUpstream) wantHits(t *testing.T, n int) upstreamRequest {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) != n {
		t.Fatalf("upstream received %d requests, want %d: %v", len(u.got), n, u.got)
	}
	if n == 0 {
		return upstreamRequest{}
	}
	return u.got[n-1]
}

// ---------------------------------------------------------------------------
// Proxies

// requireBinary finds a proxy binary, or skips (fails when CI requires
// external binaries).
func requireBinary(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (apt-get install %s)", name, debianPackage)
	if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
		t.Fatal(msg + "; SESSIONGATE_REQUIRE_EXTERNAL=1")
	}
	t.Skip(msg)
	return ""
}

// exampleConfig reads forwardauth/examples/name and applies replacements,
// each of which must match exactly once: a test that silently stopped using
// the example would prove nothing about it.
func exampleConfig(t *testing.T, name string, replace ...string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "forwardauth", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		if n := strings.Count(s, replace[i]); n != 1 {
			t.Fatalf("examples/%s: %q appears %d times, want once (update the test with the example)", name, replace[i], n)
		}
		s = strings.Replace(s, replace[i], replace[i+1], 1)
	}
	return s
}

// proxyProcess is a running proxy; it is stopped at cleanup.
type proxyProcess struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     string // file with its log
}

// startProxy picks a free port, builds the command for it and waits until it
// accepts connections, retrying on another port if this one was taken. With
// at, it listens there (an address the test has already handed out), and
// does not retry.
func startProxy(t *testing.T, name string, at []string, build func(dir, listen string) (*exec.Cmd, string)) string {
	t.Helper()
	for attempt := 0; ; attempt++ {
		dir := t.TempDir()
		listen := freeAddr(t)
		if len(at) > 0 {
			listen, attempt = at[0], 3
		}
		cmd, logFile := build(dir, listen)
		p := &proxyProcess{cmd: cmd, done: make(chan struct{}), log: logFile}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		go func() { p.waitErr = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { p.stop(t, name) })
		err := p.waitListening(listen, 15*time.Second)
		if err == nil {
			return listen
		}
		logText := p.readLog()
		if attempt < 3 && strings.Contains(strings.ToLower(logText), "address already in use") {
			continue
		}
		t.Fatalf("%s did not start: %v\n%s", name, err, logText)
	}
}

func (p *proxyProcess) waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.waitErr)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("not listening after " + timeout.String())
}

func (p *proxyProcess) readLog() string {
	b, _ := os.ReadFile(p.log)
	return tail(string(b), 4000)
}

func (p *proxyProcess) stop(t *testing.T, name string) {
	terminate(p.cmd, p.done, 10*time.Second)
	if t.Failed() {
		t.Logf("%s log:\n%s", name, p.readLog())
	}
}

// terminate sends SIGTERM to a process whose Wait closes done, and kills it
// if it has not exited after grace.
func terminate(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// startNginx runs nginx with examples/nginx.conf as its only server, as
// the current user, with pid, logs and temporary files in a temp dir.
func startNginx(t *testing.T, gate, app string, at ...string) string {
	bin := requireBinary(t, "nginx", "nginx")
	return startProxy(t, "nginx", at, func(dir, listen string) (*exec.Cmd, string) {
		site := exampleConfig(t, "nginx.conf",
			"server 127.0.0.1:9002;", "server "+gate+";",
			"server 127.0.0.1:8080;", "server "+app+";",
			"listen 127.0.0.1:8000;", "listen "+listen+";")
		writeFile(t, filepath.Join(dir, "site.conf"), site)
		userLine := ""
		if os.Geteuid() == 0 {
			// Workers would otherwise drop to nobody, who cannot use dir.
			if u, err := user.Current(); err == nil {
				userLine = "user " + u.Username + ";"
			}
		}
		var temps strings.Builder
		for _, k := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			fmt.Fprintf(&temps, "  %s_temp_path %s;\n", k, filepath.Join(dir, k))
		}
		main := fmt.Sprintf(`daemon off;
%s
worker_processes 1;
pid %s;
error_log %s info;
events { worker_connections 128; }
http {
  access_log %s;
%s  include %s;
}
`, userLine, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log"),
			temps.String(), filepath.Join(dir, "site.conf"))
		writeFile(t, filepath.Join(dir, "nginx.conf"), main)
		logFile := filepath.Join(dir, "error.log")
		cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", logFile)
		cmd.Env = cleanEnv()
		return cmd, logFile
	})
}

// startCaddy runs Caddy with examples/Caddyfile, admin endpoint off, bound
// to loopback, with its data and config directories in a temp dir.
func startCaddy(t *testing.T, gate, app string, at ...string) string {
	bin := requireBinary(t, "caddy", "caddy")
	return startProxy(t, "caddy", at, func(dir, listen string) (*exec.Cmd, string) {
		_, port, _ := net.SplitHostPort(listen)
		site := exampleConfig(t, "Caddyfile",
			"reverse_proxy 127.0.0.1:9002 {", "reverse_proxy "+gate+" {",
			"reverse_proxy 127.0.0.1:8080\n", "reverse_proxy "+app+"\n",
			"http://localhost:8000 {\n\tbind 127.0.0.1 ::1\n", "http://:"+port+" {\n")
		global := "{\n\tadmin off\n\tdefault_bind 127.0.0.1\n}\n\n"
		writeFile(t, filepath.Join(dir, "Caddyfile"), global+site)
		logFile := filepath.Join(dir, "caddy.log")
		f, err := os.Create(logFile)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cmd := exec.Command(bin, "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
		cmd.Env = append(cleanEnv(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
			"XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		cmd.Stdout, cmd.Stderr = f, f
		return cmd, logFile
	})
}

// TestNginxSnippetForTwoApplications: the nginx snippet copied for a second
// application with its "app_" prefix changed, as its comment says, loads
// beside the first (nginx -t): no upstream name collides.
func TestNginxSnippetForTwoApplications(t *testing.T) {
	t.Parallel()
	bin := requireBinary(t, "nginx", "nginx")
	dir := t.TempDir()
	first := exampleConfig(t, "nginx.conf", "listen 127.0.0.1:8000;", "listen "+freeAddr(t)+";")
	second := strings.ReplaceAll(exampleConfig(t, "nginx.conf", "listen 127.0.0.1:8000;", "listen "+freeAddr(t)+";",
		"server_name app.example.com localhost;", "server_name crm.example.com;"), "app_", "crm_")
	if strings.Count(second, "crm_") < 4 {
		t.Fatalf("the snippet's upstream names no longer start with app_: update the test with the example")
	}
	writeFile(t, filepath.Join(dir, "app.conf"), first)
	writeFile(t, filepath.Join(dir, "crm.conf"), second)
	var temps strings.Builder
	for _, k := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "  %s_temp_path %s;\n", k, filepath.Join(dir, k))
	}
	writeFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf("pid %s;\nerror_log %s;\nevents {}\nhttp {\n  access_log off;\n%s  include %s;\n  include %s;\n}\n",
		filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), temps.String(), filepath.Join(dir, "app.conf"), filepath.Join(dir, "crm.conf")))
	cmd := exec.Command(bin, "-t", "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nginx -t with the snippet twice: %v\n%s", err, out)
	}
	// And the unchanged copy twice is what the comment warns against.
	writeFile(t, filepath.Join(dir, "crm.conf"), strings.ReplaceAll(second, "crm_", "app_"))
	cmd = exec.Command(bin, "-t", "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "duplicate upstream") {
		t.Errorf("nginx -t with two identical upstream names: %v\n%s; want a duplicate upstream error (the test proves nothing otherwise)", err, out)
	}
}
