package test

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// client plays Envoy in front of one browser (or API client): it keeps a
// cookie jar per host, applying Set-Cookie from allowed and denied answers.
type client struct {
	t   *testing.T
	s   *server
	api authv3.AuthorizationClient
	mu  sync.Mutex
	jar map[string]map[string]string // host → cookie name → value
	// noCookies makes an API client that neither keeps nor sends cookies.
	noCookies bool
	// deadline is the gRPC deadline of each check (5s when zero), as
	// Envoy's ext_authz timeout sets it.
	deadline time.Duration
}

func (s *server) client(t *testing.T) *client {
	return &client{t: t, s: s, api: authv3.NewAuthorizationClient(s.conn), jar: map[string]map[string]string{}}
}

// apiClient is a client without a cookie jar, like most API clients.
func (s *server) apiClient(t *testing.T) *client {
	c := s.client(t)
	c.noCookies = true
	return c
}

// result is what Envoy would do with one CheckResponse.
type result struct {
	Resp    *authv3.CheckResponse
	Code    codes.Code
	Message string // status.message
	Allowed bool
	Status  int    // 200 on allow (forwarded), else the denied_response status
	Reason  string // x-sessiongate-reason on deny, else ""
	// Location of a denial.
	Location string
	// Upstream headers set on an allowed request, with their append actions.
	Upstream        map[string]string
	UpstreamActions map[string]corev3.HeaderValueOption_HeaderAppendAction
	Remove          []string
	// Client headers (response_headers_to_add or denied headers), except
	// set-cookie, with their append actions.
	Client        map[string]string
	ClientActions map[string]corev3.HeaderValueOption_HeaderAppendAction
	SetCookies    []string
	Body          string
}

func hostKey(host string) string {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return h
}

// cookieHeader is the Cookie value the browser sends to host.
func (c *client) cookieHeader(host string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for k, v := range c.jar[hostKey(host)] {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

// cookie returns the jar's value of name for host.
func (c *client) cookie(host, name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.jar[hostKey(host)][name]
	return v, ok
}

// apply stores Set-Cookie values as a browser would (Max-Age=0 deletes).
func (c *client) apply(host string, setCookies []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hk := hostKey(host)
	for _, sc := range setCookies {
		parts := strings.Split(sc, ";")
		name, value, ok := strings.Cut(strings.TrimSpace(parts[0]), "=")
		if !ok || name == "" {
			continue
		}
		del := false
		for _, a := range parts[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(a), "=")
			if strings.EqualFold(k, "max-age") {
				if n, err := strconv.Atoi(v); err == nil && n <= 0 {
					del = true
				}
			}
		}
		if c.jar[hk] == nil {
			c.jar[hk] = map[string]string{}
		}
		if del {
			delete(c.jar[hk], name)
		} else {
			c.jar[hk][name] = value
			c.s.remember(value)
		}
	}
}

// Check sends one request as Envoy would; a gRPC error fails the test.
// extra headers are "name: value"; a cookie header among them replaces the
// jar's.
func (c *client) Check(host, path, token string, browser bool, extra ...string) result {
	c.t.Helper()
	r, err := c.try(host, path, token, browser, extra...)
	if err != nil {
		c.t.Fatalf("Check(%q, %q): gRPC error: %v", host, path, err)
	}
	return r
}

// try is Check for goroutines: it returns the gRPC error instead.
func (c *client) try(host, path, token string, browser bool, extra ...string) (result, error) {
	headers := map[string]string{
		":authority": host, ":path": path, ":method": "GET", ":scheme": "https",
		"x-forwarded-proto": "https", "x-request-id": randHex(16),
		"user-agent": "sessiongate-blackbox-test",
	}
	if browser {
		headers["accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
		headers["sec-fetch-mode"] = "navigate"
		headers["sec-fetch-dest"] = "document"
	} else {
		headers["accept"] = "application/json"
	}
	if token != "" {
		headers["authorization"] = "Bearer " + token
	}
	if ck := c.cookieHeader(host); ck != "" && !c.noCookies {
		headers["cookie"] = ck
	}
	for _, h := range extra {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return result{}, fmt.Errorf("bad extra header %q", h)
		}
		headers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: strconv.FormatUint(uint64(time.Now().UnixNano()), 10), Method: "GET",
			Headers: headers, Path: path, Host: host, Scheme: "https", Protocol: "HTTP/2",
		}},
	}}
	r, err := c.send(req)
	if err != nil {
		return r, err
	}
	if !c.noCookies {
		c.apply(host, r.SetCookies)
	}
	for _, sc := range r.SetCookies {
		if name, v, ok := strings.Cut(strings.SplitN(sc, ";", 2)[0], "="); ok && name == cookieName {
			c.s.remember(v)
		}
	}
	return r, nil
}

// send sends a raw CheckRequest (no jar) and decodes the answer.
func (c *client) send(req *authv3.CheckRequest) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(c.deadline, 5*time.Second))
	defer cancel()
	resp, err := c.api.Check(ctx, req)
	if err != nil {
		return result{}, err
	}
	return decode(resp), nil
}

func decode(resp *authv3.CheckResponse) result {
	r := result{
		Resp: resp, Code: codes.Code(resp.GetStatus().GetCode()), Message: resp.GetStatus().GetMessage(),
		Upstream: map[string]string{}, UpstreamActions: map[string]corev3.HeaderValueOption_HeaderAppendAction{},
		Client: map[string]string{}, ClientActions: map[string]corev3.HeaderValueOption_HeaderAppendAction{},
	}
	addClient := func(hs []*corev3.HeaderValueOption) {
		for _, h := range hs {
			k := strings.ToLower(h.GetHeader().GetKey())
			if k == "set-cookie" {
				r.SetCookies = append(r.SetCookies, h.GetHeader().GetValue())
				continue
			}
			r.Client[k] = h.GetHeader().GetValue()
			r.ClientActions[k] = h.GetAppendAction()
		}
	}
	if r.Code == codes.OK {
		r.Allowed, r.Status = true, 200
		ok := resp.GetOkResponse()
		for _, h := range ok.GetHeaders() {
			k := strings.ToLower(h.GetHeader().GetKey())
			r.Upstream[k] = h.GetHeader().GetValue()
			r.UpstreamActions[k] = h.GetAppendAction()
		}
		r.Remove = ok.GetHeadersToRemove()
		addClient(ok.GetResponseHeadersToAdd())
		return r
	}
	d := resp.GetDeniedResponse()
	r.Status = int(d.GetStatus().GetCode())
	r.Body = d.GetBody()
	addClient(d.GetHeaders())
	r.Reason = r.Client[reasonHeader]
	r.Location = r.Client["location"]
	return r
}

func (r result) String() string {
	if r.Allowed {
		return fmt.Sprintf("allow upstream=%v remove=%v client=%v set-cookie=%q", r.Upstream, r.Remove, r.Client, r.SetCookies)
	}
	return fmt.Sprintf("deny %v %d reason=%q msg=%q location=%q client=%v set-cookie=%q",
		r.Code, r.Status, r.Reason, r.Message, r.Location, r.Client, r.SetCookies)
}

// ---------------------------------------------------------------------------
// Assertions

func wantAllowed(t *testing.T, r result) {
	t.Helper()
	if !r.Allowed || r.Code != codes.OK {
		t.Fatalf("want allowed, got %v", r)
	}
}

// wantDenied asserts a denial's gRPC code, HTTP status, reason (in the
// header, the status message and the body) and the no-store header.
func wantDenied(t *testing.T, r result, status int, reason string) {
	t.Helper()
	if r.Allowed {
		t.Fatalf("want denied %d %s, got %v", status, reason, r)
	}
	wantCode := codes.Unauthenticated
	if reason == "unknown_host" {
		wantCode = codes.PermissionDenied
	}
	if r.Code != wantCode || r.Status != status || r.Reason != reason || r.Message != reason {
		t.Fatalf("want %v %d reason %q, got %v", wantCode, status, reason, r)
	}
	if got := r.Client["cache-control"]; got != "no-store" {
		t.Errorf("denial cache-control = %q, want no-store", got)
	}
	if r.Body != reason+"\n" {
		t.Errorf("denial body = %q, want %q", r.Body, reason+"\n")
	}
}

// wantAPIDenied asserts a 401 with the exact WWW-Authenticate challenge.
func wantAPIDenied(t *testing.T, r result, reason string, reauth bool) {
	t.Helper()
	wantDenied(t, r, 401, reason)
	var want string
	switch {
	case reason == "no_token":
		want = `Bearer realm="sessiongate"`
	case reauth:
		want = `Bearer realm="sessiongate", error="insufficient_user_authentication", error_description="` + reason + `", max_age=0`
	default:
		want = `Bearer realm="sessiongate", error="invalid_token", error_description="` + reason + `"`
	}
	if got := r.Client["www-authenticate"]; got != want {
		t.Errorf("www-authenticate = %q, want %q", got, want)
	}
	if r.Location != "" {
		t.Errorf("401 carries a location %q", r.Location)
	}
}

// wantLoginRedirect asserts a 302 to the login URL whose return parameter is
// exactly wantReturn ("" for none) and which carries the re-authentication
// parameters exactly when reauth is set.
func wantLoginRedirect(t *testing.T, r result, reason, wantReturn string, reauth bool) {
	t.Helper()
	wantDenied(t, r, 302, reason)
	base, q := splitLocation(t, r.Location)
	if base != loginURL {
		t.Errorf("location %q does not go to %s", r.Location, loginURL)
	}
	want := map[string]string{}
	if wantReturn != "" {
		want["rd"] = wantReturn
	}
	if reauth {
		want["prompt"], want["max_age"] = "login", "0"
	}
	if len(q) != len(want) {
		t.Errorf("location %q: params %v, want %v", r.Location, q, want)
	}
	for k, v := range want {
		if got, ok := q[k]; !ok || got != v {
			t.Errorf("location %q: %s = %q, want %q", r.Location, k, got, v)
		}
	}
	if _, ok := r.Client["www-authenticate"]; ok {
		t.Errorf("302 carries www-authenticate")
	}
}

// splitLocation parses a Location into its base and single-valued query.
func splitLocation(t *testing.T, loc string) (string, map[string]string) {
	t.Helper()
	if strings.ContainsAny(loc, "\r\n") {
		t.Fatalf("location contains CR/LF: %q", loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("location %q: %v", loc, err)
	}
	q := map[string]string{}
	for k, vs := range u.Query() {
		if len(vs) != 1 {
			t.Errorf("location %q: parameter %s repeated %d times", loc, k, len(vs))
		}
		q[k] = vs[0]
	}
	u.RawQuery = ""
	return u.String(), q
}

// wantNewSessionCookie asserts exactly one Set-Cookie opening a session and
// returns its value.
func wantNewSessionCookie(t *testing.T, r result, absolute time.Duration) string {
	t.Helper()
	if len(r.SetCookies) != 1 {
		t.Fatalf("want one set-cookie for a new session, got %q", r.SetCookies)
	}
	sc := r.SetCookies[0]
	parts := strings.Split(sc, "; ")
	name, value, _ := strings.Cut(parts[0], "=")
	if name != cookieName || len(value) < 22 {
		t.Fatalf("set-cookie %q: want %s=<at least 128 bits>", sc, cookieName)
	}
	attrs := map[string]string{}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		attrs[strings.ToLower(k)] = v
	}
	for k, v := range map[string]string{"secure": "", "httponly": "", "samesite": "Lax", "path": "/",
		"max-age": strconv.Itoa(int((absolute + time.Second - 1) / time.Second))} {
		if got, ok := attrs[k]; !ok || got != v {
			t.Errorf("set-cookie %q: attribute %s = %q (present %v), want %q", sc, k, got, ok, v)
		}
	}
	if _, ok := attrs["domain"]; ok {
		t.Errorf("set-cookie %q: a __Host- cookie must not carry Domain", sc)
	}
	return value
}

// wantCookieCleared asserts a Set-Cookie that deletes the session cookie.
func wantCookieCleared(t *testing.T, r result) {
	t.Helper()
	for _, sc := range r.SetCookies {
		if strings.HasPrefix(sc, cookieName+"=;") && strings.Contains(sc, "Max-Age=0") &&
			strings.Contains(sc, "Path=/") && strings.Contains(sc, "Secure") {
			return
		}
	}
	t.Errorf("want the session cookie cleared (Max-Age=0), got set-cookie %q", r.SetCookies)
}

func wantNoSetCookie(t *testing.T, r result) {
	t.Helper()
	if len(r.SetCookies) != 0 {
		t.Errorf("want no set-cookie, got %q", r.SetCookies)
	}
}

// unixHeader reads an upstream header holding Unix seconds.
func unixHeader(t *testing.T, r result, name string) int64 {
	t.Helper()
	v, ok := r.Upstream[name]
	if !ok {
		t.Fatalf("upstream header %s missing: %v", name, r)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("upstream header %s = %q: not Unix seconds", name, v)
	}
	if a := r.UpstreamActions[name]; a != overwriteOrAdd {
		t.Errorf("upstream header %s append_action = %v, want %v", name, a, overwriteOrAdd)
	}
	return n
}

// wantMetric asserts one sample's value; -1 means the series must be absent.
func wantMetric(t *testing.T, text, name string, labels map[string]string, want float64) {
	t.Helper()
	got := metricValue(text, name, labels)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	series := name + "{"
	for i, k := range keys {
		if i > 0 {
			series += ","
		}
		series += k + "=" + strconv.Quote(labels[k])
	}
	series += "}"
	switch {
	case got == want:
	case got == -1:
		t.Errorf("%s absent from /metrics, want %v", series, want)
	default:
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}

// metricValue finds one sample in Prometheus text output; labels must match
// exactly (all of them). It returns -1 when the series is absent.
func metricValue(text, name string, labels map[string]string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		got := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			for _, kv := range splitLabels(rest[1:end]) {
				k, v, _ := strings.Cut(kv, "=")
				uq, err := strconv.Unquote(v)
				if err != nil {
					uq = v
				}
				got[k] = uq
			}
			rest = rest[end+1:]
		}
		if !strings.HasPrefix(rest, " ") || len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			continue
		}
		return f
	}
	return -1
}

func splitLabels(s string) []string {
	var out []string
	var cur strings.Builder
	inQ := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && inQ && i+1 < len(s):
			cur.WriteByte(ch)
			i++
			cur.WriteByte(s[i])
			continue
		case ch == '"':
			inQ = !inQ
		case ch == ',' && !inQ:
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(ch)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// sleepUntil sleeps until t.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// nextSecond sleeps until just after the next whole Unix second, so that a
// token minted afterwards has an auth_time strictly after any event before.
func nextSecond() {
	now := time.Now()
	sleepUntil(now.Truncate(time.Second).Add(time.Second + 20*time.Millisecond))
}
