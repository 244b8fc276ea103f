package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   Flavor
		ok     bool
	}{
		{"/auth/envoy/", Envoy, true},
		{"/auth/envoy/app/x?y=1", Envoy, true},
		{"/auth/envoy//evil/../x", Envoy, true},
		{"/auth/envoy", 0, false}, // Envoy always forwards a path after the prefix
		{"/auth/envoyx/y", 0, false},
		{"/auth/%65nvoy/y", 0, false},
		{"/auth/nginx", Nginx, true},
		{"/auth/nginx?ignored=1", Nginx, true},
		{"/auth/nginx/", 0, false},
		{"/auth/forward", Forward, true},
		{"/auth/forward/x", 0, false},
		{"/auth/", 0, false},
		{"/metrics", 0, false},
	} {
		f, ok := Route(tc.target)
		if f != tc.want || ok != tc.ok {
			t.Errorf("Route(%q) = %v, %v; want %v, %v", tc.target, f, ok, tc.want, tc.ok)
		}
	}
}

// header builds an http.Header from "Name: value" pairs, repeats allowed.
func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestToRequest(t *testing.T) {
	const browser = "text/html,application/xhtml+xml"
	for _, tc := range []struct {
		name    string
		flavor  Flavor
		method  string
		target  string
		host    string
		remote  string
		headers http.Header
		trusted bool
		want    authz.Request // Headers not compared
	}{
		{
			name: "envoy: the check request is the original, prefix stripped", flavor: Envoy,
			method: "POST", target: "/auth/envoy/app/x?y=1", host: "App.Example.com:443", remote: "10.1.2.3:4567",
			headers: header("X-Forwarded-Proto", "https", "X-Forwarded-For", "198.51.100.7, 10.0.0.1", "X-Request-Id", "r1"),
			trusted: true,
			want: authz.Request{Host: "App.Example.com:443", Path: "/app/x?y=1", Method: "POST", Scheme: "https",
				SourceAddr: "10.0.0.1", RequestID: "r1"},
		},
		{
			name: "envoy: raw path kept, dot segments and all", flavor: Envoy,
			method: "GET", target: "/auth/envoy/a/../b/%2e%2e/c", host: "app", remote: "127.0.0.1:1",
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/a/../b/%2e%2e/c", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "envoy untrusted: scheme and source from forwarded headers ignored", flavor: Envoy,
			method: "GET", target: "/auth/envoy/", host: "app", remote: "203.0.113.9:1",
			headers: header("X-Forwarded-Proto", "http", "X-Forwarded-For", "10.9.9.9"),
			want:    authz.Request{Host: "app", Path: "/", Method: "GET", SourceAddr: "203.0.113.9"},
		},
		{
			name: "nginx: original URL from X-Original-* and X-Forwarded-*", flavor: Nginx,
			method: "GET", target: "/auth/nginx", host: "sessiongate", remote: "127.0.0.1:5555",
			headers: header("X-Original-URI", "/dash?tab=1", "X-Original-Method", "DELETE",
				"X-Forwarded-Host", "app.example.com:8443", "X-Forwarded-Proto", "http", "X-Forwarded-For", "192.0.2.1",
				// Caddy's names are not nginx's: ignored here.
				"X-Forwarded-Uri", "/public/x", "X-Forwarded-Method", "GET"),
			trusted: true,
			want: authz.Request{Host: "app.example.com:8443", Path: "/dash?tab=1", Method: "DELETE", Scheme: "http",
				SourceAddr: "192.0.2.1"},
		},
		{
			name: "forward: original URL from X-Forwarded-*", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app.example.com", remote: "[::1]:5555",
			headers: header("X-Forwarded-Uri", "/a%20b?c=d", "X-Forwarded-Method", "PUT",
				"X-Forwarded-Host", "app.example.com", "X-Forwarded-Proto", "https",
				// nginx's names are not Caddy's: ignored here.
				"X-Original-URI", "/public/x"),
			trusted: true,
			want: authz.Request{Host: "app.example.com", Path: "/a%20b?c=d", Method: "PUT", Scheme: "https",
				SourceAddr: "::1"},
		},
		{
			name: "forward: missing fields fall back to the request's own", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app.example.com", remote: "127.0.0.1:1",
			trusted: true,
			want:    authz.Request{Host: "app.example.com", Path: "/auth/forward", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "forward: unknown proto is no scheme", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "h", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Proto", "HTTPS, http"), trusted: true,
			want: authz.Request{Host: "h", Path: "/auth/forward", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "nginx untrusted: the request describes itself", flavor: Nginx,
			method: "GET", target: "/auth/nginx", host: "sessiongate:9002", remote: "203.0.113.9:1",
			headers: header("X-Original-URI", "/public/x", "X-Original-Method", "GET",
				"X-Forwarded-Host", "app.example.com", "X-Forwarded-Proto", "http", "X-Forwarded-For", "10.0.0.1"),
			want: authz.Request{Host: "sessiongate:9002", Path: "/auth/nginx", Method: "GET", SourceAddr: "203.0.113.9"},
		},
		{
			name: "forward untrusted: the request describes itself", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app.example.com", remote: "203.0.113.9:1",
			headers: header("X-Forwarded-Uri", "/logout", "X-Forwarded-Host", "other.example.com"),
			want:    authz.Request{Host: "app.example.com", Path: "/auth/forward", Method: "GET", SourceAddr: "203.0.113.9"},
		},
		{
			name: "forward: a repeated URI (a proxy that appends) is not believed", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Uri", "/public/x", "X-Forwarded-Uri", "/admin", "X-Forwarded-Host", "app.example.com"),
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/auth/forward", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "nginx: a URI joined with a comma on one line is not believed", flavor: Nginx,
			method: "GET", target: "/auth/nginx", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Original-URI", "/public/x, /admin", "X-Forwarded-Host", "app.example.com"),
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/auth/nginx", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "forward: a URI joined with a bare comma is not believed", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Uri", "/public/x,\t/admin", "X-Forwarded-Host", "app.example.com"),
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/auth/forward", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "forward: commas inside one URI are believed", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Uri", "/items/1,2?ids=a,b&next=%2F", "X-Forwarded-Host", "app.example.com"),
			trusted: true,
			want:    authz.Request{Host: "app.example.com", Path: "/items/1,2?ids=a,b&next=%2F", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "forward: a host or method joined with a comma is not believed", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Uri", "/x", "X-Forwarded-Host", "evil.example.com, app.example.com", "X-Forwarded-Method", "GET, POST"),
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/auth/forward", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "nginx: a repeated host is not believed", flavor: Nginx,
			method: "GET", target: "/auth/nginx", host: "gate", remote: "127.0.0.1:1",
			headers: header("X-Original-URI", "/x", "X-Forwarded-Host", "evil.example.com", "X-Forwarded-Host", "app.example.com"),
			trusted: true,
			want:    authz.Request{Host: "gate", Path: "/auth/nginx", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "envoy: a repeated proto is not believed", flavor: Envoy,
			method: "GET", target: "/auth/envoy/x", host: "app", remote: "127.0.0.1:1",
			headers: header("X-Forwarded-Proto", "http", "X-Forwarded-Proto", "https"),
			trusted: true,
			want:    authz.Request{Host: "app", Path: "/x", Method: "GET", SourceAddr: "127.0.0.1"},
		},
		{
			name: "unparsable peer address is kept as is", flavor: Forward,
			method: "GET", target: "/auth/forward", host: "h", remote: "@unix",
			want: authz.Request{Host: "h", Path: "/auth/forward", Method: "GET", SourceAddr: "@unix"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			r.Host, r.RemoteAddr = tc.host, tc.remote
			if tc.headers != nil {
				r.Header = tc.headers
			}
			r.Header.Set("Accept", browser)
			got := ToRequest(r, tc.flavor, tc.trusted)
			if got.Headers == nil || got.Headers.Get("accept") != browser {
				t.Errorf("headers not passed through: accept = %q", got.Headers.Get("accept"))
			}
			got.Headers = nil
			if got != tc.want {
				t.Errorf("ToRequest =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestToRequestAbsoluteForm(t *testing.T) {
	r := httptest.NewRequest("GET", "http://gate.internal/auth/envoy/x?y", nil)
	r.RemoteAddr = "127.0.0.1:1"
	if got := ToRequest(r, Envoy, true).Path; got != "/x?y" {
		t.Errorf("path = %q, want /x?y", got)
	}
}

func TestHeaders(t *testing.T) {
	h := Headers(header(
		"Cookie", "a=1", "Cookie", "b=2",
		"Authorization", "Bearer x", "Authorization", "Bearer y",
		"Accept", "text/html",
		"X-Api-Token", "t"))
	for name, want := range map[string]string{
		"cookie":         "a=1; b=2",
		"authorization":  "Bearer x,Bearer y", // ambiguous credentials fail verification
		"accept":         "text/html",
		"x-api-token":    "t",
		"sec-fetch-mode": "",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
	}
	if v, ok := authz.CookieValue(h.Get("cookie"), "b"); !ok || v != "2" {
		t.Errorf("cookie b from joined crumbs = %q, %v", v, ok)
	}
}
