package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestHostileInput: oversized headers, cookies, tokens and paths, CR/LF and
// controls in hosts, paths and headers, and thousands of cookies each get a
// denial with the reason that names the problem (or go through, where the
// input is merely odd) over real gRPC, never a transport error, never a
// header that could be split, and never a Location off the request's host.
// The limits are those of docs/hardening.md.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app":     pol{Hosts: []string{"app.test"}, LogoutPath: "/logout", Bypass: []string{"/public/"}, From: []string{"header:authorization", "cookie:access_token"}}.yaml(),
		"default": pol{Hosts: []string{"*"}}.yaml(),
	})
	tok := s.token(t, "alice")
	c := s.client(t)
	r := c.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)
	session := "cookie: " + cookieName + "=" + cookie
	many := strings.Repeat("c=1; ", 5000)
	mib := strings.Repeat("a", 1<<20)

	tests := []struct {
		name, host, path, token string
		browser                 bool
		extra                   []string
		reason                  string // "" for an allow
	}{
		{"1 MiB bearer token", "app.test", "/", mib, false, nil, "invalid_token"},
		{"1 MiB token in a cookie", "app.test", "/", "", false, []string{"cookie: access_token=" + mib}, "invalid_token"},
		{"1 MiB cookie header", "app.test", "/", "", true, []string{"cookie: x=" + mib}, "no_token"},
		{"1 MiB of other headers", "app.test", "/", tok, false, []string{"x-big: " + mib, session}, ""},
		{"2 MiB path of controls", "app.test", "/" + strings.Repeat("\x01", 2<<20), "", true, nil, "no_token"},
		{"5000 cookies before the session", "app.test", "/", tok, false, []string{"cookie: " + many + cookieName + "=" + cookie}, ""},
		{"5000 cookies before the token", "app.test", "/", "", false, []string{"cookie: " + many + "access_token=" + tok}, ""},
		{"5000 session cookies, all made up", "app.test", "/", "", true, []string{"cookie: " + strings.Repeat(cookieName+"=x; ", 5000)}, "no_token"},
		// Not a plain host[:port]: no policy, not even the default one
		// (a lax parse used to pick app.test's policy for these).
		{"CR/LF in the host", "app.test\r\nSet-Cookie: evil=1", "/", tok, true, nil, "unknown_host"},
		{"userinfo after the port", "app.test:80@evil.com", "/", tok, true, nil, "unknown_host"},
		{"non-numeric port", "app.test:abc", "/", tok, true, nil, "unknown_host"},
		{"empty port", "app.test:", "/", tok, true, nil, "unknown_host"},
		{"a second host after a comma", "app.test,evil.com", "/", tok, true, nil, "unknown_host"},
		{"CR/LF in the path", "app.test", "/x\r\nSet-Cookie: evil=1", "", true, nil, "no_token"},
		{"encoded CR/LF in the path", "app.test", "/x%0d%0aSet-Cookie:%20evil=1", "", true, nil, "no_token"},
		{"controls in the path", "app.test", "/\x00\x07\x1b\x7f?q=\t", "", true, nil, "no_token"},
		{"CR/LF after the token", "app.test", "/", tok + "\r\nx-injected: 1", false, nil, "invalid_token"},
		{"CR/LF in a cookie", "app.test", "/", "", true, []string{"cookie: access_token=x\r\nSet-Cookie: evil=1"}, "invalid_token"},
		{"bypass smuggled with CR/LF", "app.test", "/public/\r\n../admin", "", false, nil, "no_token"},
		{"bypass smuggled with a tab", "app.test", "/public/\t../admin", "", false, nil, "no_token"},
		{"logout with a hostile path", "app.test", "/logout\r\nx: y", "", true, nil, "no_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.apiClient(t).Check(tc.host, tc.path, tc.token, tc.browser, tc.extra...)
			wantSafe(t, r, tc.host)
			switch {
			case tc.reason == "" && !r.Allowed:
				t.Fatalf("want allowed, got %v", r)
			case tc.reason != "" && (r.Allowed || r.Reason != tc.reason):
				t.Fatalf("want denied %s, got %.300v", tc.reason, r)
			}
		})
	}
	if !strings.Contains(s.stderr.String(), "token rejected") {
		t.Error("the rejected tokens were not logged (at debug)")
	}
}

// wantSafe asserts what every answer to a hostile request must hold: no
// header value that could split a header, and a login redirect that only
// leads back to the request's own host.
func wantSafe(t *testing.T, r result, host string) {
	t.Helper()
	for k, v := range r.Client {
		if strings.ContainsAny(k+v, "\r\n\x00") {
			t.Errorf("client header %q = %.200q could split the response", k, v)
		}
	}
	for _, v := range append(r.SetCookies, mapValues(r.Upstream)...) {
		if strings.ContainsAny(v, "\r\n\x00") || strings.Contains(v, "evil") {
			t.Errorf("header value %.200q carries injected content", v)
		}
	}
	if r.Location == "" || !strings.HasPrefix(r.Location, loginURL) {
		return
	}
	if len(r.Location) > 16<<10 {
		t.Errorf("Location of %d bytes", len(r.Location))
	}
	u, err := url.Parse(r.Location)
	if err != nil {
		t.Fatalf("Location %.200q: %v", r.Location, err)
	}
	if rd := u.Query().Get("rd"); rd != "" {
		ret, err := url.Parse(rd)
		if err != nil || ret.Host != strings.ToLower(host) || ret.User != nil {
			t.Errorf("return URL %.200q does not lead back to %q", rd, host)
		}
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestHostileRawHeaders: Envoy with encode_raw_headers sends header values
// as raw bytes (header_map), so non-UTF-8 reaches the gate as it was sent:
// it is denied with a reason like any other malformed input.
func TestHostileRawHeaders(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	tok := s.token(t, "alice")
	send := func(kv ...string) result {
		t.Helper()
		hm := &corev3.HeaderMap{}
		for i := 0; i+1 < len(kv); i += 2 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		r, err := s.client(t).send(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", HeaderMap: hm}}}})
		if err != nil {
			t.Fatalf("gRPC error: %v", err)
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		kv     []string
		reason string
	}{
		{"non-UTF-8 host", []string{":authority", "app.\xff\xfe", ":path", "/", "authorization", "Bearer " + tok}, "unknown_host"},
		{"non-UTF-8 path", []string{":authority", "app.test", ":path", "/\xc3\x28/\xff?q=\xfe", "accept", "text/html"}, "no_token"},
		{"non-UTF-8 token", []string{":authority", "app.test", ":path", "/", "authorization", "Bearer \xff" + tok}, "invalid_token"},
		{"non-UTF-8 cookie", []string{":authority", "app.test", ":path", "/", "cookie", cookieName + "=\xff\xfe\xfd", "authorization", "Bearer " + tok}, ""},
		{"Latin-1 header", []string{":authority", "app.test", ":path", "/", "x-name", "Espa\xf1a", "authorization", "Bearer " + tok}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := send(tc.kv...)
			wantSafe(t, r, "app.test")
			if (tc.reason == "") != r.Allowed || r.Reason != tc.reason {
				t.Fatalf("want reason %q, got %v", tc.reason, r)
			}
		})
	}
}

// TestHostileTokens: deeply nested and enormous JWT JSON. Within max_bytes,
// nesting the JSON decoder can take is harmless; past its depth limit, or
// past max_bytes, the token is invalid_token. Nothing crashes the gate.
func TestHostileTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}}.yaml(),
		"big": pol{Hosts: []string{"big.test"}, TokenExtra: "  max_bytes: 1048576\n"}.yaml(),
	})
	nested := func(depth int, sub string) string {
		t.Helper()
		c, err := json.Marshal(baseClaims(sub))
		if err != nil {
			t.Fatal(err)
		}
		payload := append([]byte(`{"deep":`+strings.Repeat("[", depth)+strings.Repeat("]", depth)+","), c[1:]...)
		tok, err := s.idp.MintRaw(payload)
		if err != nil {
			t.Fatal(err)
		}
		s.remember(tok)
		return tok
	}
	api := s.apiClient(t)
	wantAllowed(t, api.Check("app.test", "/", nested(5000, "nest5k"), false))
	wantAPIDenied(t, api.Check("app.test", "/", nested(8000, "nest8k"), false), "invalid_token", false) // > 16 KiB
	wantAPIDenied(t, api.Check("big.test", "/", nested(300_000, "nest300k"), false), "invalid_token", false)
	wantAllowed(t, api.Check("big.test", "/", s.token(t, "padded", claim("pad", strings.Repeat("p", 700<<10))), false))
	wantAPIDenied(t, api.Check("big.test", "/", s.token(t, "huge", claim("pad", strings.Repeat("p", 1<<20))), false), "invalid_token", false)
	many := map[string]any{}
	for i := range 20_000 {
		many[fmt.Sprintf("c%d", i)] = i
	}
	wantAllowed(t, api.Check("big.test", "/", s.token(t, "manyclaims", func(c map[string]any) {
		for k, v := range many {
			c[k] = v
		}
	}), false))
}

// TestHostileMessages: a CheckRequest over the gRPC limit (8 MiB) is refused
// by the transport with RESOURCE_EXHAUSTED, and one whose string fields are
// not UTF-8 (no current Envoy sends that: it sanitizes, or uses header_map)
// with INTERNAL; either way Envoy denies (failure_mode_allow: false), and
// the gate goes on answering.
func TestHostileMessages(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	tok := s.token(t, "alice")
	c := s.apiClient(t)

	_, err := c.try("app.test", "/", tok, false, "x-big: "+strings.Repeat("a", 9<<20))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 9 MiB request: %v, want RESOURCE_EXHAUSTED", err)
	}
	r, err := c.try("app.test", "/", tok, false, "x-big: "+strings.Repeat("a", 7<<20))
	if err != nil || !r.Allowed {
		t.Errorf("a 7 MiB request (under the limit): %v %v", r, err)
	}

	const mark = "PLACEHOLDER"
	b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Host: "app.test", Path: "/" + mark, Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(b, []byte(mark), []byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5"), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []byte
	err = s.conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", bad, &out, grpc.ForceCodecV2(rawCodec{}))
	if code := status.Code(err); code != codes.Internal {
		t.Errorf("a request with invalid UTF-8 in a string field: %v, want INTERNAL", err)
	}
	wantAllowed(t, c.Check("app.test", "/", tok, false))
	if st, err := s.healthStatus(""); err != nil || st.String() != "SERVING" {
		t.Errorf("health after hostile messages: %v %v", st, err)
	}
}

// rawCodec sends bytes as they are, so that a test can send what the proto
// codec would refuse to marshal.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
