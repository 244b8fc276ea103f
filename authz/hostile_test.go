package authz

import (
	"slices"
	"strings"
	"testing"
)

// TestHostileInput: oversized, malformed and injected input gets a denial
// with the reason that names the problem (or an allow where the input is
// merely odd), a bounded response, and never a header that could split.
func TestHostileInput(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	many := strings.Repeat("c=1; ", 10_000)
	tests := []struct {
		name  string
		r     req
		allow bool
		want  Reason
	}{
		{"token over max_bytes", req{token: strings.Repeat("a", 16<<10+1)}, false, ReasonInvalidToken},
		{"token of 4 MiB", req{token: strings.Repeat("a", 4<<20), browser: true}, false, ReasonInvalidToken},
		{"cookie token over max_bytes", req{cookies: "access_token=" + strings.Repeat("a", 64<<10)}, false, ReasonInvalidToken},
		{"ten thousand cookies, then the session", req{token: raw, cookies: many + cookieName + "=" + cookie}, true, ReasonNone},
		{"ten thousand cookies, then the token", req{cookies: many + "access_token=" + raw, cookie: cookie}, true, ReasonNone},
		{"a 1 MiB cookie header", req{cookies: strings.Repeat("x", 1<<20)}, false, ReasonNoToken},
		{"session cookie too long", req{token: raw, cookie: cookie + strings.Repeat("A", 1<<16)}, true, ReasonNone},
		{"CR/LF in the host", req{host: appHost + "\r\nSet-Cookie: a=b", token: raw}, false, ReasonUnknownHost},
		{"NUL in the host", req{host: appHost + "\x00", token: raw}, false, ReasonUnknownHost},
		{"non-UTF-8 host", req{host: "app.\xff.com", browser: true}, false, ReasonUnknownHost},
		{"CR/LF in the path", req{path: "/a\r\nLocation: https://evil.example", browser: true}, false, ReasonNoToken},
		{"every control byte in the path", req{path: "/" + controls(), browser: true}, false, ReasonNoToken},
		{"non-UTF-8 path and query", req{path: "/\xc3\x28/\xff?q=\xfe", browser: true}, false, ReasonNoToken},
		{"a 1 MiB path", req{path: "/" + strings.Repeat("\x01", 1<<20), browser: true}, false, ReasonNoToken},
		{"CR/LF in the bearer token", req{headers: map[string]string{"authorization": "Bearer " + raw + "\r\nx: y"}}, false, ReasonInvalidToken},
		{"non-UTF-8 token", req{token: "\xff\xfe.\x00.\x80"}, false, ReasonInvalidToken},
		{"bypass smuggled with a tab", req{path: "/public/\t../admin"}, false, ReasonNoToken},
		{"bypass smuggled with CR/LF", req{path: "/public/\r\n../admin"}, false, ReasonNoToken},
		{"bypass with a DEL", req{path: "/public/\x7f"}, false, ReasonNoToken},
		// Two forwarded URIs joined on one line by a proxy that appends.
		{"bypass joined with a comma", req{path: "/public/x, /admin"}, false, ReasonNoToken},
		{"bypass joined with a bare comma", req{path: "/public/x,/admin"}, false, ReasonNoToken},
		{"bypass with a space", req{path: "/public/x /admin"}, false, ReasonNoToken},
		{"plain bypass", req{path: "/public/x"}, true, ReasonNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := h.check(tc.r)
			if d.Allow != tc.allow || d.Reason != tc.want {
				t.Fatalf("got %s, want allow=%v reason %s", describe(d), tc.allow, tc.want)
			}
			for _, v := range append([]string{d.Location, d.Authenticate, d.User}, d.SetCookie...) {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Errorf("header value %q could split the response", v)
				}
			}
			if len(d.Location) > 16<<10 {
				t.Errorf("Location of %d bytes", len(d.Location))
			}
		})
	}
}

func controls() string {
	var b strings.Builder
	for c := 0; c < 0x20; c++ {
		b.WriteByte(byte(c))
	}
	b.WriteByte(0x7f)
	return b.String()
}

// TestLongReturnURLFallsBackToTheRoot: a path too long to carry back through
// the login page returns the user to the host's root instead.
func TestLongReturnURLFallsBackToTheRoot(t *testing.T) {
	for _, path := range []string{"/" + strings.Repeat("a", maxReturnURL), "/" + strings.Repeat("\x01", maxReturnURL/3+1), "/?q=" + strings.Repeat("é", maxReturnURL/4)} {
		if got := ReturnURL(&Request{Host: "App.Example.com", Path: path}); got != "https://app.example.com/" {
			t.Errorf("ReturnURL of a %d-byte path = %.60q…", len(path), got)
		}
	}
	if got := ReturnURL(&Request{Host: "app.example.com", Path: "/" + strings.Repeat("a", maxReturnURL-len("https://app.example.com/"))}); len(got) != maxReturnURL {
		t.Errorf("a return URL of exactly the limit was cut: %d bytes", len(got))
	}
}

// TestUpstreamHeadersUnsetIdentityHeaders (S10): every identity header of
// a sign-in policy goes into the decision: with the grant's value, or empty
// (for adapters to remove a client-sent copy) when the grant has none, as
// when the provider's value held a byte no header can carry.
func TestUpstreamHeadersUnsetIdentityHeaders(t *testing.T) {
	p := &Policy{Upstream: Upstream{AccessToken: "authorization", IdentityHeaders: []string{HeaderEmail, HeaderGroups, HeaderName}}}
	g := &Grant{AccessToken: "at", Headers: []Header{{Name: HeaderEmail, Value: "a@example.com"}}}
	got := upstreamHeaders(p, g)
	want := []Header{{Name: "authorization", Value: "Bearer at"}, {Name: HeaderEmail, Value: "a@example.com"},
		{Name: HeaderGroups}, {Name: HeaderName}}
	if !slices.Equal(got, want) {
		t.Errorf("upstreamHeaders = %q, want %q", got, want)
	}
}
