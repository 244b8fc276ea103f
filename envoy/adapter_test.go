package envoy

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/sessiongate/sessiongate/authz"
)

func over(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

func add(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}
}

func okResp(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
}

func deniedResp(code int32, reason string, httpStatus int32, headers ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &status.Status{Code: code, Message: reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(httpStatus)},
			Headers: append([]*corev3.HeaderValueOption{over("cache-control", "no-store"), over(HeaderReason, reason)}, headers...),
			Body:    reason + "\n",
		}},
	}
}

func withMessage(r *authv3.CheckResponse, msg string) *authv3.CheckResponse {
	r.Status.Message = msg
	return r
}

func withBody(r *authv3.CheckResponse, body string) *authv3.CheckResponse {
	r.GetDeniedResponse().Body = body
	return r
}

// TestToResponse pins the CheckResponse conventions of DESIGN §2 for every
// shape of decision: what Envoy does with the answer depends on each field.
func TestToResponse(t *testing.T) {
	const cookie = "__Host-sessiongate=abc; Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Lax"
	const clear = "__Host-sessiongate=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
	allRemoved := []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, HeaderExpiresIn, HeaderReason}
	if !slices.Equal(removeAll[:len(allRemoved)], allRemoved) || !slices.Equal(removeWithUser[:2], allRemoved[3:]) {
		t.Fatalf("headers to remove: %v / %v", removeAll, removeWithUser)
	}
	identity := []*corev3.HeaderValueOption{over(HeaderUser, "alice"),
		over(HeaderSessionExpiry, "1767225600"), over(HeaderIdleExpiry, "1767198600")}
	live := authz.Decision{Allow: true, Policy: "app", User: "alice", SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600}
	with := func(d authz.Decision, f func(*authz.Decision)) authz.Decision { f(&d); return d }
	tests := []struct {
		name string
		d    authz.Decision
		want *authv3.CheckResponse
	}{
		{"allow with a session", live, okResp(&authv3.OkHttpResponse{
			Headers: identity, HeadersToRemove: removeWithUser})},
		{"allow opening a session inside the warning window",
			with(live, func(d *authz.Decision) { d.Warn, d.ExpiresIn, d.SetCookie = true, 0, []string{cookie} }),
			okResp(&authv3.OkHttpResponse{Headers: identity, HeadersToRemove: removeWithUser,
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{over(HeaderExpiresIn, "0"), add("set-cookie", cookie)}})},
		{"allow on a bypass path", authz.Decision{Allow: true, Policy: "app"},
			okResp(&authv3.OkHttpResponse{HeadersToRemove: removeAll})},
		{"dry-run denial with cookies", authz.Decision{Allow: true, DryRun: true, Reason: authz.ReasonIdleTimeout, Policy: "app",
			SetCookie: []string{clear, cookie}},
			withMessage(okResp(&authv3.OkHttpResponse{HeadersToRemove: removeAll,
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{add("set-cookie", clear), add("set-cookie", cookie)}}),
				"dry_run_deny: idle_timeout")},
		{"302 to the login page", authz.Decision{Reason: authz.ReasonNoToken, Policy: "app", Status: 302,
			Location: "https://login.example.com/start?rd=x"},
			deniedResp(16, "no_token", 302, over("location", "https://login.example.com/start?rd=x"))},
		{"401 ending a session", authz.Decision{Reason: authz.ReasonIdleTimeout, Policy: "app", Status: 401,
			Authenticate: `Bearer realm="sessiongate"`, SetCookie: []string{clear}},
			deniedResp(16, "idle_timeout", 401, over("www-authenticate", `Bearer realm="sessiongate"`), add("set-cookie", clear))},
		{"302 with every header and two cookies", authz.Decision{Reason: authz.ReasonSignedOut, Policy: "app", Status: 302,
			Location: "https://x/", Authenticate: "Bearer", SetCookie: []string{clear, cookie}},
			deniedResp(16, "signed_out", 302, over("location", "https://x/"), over("www-authenticate", "Bearer"),
				add("set-cookie", clear), add("set-cookie", cookie))},
		{"unknown host", authz.Decision{Reason: authz.ReasonUnknownHost, Status: 403},
			deniedResp(7, "unknown_host", 403)},
		{"store unavailable", authz.Decision{Reason: authz.ReasonStoreUnavailable, Policy: "app", Status: 503},
			deniedResp(16, "store_unavailable", 503)},
		{"allow with a sign-in: access token, identity headers, cookies stripped",
			with(live, func(d *authz.Decision) {
				d.Upstream = []authz.Header{{Name: "authorization", Value: "Bearer at"}, {Name: "x-sessiongate-email", Value: "a@example.com"}}
				d.StripCookies, d.UpstreamCookie = true, "theme=dark"
			}),
			okResp(&authv3.OkHttpResponse{Headers: append(slices.Clone(identity), over("authorization", "Bearer at"),
				over("x-sessiongate-email", "a@example.com"), over("cookie", "theme=dark")), HeadersToRemove: removeWithUser})},
		{"allow with a sign-in and only the gate's cookies: cookie removed",
			with(live, func(d *authz.Decision) {
				d.Upstream = []authz.Header{{Name: "authorization", Value: "Bearer at"}}
				d.StripCookies = true
			}),
			okResp(&authv3.OkHttpResponse{Headers: append(slices.Clone(identity), over("authorization", "Bearer at")),
				HeadersToRemove: append(slices.Clone(removeWithUser), "cookie")})},
		{"denial with a page", authz.Decision{Reason: authz.ReasonReauthNotPerformed, Policy: "app", Status: 403,
			Body: "<p>again</p>", ContentType: authz.ContentTypeHTML},
			withBody(deniedResp(16, "reauth_not_performed", 403, over("content-type", authz.ContentTypeHTML),
				over("x-content-type-options", "nosniff")), "<p>again</p>")},
		{"denial with a page and a cookie", authz.Decision{Reason: authz.ReasonSignInFailed, Policy: "app", Status: 400,
			SetCookie: []string{clear}, Body: `{"error":"sign_in_failed"}`, ContentType: authz.ContentTypeJSON},
			withBody(deniedResp(16, "sign_in_failed", 400, add("set-cookie", clear), over("content-type", authz.ContentTypeJSON),
				over("x-content-type-options", "nosniff")), `{"error":"sign_in_failed"}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ToResponse(&tc.d)
			if !proto.Equal(got, tc.want) {
				t.Errorf("ToResponse:\n got %s\nwant %s", prototext.Format(got), prototext.Format(tc.want))
			}
			// The wire form is what Envoy sees.
			if _, err := proto.Marshal(got); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestToRequest(t *testing.T) {
	source := &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"}}}}
	t.Run("headers map", func(t *testing.T) {
		headers := map[string]string{"x-request-id": "rid", "authorization": "Bearer t"}
		r := ToRequest(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: source,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Host: "App.Example.com:443", Path: "/a?b", Method: "POST", Scheme: "https", Headers: headers}}}})
		want := authz.Request{Host: "App.Example.com:443", Path: "/a?b", Method: "POST", Scheme: "https",
			SourceAddr: "203.0.113.7", RequestID: "rid"}
		if r.Headers == nil || r.Headers.Get("authorization") != "Bearer t" {
			t.Fatalf("headers not passed through: %v", r.Headers)
		}
		r.Headers = nil
		if r != want {
			t.Errorf("got %+v, want %+v", r, want)
		}
	})
	t.Run("pseudo headers and header_map", func(t *testing.T) {
		// encode_raw_headers: header_map with raw values; repeated names
		// joined with commas; missing fields from pseudo headers.
		hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":authority", RawValue: []byte("app.example.com")}, {Key: ":path", Value: "/p"},
			{Key: "x-forwarded-proto", Value: "http"}, {Key: "accept", Value: "a"}, {Key: "accept", RawValue: []byte("b")},
		}}
		r := ToRequest(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{HeaderMap: hm}}}})
		if r.Host != "app.example.com" || r.Path != "/p" || r.Scheme != "http" || r.Headers.Get("accept") != "a,b" {
			t.Errorf("got %+v (accept %q)", r, r.Headers.Get("accept"))
		}
	})
	t.Run("empty request", func(t *testing.T) {
		r := ToRequest(&authv3.CheckRequest{})
		if r.Host != "" || r.Path != "" || r.Headers.Get("x") != "" {
			t.Errorf("got %+v", r)
		}
	})
}

// TestToResponseKeepsSharedLists: removing the cookie on one answer must not
// leak into the shared header-removal lists of later answers.
func TestToResponseKeepsSharedLists(t *testing.T) {
	d := authz.Decision{Allow: true, User: "alice", StripCookies: true}
	_ = ToResponse(&d)
	d.User = ""
	_ = ToResponse(&d)
	for _, l := range [][]string{removeAll, removeWithUser, removeAll[:cap(removeAll)], removeWithUser[:cap(removeWithUser)]} {
		if slices.Contains(l, "cookie") {
			t.Fatalf("a shared removal list now holds cookie: %v", l)
		}
	}
	if got := ToResponse(&authz.Decision{Allow: true}).GetOkResponse().GetHeadersToRemove(); slices.Contains(got, "cookie") {
		t.Errorf("an answer without StripCookies removes the cookie: %v", got)
	}
}

// TestUnsetIdentityHeadersRemoved (S10): an identity header the sign-in has
// no value for is removed from the upstream request, never set empty.
func TestUnsetIdentityHeadersRemoved(t *testing.T) {
	d := authz.Decision{Allow: true, User: "alice", Upstream: []authz.Header{
		{Name: authz.HeaderEmail, Value: "a@example.com"}, {Name: authz.HeaderGroups}}}
	ok := ToResponse(&d).GetOkResponse()
	if !slices.Contains(ok.GetHeadersToRemove(), authz.HeaderGroups) {
		t.Errorf("headers_to_remove %q lacks %s", ok.GetHeadersToRemove(), authz.HeaderGroups)
	}
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == authz.HeaderGroups {
			t.Errorf("%s set to %q", authz.HeaderGroups, h.GetHeader().GetValue())
		}
	}
	if slices.Contains(removeWithUser, authz.HeaderGroups) || slices.Contains(removeAll, authz.HeaderGroups) {
		t.Error("a shared list was changed")
	}
}
