package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

const (
	newCookie   = "__Host-sessiongate=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
	clearCookie = "__Host-sessiongate=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
	loginLoc    = "https://login.example.com/start?rd=https%3A%2F%2Fapp.example.com%2Fx"
	challenge   = `Bearer realm="sessiongate"`
)

var (
	allowSession = authz.Decision{Allow: true, Policy: "app", User: "alice",
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800, ExpiresIn: -1, SetCookie: []string{newCookie}}
	allowWarn = authz.Decision{Allow: true, Policy: "app", User: "alice",
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800, ExpiresIn: 0}
	allowBypass   = authz.Decision{Allow: true, Policy: "app", ExpiresIn: -1}
	denyRedirect  = authz.Decision{Reason: authz.ReasonIdleTimeout, Policy: "app", Status: 302, Location: loginLoc, ExpiresIn: -1}
	denyAPI       = authz.Decision{Reason: authz.ReasonNoToken, Policy: "app", Status: 401, Authenticate: challenge, ExpiresIn: -1}
	denyLogout    = authz.Decision{Reason: authz.ReasonSignedOut, Policy: "app", Status: 302, Location: "https://login.example.com/out", SetCookie: []string{clearCookie}, ExpiresIn: -1}
	denyUnknown   = authz.Decision{Reason: authz.ReasonUnknownHost, Status: 403, ExpiresIn: -1}
	denyStore     = authz.Decision{Reason: authz.ReasonStoreUnavailable, Policy: "app", Status: 503, ExpiresIn: -1}
	denyMalformed = authz.Decision{Reason: authz.ReasonInvalidToken, Policy: "app", ExpiresIn: -1} // no status
)

func TestWriteResponse(t *testing.T) {
	// want lists every header of the answer (Content-Length and Date aside).
	type want struct {
		status  int
		headers http.Header
		body    string
	}
	denyHeaders := func(reason string, kv ...string) http.Header {
		h := header(append([]string{"Cache-Control", "no-store", "X-Sessiongate-Reason", reason,
			"Content-Type", "text/plain; charset=utf-8", "X-Content-Type-Options", "nosniff"}, kv...)...)
		return h
	}
	for _, tc := range []struct {
		name   string
		flavor Flavor
		d      authz.Decision
		want   want
	}{
		{"envoy allow with a new session", Envoy, allowSession, want{200, header(
			"Cache-Control", "no-store", "Set-Cookie", newCookie,
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800",
			"X-Envoy-Auth-Headers-To-Remove", envoyRemoveWithUser), ""}},
		{"envoy allow in the warning window", Envoy, allowWarn, want{200, header(
			"Cache-Control", "no-store", "X-Sessiongate-Expires-In", "0",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800",
			"X-Envoy-Auth-Headers-To-Remove", envoyRemoveWithUser), ""}},
		{"envoy allow on a bypassed path removes every gate header", Envoy, allowBypass, want{200, header(
			"Cache-Control", "no-store",
			"X-Envoy-Auth-Headers-To-Remove", envoyRemoveAll), ""}},
		{"forward allow with a new session", Forward, allowSession, want{200, header(
			"Cache-Control", "no-store", "Set-Cookie", newCookie,
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800"), ""}},
		{"forward allow on a bypassed path sends empty upstream headers", Forward, allowBypass, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "", "X-Sessiongate-Session-Expires-At", "", "X-Sessiongate-Idle-Expires-At", ""), ""}},
		{"nginx allow on a bypassed path sends empty upstream headers", Nginx, allowBypass, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "", "X-Sessiongate-Session-Expires-At", "", "X-Sessiongate-Idle-Expires-At", ""), ""}},
		{"nginx allow in the warning window", Nginx, allowWarn, want{200, header(
			"Cache-Control", "no-store", "X-Sessiongate-Expires-In", "0",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800"), ""}},
		{"envoy login redirect", Envoy, denyRedirect, want{302,
			denyHeaders("idle_timeout", "Location", loginLoc), "idle_timeout\n"}},
		{"forward login redirect", Forward, denyRedirect, want{302,
			denyHeaders("idle_timeout", "Location", loginLoc), "idle_timeout\n"}},
		{"nginx login redirect is a 401 naming the redirect", Nginx, denyRedirect, want{401,
			denyHeaders("idle_timeout", "X-Sessiongate-Status", "302", "X-Sessiongate-Location", loginLoc), "idle_timeout\n"}},
		{"envoy API denial", Envoy, denyAPI, want{401,
			denyHeaders("no_token", "Www-Authenticate", challenge), "no_token\n"}},
		{"nginx API denial", Nginx, denyAPI, want{401,
			denyHeaders("no_token", "Www-Authenticate", challenge, "X-Sessiongate-Status", "401"), "no_token\n"}},
		{"forward sign-out clears the cookie", Forward, denyLogout, want{302,
			denyHeaders("signed_out", "Set-Cookie", clearCookie, "Location", "https://login.example.com/out"), "signed_out\n"}},
		{"nginx sign-out", Nginx, denyLogout, want{401,
			denyHeaders("signed_out", "Set-Cookie", clearCookie, "X-Sessiongate-Status", "302",
				"X-Sessiongate-Location", "https://login.example.com/out"), "signed_out\n"}},
		{"nginx unknown host stays 403", Nginx, denyUnknown, want{403,
			denyHeaders("unknown_host", "X-Sessiongate-Status", "403"), "unknown_host\n"}},
		{"forward unknown host", Forward, denyUnknown, want{403, denyHeaders("unknown_host"), "unknown_host\n"}},
		{"nginx store outage is a 401 naming 503", Nginx, denyStore, want{401,
			denyHeaders("store_unavailable", "X-Sessiongate-Status", "503"), "store_unavailable\n"}},
		{"envoy store outage", Envoy, denyStore, want{503, denyHeaders("store_unavailable"), "store_unavailable\n"}},
		{"a denial without a status is a 403, never a 2xx", Forward, denyMalformed, want{403,
			denyHeaders("invalid_token"), "invalid_token\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			d := tc.d
			WriteResponse(rec, tc.flavor, &d)
			res := rec.Result()
			if res.StatusCode != tc.want.status {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.want.status)
			}
			if !reflect.DeepEqual(res.Header, tc.want.headers) {
				t.Errorf("headers =\n  %v\nwant\n  %v", res.Header, tc.want.headers)
			}
			if got := rec.Body.String(); got != tc.want.body {
				t.Errorf("body = %q, want %q", got, tc.want.body)
			}
		})
	}
}

// TestEmptyHeadersOnTheWire: the empty upstream headers of an allow without
// a session must reach the proxy as present-but-empty fields, which is what
// makes Caddy and Traefik overwrite a client's copies.
func TestEmptyHeadersOnTheWire(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		d := allowBypass
		WriteResponse(w, Forward, &d)
	}))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, k := range []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry} {
		if v, ok := res.Header[k]; !ok || len(v) != 1 || v[0] != "" {
			t.Errorf("%s on the wire = %q (present %v), want one empty value", k, v, ok)
		}
	}
}
