package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
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
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800, SetCookie: []string{newCookie}}
	allowWarn = authz.Decision{Allow: true, Policy: "app", User: "alice",
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800, Warn: true, ExpiresIn: 0}
	allowBypass   = authz.Decision{Allow: true, Policy: "app"}
	denyRedirect  = authz.Decision{Reason: authz.ReasonIdleTimeout, Policy: "app", Status: 302, Location: loginLoc}
	denyAPI       = authz.Decision{Reason: authz.ReasonNoToken, Policy: "app", Status: 401, Authenticate: challenge}
	denyLogout    = authz.Decision{Reason: authz.ReasonSignedOut, Policy: "app", Status: 302, Location: "https://login.example.com/out", SetCookie: []string{clearCookie}}
	denyUnknown   = authz.Decision{Reason: authz.ReasonUnknownHost, Status: 403}
	denyStore     = authz.Decision{Reason: authz.ReasonStoreUnavailable, Policy: "app", Status: 503}
	denyMalformed = authz.Decision{Reason: authz.ReasonInvalidToken, Policy: "app"} // no status
	allowSignIn   = authz.Decision{Allow: true, Policy: "app", User: "alice",
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800,
		Upstream:     []authz.Header{{Name: "authorization", Value: "Bearer at"}, {Name: "x-sessiongate-email", Value: "a@example.com"}},
		StripCookies: true, UpstreamCookie: "theme=dark"}
	allowSignInNoCookie = authz.Decision{Allow: true, Policy: "app", User: "alice",
		SessionExpiresAt: 1700003600, IdleExpiresAt: 1700001800,
		Upstream: []authz.Header{{Name: "authorization", Value: "Bearer at"}}, StripCookies: true}
	pageHTML = `<!doctype html><p>Please sign in with your credentials</p>`
	denyPage = authz.Decision{Reason: authz.ReasonReauthNotPerformed, Policy: "app", Status: 403,
		Body: pageHTML, ContentType: authz.ContentTypeHTML}
	denyPageJSON = authz.Decision{Reason: authz.ReasonSignInFailed, Policy: "app", Status: 400,
		Body: `{"error":"sign_in_failed"}`, ContentType: authz.ContentTypeJSON}
	denyPageOutage = authz.Decision{Reason: authz.ReasonProviderUnavailable, Policy: "app", Status: 503,
		Body: pageHTML, ContentType: authz.ContentTypeHTML}
)

// emptyFinal lists the headers nginx, Caddy and Traefik copy whatever the
// gate answers, empty: Authorization, the cookie header (Cookie, or
// X-Sessiongate-Cookie for nginx) and the default identity headers.
func emptyFinal(cookie string) []string {
	return []string{"Authorization", "", cookie, "", "X-Sessiongate-Name", "", "X-Sessiongate-Email", "", "X-Sessiongate-Groups", ""}
}

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
		{"forward allow with a new session", Forward, allowSession, want{200, header(append([]string{
			"Cache-Control", "no-store", "Set-Cookie", newCookie,
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800"}, emptyFinal("Cookie")...)...), ""}},
		{"forward allow on a bypassed path sends empty upstream headers", Forward, allowBypass, want{200, header(append([]string{
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "", "X-Sessiongate-Session-Expires-At", "", "X-Sessiongate-Idle-Expires-At", ""},
			emptyFinal("Cookie")...)...), ""}},
		{"nginx allow on a bypassed path sends empty upstream headers", Nginx, allowBypass, want{200, header(append([]string{
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "", "X-Sessiongate-Session-Expires-At", "", "X-Sessiongate-Idle-Expires-At", ""},
			emptyFinal("X-Sessiongate-Cookie")...)...), ""}},
		{"nginx allow in the warning window", Nginx, allowWarn, want{200, header(append([]string{
			"Cache-Control", "no-store", "X-Sessiongate-Expires-In", "0",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800"}, emptyFinal("X-Sessiongate-Cookie")...)...), ""}},
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
		{"envoy allow with a sign-in", Envoy, allowSignIn, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800",
			"Authorization", "Bearer at", "X-Sessiongate-Email", "a@example.com", "Cookie", "theme=dark",
			"X-Envoy-Auth-Headers-To-Remove", envoyRemoveWithUser), ""}},
		{"envoy allow with a sign-in and only the gate's cookies", Envoy, allowSignInNoCookie, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800", "Authorization", "Bearer at",
			"X-Envoy-Auth-Headers-To-Remove", envoyRemoveWithUser+", cookie"), ""}},
		{"nginx allow with a sign-in", Nginx, allowSignIn, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800",
			"Authorization", "Bearer at", "X-Sessiongate-Email", "a@example.com", "X-Sessiongate-Cookie", "theme=dark",
			"X-Sessiongate-Name", "", "X-Sessiongate-Groups", ""), ""}},
		{"forward allow with a sign-in", Forward, allowSignIn, want{200, header(
			"Cache-Control", "no-store",
			"X-Sessiongate-User", "alice", "X-Sessiongate-Session-Expires-At", "1700003600",
			"X-Sessiongate-Idle-Expires-At", "1700001800",
			"Authorization", "Bearer at", "X-Sessiongate-Email", "a@example.com", "Cookie", "theme=dark",
			"X-Sessiongate-Name", "", "X-Sessiongate-Groups", ""), ""}},
		{"envoy denial with a page", Envoy, denyPage, want{403, header("Cache-Control", "no-store",
			"X-Sessiongate-Reason", "reauth_not_performed", "Content-Type", authz.ContentTypeHTML,
			"X-Content-Type-Options", "nosniff"), pageHTML}},
		{"forward denial with a JSON page", Forward, denyPageJSON, want{400, header("Cache-Control", "no-store",
			"X-Sessiongate-Reason", "sign_in_failed", "Content-Type", authz.ContentTypeJSON,
			"X-Content-Type-Options", "nosniff"), `{"error":"sign_in_failed"}`}},
		{"nginx denial with a page: 403 naming the page", Nginx, denyPage, want{403, header("Cache-Control", "no-store",
			"X-Sessiongate-Reason", "reauth_not_performed", "Content-Type", authz.ContentTypeHTML,
			"X-Content-Type-Options", "nosniff", "X-Sessiongate-Status", "403",
			"X-Sessiongate-Page", pageHTML, "X-Sessiongate-Page-Type", authz.ContentTypeHTML), pageHTML}},
		{"nginx 400 page is a 401 naming 400", Nginx, denyPageJSON, want{401, header("Cache-Control", "no-store",
			"X-Sessiongate-Reason", "sign_in_failed", "Content-Type", authz.ContentTypeJSON,
			"X-Content-Type-Options", "nosniff", "X-Sessiongate-Status", "400",
			"X-Sessiongate-Page", `{"error":"sign_in_failed"}`, "X-Sessiongate-Page-Type", authz.ContentTypeJSON), `{"error":"sign_in_failed"}`}},
		{"nginx 503 page is a 401 naming 503", Nginx, denyPageOutage, want{401, header("Cache-Control", "no-store",
			"X-Sessiongate-Reason", "provider_unavailable", "Content-Type", authz.ContentTypeHTML,
			"X-Content-Type-Options", "nosniff", "X-Sessiongate-Status", "503",
			"X-Sessiongate-Page", pageHTML, "X-Sessiongate-Page-Type", authz.ContentTypeHTML), pageHTML}},
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
	for _, k := range []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, "Authorization", "Cookie", "X-Sessiongate-Name"} {
		if v, ok := res.Header[k]; !ok || len(v) != 1 || v[0] != "" {
			t.Errorf("%s on the wire = %q (present %v), want one empty value", k, v, ok)
		}
	}
}

// TestFinalUpstreamHeaders: nginx, Caddy and Traefik overwrite Authorization
// and Cookie from the answer whether the gate sends them or not, so the
// answer carries the request's own where the decision changes nothing, and
// the stripped cookies where it does (S15).
func TestFinalUpstreamHeaders(t *testing.T) {
	orig := header("Authorization", "Bearer client", "Cookie", "__Host-sessiongate=sid; theme=dark")
	orig.Add("Cookie", "lang=en")
	for _, tc := range []struct {
		name       string
		flavor     Flavor
		d          authz.Decision
		auth       string
		cookieName string
		cookie     string
	}{
		{"nginx, token mode: the request's own", Nginx, allowSession, "Bearer client", HeaderCookie, "__Host-sessiongate=sid; theme=dark; lang=en"},
		{"forward, token mode: the request's own", Forward, allowSession, "Bearer client", "Cookie", "__Host-sessiongate=sid; theme=dark; lang=en"},
		{"nginx, sign-in: the gate's", Nginx, allowSignIn, "Bearer at", HeaderCookie, "theme=dark"},
		{"forward, sign-in: the gate's", Forward, allowSignIn, "Bearer at", "Cookie", "theme=dark"},
		{"forward, sign-in, nothing left: no cookie", Forward, allowSignInNoCookie, "Bearer at", "Cookie", ""},
		{"envoy: only what the decision sets", Envoy, allowSession, "", "Cookie", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			d := tc.d
			writeResponse(rec, tc.flavor, &d, orig)
			h := rec.Result().Header
			// Envoy gets only what the decision sets; the others always
			// get both, empty when there is nothing.
			want := func(v string) []string {
				if tc.flavor == Envoy && v == "" {
					return nil
				}
				return []string{v}
			}
			if got := h.Values("Authorization"); !reflect.DeepEqual(got, want(tc.auth)) {
				t.Errorf("Authorization = %q, want %q", got, want(tc.auth))
			}
			if got := h.Values(tc.cookieName); !reflect.DeepEqual(got, want(tc.cookie)) {
				t.Errorf("%s = %q, want %q", tc.cookieName, got, want(tc.cookie))
			}
			if tc.flavor == Nginx && h.Get("Cookie") != "" {
				t.Errorf("nginx answer carries Cookie %q; it reads %s", h.Get("Cookie"), HeaderCookie)
			}
		})
	}
}

// TestHeaderNamesFollowAuthz: the canonical spellings here are authz's
// header names, which own them.
func TestHeaderNamesFollowAuthz(t *testing.T) {
	mine := []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, HeaderExpiresIn, HeaderReason}
	gate := authz.GateHeaders()
	if len(mine) != len(gate) {
		t.Fatalf("forwardauth names %d gate headers, authz %d", len(mine), len(gate))
	}
	for i, h := range gate {
		if mine[i] != http.CanonicalHeaderKey(h) {
			t.Errorf("%q is not the canonical form of authz's %q", mine[i], h)
		}
	}
}

// TestUnsetIdentityHeadersRemoved (S10): an identity header the sign-in
// has no value for (the claim is absent, or its value dropped because no
// header can carry it) is listed for Envoy to remove, so that a client-sent
// copy never reaches the application; the other proxies get it empty.
func TestUnsetIdentityHeadersRemoved(t *testing.T) {
	d := authz.Decision{Allow: true, User: "alice", Upstream: []authz.Header{
		{Name: authz.HeaderEmail, Value: "a@example.com"}, {Name: authz.HeaderGroups}, {Name: "x-tenant"}}}
	orig := header("X-Sessiongate-Groups", "admins", "X-Tenant", "other")
	for _, f := range []Flavor{Envoy, Nginx, Forward} {
		rec := httptest.NewRecorder()
		writeResponse(rec, f, &d, orig)
		h := rec.Result().Header
		if h.Get("X-Sessiongate-Email") != "a@example.com" {
			t.Errorf("%v: email %q", f, h.Get("X-Sessiongate-Email"))
		}
		if f == Envoy {
			remove := h.Get(HeaderEnvoyRemove)
			for _, name := range []string{authz.HeaderGroups, "x-tenant"} {
				if !strings.Contains(remove, name) || h.Values(name) != nil {
					t.Errorf("envoy: %s not removed (remove %q, set %q)", name, remove, h.Values(name))
				}
			}
			continue
		}
		for _, name := range []string{"X-Sessiongate-Groups", "X-Tenant"} {
			if v := h.Values(name); len(v) != 1 || v[0] != "" {
				t.Errorf("%v: %s = %q, want it present and empty", f, name, v)
			}
		}
	}
}
