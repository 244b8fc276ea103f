package test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestUnknownHost (S8): a host no policy names is denied with 403
// unknown_host and PERMISSION_DENIED, token or not, browser or not; exact
// hosts, wildcards, ports, case and trailing dots are matched as documented.
func TestUnknownHost(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app":  pol{Hosts: []string{"app.test"}}.yaml(),
		"wild": pol{Hosts: []string{"*.wild.test"}}.yaml(),
	})
	tok := s.token(t, "alice")
	c := s.client(t)
	for _, host := range []string{"other.test", "wild.test", "app.test.evil.example", "evil-app.test", "", "app.test\r\nx: y"} {
		for _, browser := range []bool{false, true} {
			r := c.Check(host, "/", tok, browser)
			wantDenied(t, r, 403, "unknown_host")
			if r.Location != "" || r.Client["www-authenticate"] != "" || len(r.SetCookies) != 0 {
				t.Errorf("host %q: unknown_host carries location/challenge/cookies: %v", host, r)
			}
		}
	}
	// Matched hosts: port stripped, case folded, trailing dot dropped,
	// wildcard covers every level below its suffix.
	for _, host := range []string{"app.test", "APP.TEST", "app.test:8443", "app.test.", "a.wild.test", "a.b.wild.test:443"} {
		wantAPIDenied(t, c.Check(host, "/", "", false), "no_token", false)
	}
	wantMetric(t, s.metrics(t), "sessiongate_checks_total", map[string]string{"policy": "", "decision": "deny", "reason": "unknown_host"}, 12)
}

// TestDefaultPolicy (S8): with a "*" policy, unknown hosts are governed by
// it (its own timeouts, its own sessions); named hosts keep their own.
func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app":     pol{Hosts: []string{"app.test"}, Idle: 30 * time.Minute}.yaml(),
		"default": pol{Hosts: []string{"*"}, Idle: 10 * time.Minute, Bypass: []string{"/public/"}}.yaml(),
	})
	tok := s.token(t, "alice")
	c := s.client(t)

	wantAPIDenied(t, c.Check("anything.example", "/", "", false), "no_token", false)
	wantLoginRedirect(t, c.Check("anything.example:8080", "/x", "", true), "no_token", "https://anything.example:8080/x", false)
	wantAllowed(t, c.Check("anything.example", "/public/logo.png", "", false))

	before := time.Now()
	r := c.Check("anything.example", "/", tok, false)
	after := time.Now()
	wantAllowed(t, r)
	wantNewSessionCookie(t, r, time.Hour)
	lo, hi := unixWindow(before, after, 10*time.Minute)
	wantBetween(t, "default policy "+idleHeader, unixHeader(t, r, idleHeader), lo, hi)

	before = time.Now()
	r = c.Check("app.test", "/", tok, false)
	after = time.Now()
	wantAllowed(t, r)
	lo, hi = unixWindow(before, after, 30*time.Minute)
	wantBetween(t, "app policy "+idleHeader, unixHeader(t, r, idleHeader), lo, hi)
	// app.test has no bypass: its own policy governs it.
	wantAPIDenied(t, c.Check("app.test", "/public/logo.png", "", false), "no_token", false)

	m := s.metrics(t)
	wantMetric(t, m, "sessiongate_checks_total", map[string]string{"policy": "default", "decision": "allow", "reason": ""}, 2)
	if strings.Contains(m, "anything.example") || strings.Contains(m, "/public/logo.png") {
		t.Errorf("a raw host or path appears in /metrics")
	}
}

// TestOpenRedirect (S7): whatever the path, query or host, the return URL
// in a login redirect points at the request's own host, the Location is one
// well-formed header value, and tokens in the query never reach it.
func TestOpenRedirect(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test", "*.app.test"}}.yaml()})
	c := s.client(t)
	tok := s.token(t, "alice")
	cases := []struct {
		host, path, want string
	}{
		{"app.test", "//evil.example/x", "https://app.test/evil.example/x"},
		{"app.test", "///evil.example/x", "https://app.test/evil.example/x"},
		{"app.test", "/?rd=https://evil.example", "https://app.test/?rd=https://evil.example"},
		{"app.test", "/x?a=1&rd=https%3A%2F%2Fevil.example", "https://app.test/x?a=1&rd=https%3A%2F%2Fevil.example"},
		{"app.test", `/\evil.example`, "https://app.test/%5Cevil.example"},
		{"app.test", `/\\evil.example/`, "https://app.test/%5C%5Cevil.example/"},
		{"app.test", "/%2F%2Fevil.example", "https://app.test/%2F%2Fevil.example"},
		{"app.test", "https://evil.example/x", "https://app.test/https://evil.example/x"},
		{"app.test", "evil.example", "https://app.test/evil.example"},
		{"app.test", "/x#@evil.example", "https://app.test/x"},
		{"app.test", "/x@evil.example", "https://app.test/x@evil.example"},
		{"app.test", "/x\r\nSet-Cookie: a=b", "https://app.test/x%0D%0ASet-Cookie:%20a=b"},
		{"app.test", "/x?access_token=" + tok + "&a=1&id_token=" + tok, "https://app.test/x?a=1"},
		{"app.test", "/x?ACCESS_TOKEN=" + tok, "https://app.test/x"},
		{"APP.Test:8443", "/y", "https://app.test:8443/y"},
		{"a.app.test", "/y", "https://a.app.test/y"},
	}
	for _, tc := range cases {
		r := c.Check(tc.host, tc.path, "", true)
		wantLoginRedirect(t, r, "no_token", tc.want, false)
		_, q := splitLocation(t, r.Location)
		u, err := url.Parse(q["rd"])
		if err != nil || u.Scheme != "https" || hostKey(u.Host) != hostKey(tc.host) || u.User != nil {
			t.Errorf("host %q path %q: return URL %q does not point at the request's own host", tc.host, tc.path, q["rd"])
		}
		if strings.Contains(r.Location, tok) || strings.Contains(r.Location, tok[strings.LastIndexByte(tok, '.')+1:]) {
			t.Errorf("path %q: token in Location %q", tc.path, r.Location)
		}
	}
	// A host that is not a plain host[:port] is no host of any policy, not
	// even of the default one (one authority parser decides both which
	// policy governs and what a return URL may name): unknown_host, with
	// no Location at all.
	s2 := startServer(t, map[string]string{"default": pol{Hosts: []string{"*"}}.yaml()})
	c2 := s2.client(t)
	for _, host := range []string{"app.test\r\nSet-Cookie: a=b", "app.test/evil", "evil.example@app.test", "app.test\\evil", "app .test"} {
		r := c2.Check(host, "/x", "", true)
		wantDenied(t, r, 403, "unknown_host")
		if r.Location != "" {
			t.Errorf("host %q: Location %q", host, r.Location)
		}
		for k, v := range r.Client {
			if strings.ContainsAny(v, "\r\n") {
				t.Errorf("host %q: header %s contains CR/LF: %q", host, k, v)
			}
		}
	}
}

// TestSpoofedIdentityHeaders (S10): identity headers sent by the client are
// overwritten on allowed requests and removed on bypassed ones.
func TestSpoofedIdentityHeaders(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Bypass: []string{"/public/", "/healthz"}}.yaml()})
	tok := s.token(t, "alice")
	c := s.client(t)
	spoof := []string{
		"x-sessiongate-user: admin", "x-sessiongate-session-expires-at: 99999999999",
		"x-sessiongate-idle-expires-at: 99999999999", "x-sessiongate-expires-in: 999999",
		"x-sessiongate-reason: ok",
	}
	r := c.Check("app.test", "/admin", tok, false, spoof...)
	wantAllowed(t, r)
	if r.Upstream[userHeader] != "alice" || r.UpstreamActions[userHeader] != overwriteOrAdd {
		t.Errorf("upstream %s = %q (%v), want alice with %v", userHeader, r.Upstream[userHeader], r.UpstreamActions[userHeader], overwriteOrAdd)
	}
	for _, h := range []string{expiresHeader, idleHeader} {
		if v := unixHeader(t, r, h); v >= 99999999999 || v < time.Now().Unix() {
			t.Errorf("upstream %s = %d: not the gate's own deadline", h, v)
		}
	}
	for _, h := range []string{expiresInHdr, reasonHeader} {
		if !slices.Contains(r.Remove, h) {
			t.Errorf("allowed request: headers_to_remove %v lacks %s", r.Remove, h)
		}
	}
	all := []string{userHeader, expiresHeader, idleHeader, expiresInHdr, reasonHeader}
	for _, p := range []string{"/public/", "/public/a.css", "/healthz", "/healthz/live?x=1"} {
		r := c.Check("app.test", p, "", false, spoof...)
		wantAllowed(t, r)
		if len(r.Upstream) != 0 {
			t.Errorf("bypass %s: upstream headers set: %v", p, r.Upstream)
		}
		for _, h := range all {
			if !slices.Contains(r.Remove, h) {
				t.Errorf("bypass %s: headers_to_remove %v lacks %s", p, r.Remove, h)
			}
		}
		wantNoSetCookie(t, r)
	}
	// Paths that only look like they are under a bypass prefix are not.
	for _, p := range []string{"/public", "/publicity", "/healthzx", "/public/../admin", "/public/%2e%2e/admin",
		"/public%2F..%2Fadmin", "//public/x", "/public/./x", `/public\..\admin`} {
		wantAPIDenied(t, c.Check("app.test", p, "", false, spoof...), "no_token", false)
	}
}

// TestDryRun (S9): a dry-run policy decides, counts what it would have
// denied and allows, without passing an identity it does not have.
func TestDryRun(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"shadow": pol{Hosts: []string{"shadow.test"}, DryRun: true}.yaml()})
	c := s.client(t)
	for _, browser := range []bool{false, true} {
		r := c.Check("shadow.test", "/", "", browser, "x-sessiongate-user: admin")
		wantAllowed(t, r)
		if _, ok := r.Upstream[userHeader]; ok || !slices.Contains(r.Remove, userHeader) {
			t.Errorf("dry-run without token: upstream %v, remove %v; want %s removed, not set", r.Upstream, r.Remove, userHeader)
		}
	}
	wantAllowed(t, c.Check("shadow.test", "/", "garbage.token.value", false))
	tok := s.token(t, "alice")
	r := c.Check("shadow.test", "/", tok, false)
	wantAllowed(t, r)
	if r.Upstream[userHeader] != "alice" {
		t.Errorf("dry-run with a valid token: %s = %q, want alice", userHeader, r.Upstream[userHeader])
	}
	wantNewSessionCookie(t, r, time.Hour)

	m := s.metrics(t)
	for reason, n := range map[string]float64{"no_token": 2, "invalid_token": 1} {
		wantMetric(t, m, "sessiongate_checks_total", map[string]string{"policy": "shadow", "decision": "dry_run_deny", "reason": reason}, n)
	}
	wantMetric(t, m, "sessiongate_checks_total", map[string]string{"policy": "shadow", "decision": "allow", "reason": ""}, 1)
}

// TestRawHeaderMap: Envoy with encode_raw_headers sends header_map (values
// as raw bytes) instead of headers; decisions are the same.
func TestRawHeaderMap(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	tok := s.token(t, "alice")
	c := s.client(t)
	req := func(hs ...[2]string) *authv3.CheckRequest {
		hm := &corev3.HeaderMap{}
		for _, h := range hs {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
		}
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", HeaderMap: hm, Protocol: "HTTP/1.1"}}}}
	}
	r, err := c.send(req([2]string{":authority", "app.test"}, [2]string{":path", "/raw?x=1"}, [2]string{":method", "GET"},
		[2]string{"x-forwarded-proto", "https"}, [2]string{"authorization", "Bearer " + tok}))
	if err != nil {
		t.Fatal(err)
	}
	wantAllowed(t, r)
	if r.Upstream[userHeader] != "alice" {
		t.Errorf("raw header map: %s = %q, want alice", userHeader, r.Upstream[userHeader])
	}
	cookie := wantNewSessionCookie(t, r, time.Hour)

	r, err = c.send(req([2]string{":authority", "app.test"}, [2]string{":path", "/raw?x=1"}, [2]string{"accept", "text/html"},
		[2]string{"x-forwarded-proto", "https"}))
	if err != nil {
		t.Fatal(err)
	}
	wantLoginRedirect(t, r, "no_token", "https://app.test/raw?x=1", false)

	// HTTP/2 cookie crumbs, re-joined, around the session cookie.
	r = c.Check("app.test", "/", tok, false, "cookie: theme=dark; "+cookieName+"="+cookie+"; csrf=Zx81")
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
}

// TestIPHosts (S8): policies may name IP addresses; IPv6 authorities with
// brackets and ports match, and the return URL keeps them.
func TestIPHosts(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"ip": pol{Hosts: []string{"::1", "10.1.2.3"}}.yaml()})
	c := s.client(t)
	wantLoginRedirect(t, c.Check("[::1]:8443", "/x", "", true), "no_token", "https://[::1]:8443/x", false)
	wantLoginRedirect(t, c.Check("10.1.2.3", "/x", "", true), "no_token", "https://10.1.2.3/x", false)
	wantLoginRedirect(t, c.Check("10.1.2.3:80", "/x", "", true), "no_token", "https://10.1.2.3:80/x", false)
	wantDenied(t, c.Check("10.1.2.4", "/x", "", true), 403, "unknown_host")
	wantAllowed(t, c.Check("[::1]", "/", s.token(t, "alice"), false))
}

// TestLoginURLWithQuery (S7): a login URL with its own query keeps it, and
// the return and re-auth parameters are appended to it.
func TestLoginURLWithQuery(t *testing.T) {
	t.Parallel()
	const login = "https://login.sessiongate.test/authorize?client_id=app&scope=openid"
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Idle: time.Second, Absolute: time.Minute, Login: login}.yaml()})
	c := s.client(t)
	r := c.Check("app.test", "/a?b=c", "", true)
	wantDenied(t, r, 302, "no_token")
	u, err := url.Parse(r.Location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Host != "login.sessiongate.test" || u.Path != "/authorize" || q.Get("client_id") != "app" || q.Get("scope") != "openid" ||
		q.Get("rd") != "https://app.test/a?b=c" || q.Has("prompt") || len(q) != 3 {
		t.Errorf("location %q: want the login URL's own query plus rd", r.Location)
	}
	tok := s.token(t, "alice")
	wantAllowed(t, c.Check("app.test", "/", tok, true))
	time.Sleep(1500 * time.Millisecond)
	r = c.Check("app.test", "/", tok, true)
	wantDenied(t, r, 302, "idle_timeout")
	u, _ = url.Parse(r.Location)
	q = u.Query()
	if q.Get("client_id") != "app" || q.Get("prompt") != "login" || q.Get("max_age") != "0" || q.Get("rd") != "https://app.test/" || len(q) != 5 {
		t.Errorf("location %q: want client_id, scope, rd, prompt=login, max_age=0", r.Location)
	}
}

// TestRawHeaderMapRepeatedCookieLines: with encode_raw_headers, Envoy passes
// every header line as its own header_map entry, and an HTTP/1.1 client may
// send several Cookie lines. Cookie lines join with "; " (RFC 6265 §5.4,
// RFC 9113 §8.2.3), so the session cookie in any of them is seen: bob's
// token with alice's session cookie is an identity mismatch (S4) whichever
// line carries the cookie.
func TestRawHeaderMapRepeatedCookieLines(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	bobTok := s.token(t, "bob")
	var aliceCookie string
	// Built per case: each case needs the cookie of a fresh session. (Each of
	// another user: the mismatch's end covers sign-ins within the clock skew
	// after it, so the same user could not sign in again at once.)
	for i, lines := range []func() []string{
		func() []string { return []string{cookieName + "=" + aliceCookie} },               // control: one line
		func() []string { return []string{"theme=dark", cookieName + "=" + aliceCookie} }, // on the second line
		func() []string { return []string{cookieName + "=" + aliceCookie, "theme=dark"} }, // on the first of two
	} {
		c := s.client(t) // a browser without the previous case's ended cookie
		wantAllowed(t, c.Check("app.test", "/", s.token(t, fmt.Sprintf("alice-%d", i)), true))
		aliceCookie, _ = c.cookie("app.test", cookieName)
		hm := &corev3.HeaderMap{}
		for _, h := range [][2]string{{":authority", "app.test"}, {":path", "/"}, {":method", "GET"},
			{"x-forwarded-proto", "https"}, {"authorization", "Bearer " + bobTok}} {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
		}
		for _, l := range lines() {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "cookie", RawValue: []byte(l)})
		}
		r, err := c.send(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", HeaderMap: hm, Protocol: "HTTP/1.1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			t.Fatalf("case %d: bob's token with alice's session cookie on a repeated Cookie line allowed as %q: "+
				"the cookie lines were not joined with \"; \"", i, r.Upstream[userHeader])
		}
		wantAPIDenied(t, r, "identity_mismatch", true)
	}
}

// TestReturnURLMalformedAuthority (S7, S8): an authority that is not a
// plain host[:port] — a non-numeric or empty port, several colons, stray
// brackets, userinfo, no host — matches no policy, not even the default
// one: 403 unknown_host. Such authorities reach the gate (Envoy checks only
// their characters); a lax lookup used to strip everything after a single
// colon, so that "app.test:evil.example" was governed by app.test's policy
// while the return-URL code refused it.
func TestReturnURLMalformedAuthority(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app":     pol{Hosts: []string{"app.test"}}.yaml(),
		"default": pol{Hosts: []string{"*"}}.yaml(),
	})
	c := s.client(t)
	tok := s.token(t, "alice")
	for _, host := range []string{"app.test:evil.example", "app.test:443x", "app.test:80:evil.example",
		"[::1]evil.example", "app.test]:80", ":80", "app.test:80@evil.com", "app.test:abc", "app.test:"} {
		wantDenied(t, c.Check(host, "/x", "", true), 403, "unknown_host")
		wantDenied(t, c.Check(host, "/x", tok, false), 403, "unknown_host")
	}
}
