package authz

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

func TestCookieValue(t *testing.T) {
	const name = "sessiongate"
	tests := []struct {
		header string
		want   string
		found  bool
	}{
		{"", "", false},
		{"sessiongate=abc", "abc", true},
		{"a=1; sessiongate=abc; b=2", "abc", true},
		{"a=1;sessiongate=abc;b=2", "abc", true},                 // crumbs joined without spaces
		{"a=1; b=2; sessiongate=abc", "abc", true},               // HTTP/2 crumbs re-joined with "; "
		{"a=1;\tsessiongate=abc \t; b=2", "abc", true},           // tabs and trailing blanks
		{`sessiongate="abc"`, "abc", true},                       // quoted
		{`sessiongate="abc`, `"abc`, true},                       // half-quoted: kept as is
		{`sessiongate="`, `"`, true},                             // a lone quote
		{`sessiongate=""`, "", true},                             // empty quoted
		{"sessiongate=", "", true},                               // empty
		{"sessiongate", "", false},                               // no '='
		{"xsessiongate=abc", "", false},                          // longer name with our suffix
		{"sessiongatex=abc", "", false},                          // longer name with our prefix
		{"xsessiongate=evil; sessiongate=good", "good", true},    // prefix name first
		{"sessiongate=first; sessiongate=second", "first", true}, // the first wins
		{"Sessiongate=abc", "", false},                           // names are case-sensitive
		{"sessiongate =abc", "", false},                          // no blank before '='
		{"a=sessiongate=abc", "", false},                         // inside another value
		{"sessiongate=a=b", "a=b", true},                         // '=' inside the value
		{";;; sessiongate=abc;;;", "abc", true},                  // empty crumbs
		{"a=1; sessiongate=abc;", "abc", true},                   // trailing separator
		{"a=\"x;sessiongate=abc\"", "abc\"", true},               // cookie values cannot hold ';' anyway
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.header), func(t *testing.T) {
			got, found := CookieValue(tc.header, name)
			if got != tc.want || found != tc.found {
				t.Errorf("CookieValue(%q) = %q, %v; want %q, %v", tc.header, got, found, tc.want, tc.found)
			}
		})
	}
}

func TestCookieValueDoesNotAllocate(t *testing.T) {
	header := "theme=dark; lang=en; __Host-sessiongate=\"" + "A0123456789012345678901234567890" + "\"; other=1"
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := CookieValue(header, cookieName); !ok {
			t.Fatal("not found")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestIsBrowser(t *testing.T) {
	tests := []struct {
		headers HeaderMap
		want    bool
	}{
		{nil, false},
		{HeaderMap{}, false},
		{HeaderMap{"sec-fetch-mode": "navigate"}, true},
		{HeaderMap{"sec-fetch-mode": "cors"}, false},
		{HeaderMap{"sec-fetch-mode": "no-cors", "accept": "text/html"}, true},
		{HeaderMap{"accept": "text/html"}, true},
		{HeaderMap{"accept": "application/json, text/html;q=0.1"}, true},
		{HeaderMap{"accept": "application/json"}, false},
		{HeaderMap{"accept": "*/*"}, false},
		{HeaderMap{"Accept": "text/html"}, false}, // names arrive lower-case
	}
	for _, tc := range tests {
		r := &Request{}
		if tc.headers != nil {
			r.Headers = tc.headers
		}
		if got := r.IsBrowser(); got != tc.want {
			t.Errorf("IsBrowser(%v) = %v, want %v", tc.headers, got, tc.want)
		}
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/public", "/public", true},
		{"/public/x", "/public", true},
		{"/publicity", "/public", false},
		{"/public/", "/public/", true},
		{"/public/x", "/public/", true},
		{"/public", "/public/", false},
		{"/", "/", true},
		{"/anything", "/", true},
		{"", "/", false},
		{"/x", "", false},
		{"", "", false},
		{"/api/poll", "/api/poll", true},
		{"/api/pollx", "/api/poll", false},
	}
	for _, tc := range tests {
		if got := MatchPath(tc.path, tc.prefix); got != tc.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tc.path, tc.prefix, got, tc.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/a/b": true, "/": true, "/a.b/c": true, "/a/b.": true,
		"": false, "a": false, "//a": false, "/a//b": false, "/a/./b": false, "/a/../b": false,
		"/.well-known": false, "/a\\b": false, "/a%2fb": false, "/%41": false,
		"/a/\u2025/b": false, "/a/\uff0e\uff0e/b": false, "/caf\xc3\xa9": false,
	} {
		if got := cleanPath(p); got != want {
			t.Errorf("cleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestBearer(t *testing.T) {
	for v, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BEARER abc ": "abc", "Bearer   abc": "abc",
		"Bearer": "", "Bearer ": "", "Bearerabc": "", "Basic abc": "", "abc": "", "": "", "Bearer\tabc": "",
	} {
		if got := bearer(v); got != want {
			t.Errorf("bearer(%q) = %q, want %q", v, got, want)
		}
	}
}

func TestValidSessionID(t *testing.T) {
	for v, want := range map[string]bool{
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef":  true,
		"0123456789-_0123456789-_01234567":  true,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcde":   false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg": false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcde=":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcde+":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcde/":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcde ":  false,
		"":                                  false,
	} {
		if got := validSessionID(v); got != want {
			t.Errorf("validSessionID(%q) = %v, want %v", v, got, want)
		}
	}
	e, _ := NewEngine(Options{Policies: fakePolicies{}, Store: newMemStore(testutil.NewClock(t0))})
	seen := map[string]bool{}
	for range 100 {
		id, err := e.newID()
		if err != nil || !validSessionID(id) || seen[id] {
			t.Fatalf("newID %q, %v (duplicate %v)", id, err, seen[id])
		}
		seen[id] = true
	}
}

func TestReasons(t *testing.T) {
	want := map[Reason]struct {
		name   string
		status int
	}{
		ReasonNone:                {"", 200},
		ReasonNoToken:             {"no_token", 401},
		ReasonInvalidToken:        {"invalid_token", 401},
		ReasonTokenExpired:        {"token_expired", 401},
		ReasonIdleTimeout:         {"idle_timeout", 401},
		ReasonAbsoluteTimeout:     {"absolute_timeout", 401},
		ReasonSignedOut:           {"signed_out", 401},
		ReasonIdentityMismatch:    {"identity_mismatch", 401},
		ReasonReauthRequired:      {"reauth_required", 401},
		ReasonUnknownHost:         {"unknown_host", 403},
		ReasonStoreUnavailable:    {"store_unavailable", 503},
		ReasonSignInFailed:        {"sign_in_failed", 400},
		ReasonSignInDenied:        {"sign_in_denied", 403},
		ReasonReauthNotPerformed:  {"reauth_not_performed", 403},
		ReasonProviderUnavailable: {"provider_unavailable", 503},
		ReasonSignedIn:            {"signed_in", 302},
	}
	for r, w := range want {
		if r.String() != w.name || r.HTTPStatus() != w.status {
			t.Errorf("reason %d: %q %d, want %q %d", r, r, r.HTTPStatus(), w.name, w.status)
		}
	}
	all := Reasons()
	if len(all) != len(want)-1 {
		t.Errorf("Reasons() has %d entries", len(all))
	}
	for _, r := range all {
		if r == ReasonNone || r.String() == "" || r.String() == "unknown" {
			t.Errorf("Reasons() lists %d %q", r, r)
		}
	}
	if Reason(200).String() != "unknown" {
		t.Error("out-of-range reason")
	}
	for c, w := range map[EndCause]struct {
		name   string
		reason Reason
	}{
		CauseNone:             {"", ReasonReauthRequired},
		CauseIdle:             {"idle", ReasonIdleTimeout},
		CauseAbsolute:         {"absolute", ReasonAbsoluteTimeout},
		CauseSignedOut:        {"signed_out", ReasonSignedOut},
		CauseIdentityMismatch: {"identity_mismatch", ReasonIdentityMismatch},
		CauseIdPLogout:        {"idp_logout", ReasonReauthRequired},
		CauseIdPRevoked:       {"idp_revoked", ReasonReauthRequired},
		CauseAdmin:            {"admin", ReasonReauthRequired},
		EndCause(99):          {"unknown", ReasonReauthRequired},
	} {
		if c.String() != w.name || c.Reason() != w.reason {
			t.Errorf("cause %d: %q %s", c, c, c.Reason())
		}
	}
	if len(Causes()) != 7 {
		t.Errorf("Causes() %v", Causes())
	}
}

func TestDecisionLabel(t *testing.T) {
	tests := []struct {
		d      Decision
		label  string
		denial bool
	}{
		{Decision{Allow: true}, "allow", false},
		{Decision{Allow: true, Reason: ReasonStoreUnavailable}, "allow", false},
		{Decision{Allow: true, DryRun: true, Reason: ReasonIdleTimeout}, "dry_run_deny", true},
		{Decision{Reason: ReasonNoToken}, "deny", true},
	}
	for _, tc := range tests {
		if tc.d.Label() != tc.label || tc.d.Denial() != tc.denial {
			t.Errorf("%s: label %q denial %v", describe(tc.d), tc.d.Label(), tc.d.Denial())
		}
	}
}

func TestTokenReasonAndSignIn(t *testing.T) {
	if r := TokenReason(&TokenError{Reason: ReasonTokenExpired}); r != ReasonTokenExpired {
		t.Errorf("TokenError: %s", r)
	}
	if r := TokenReason(fmt.Errorf("wrapped: %w", &TokenError{Reason: ReasonTokenExpired})); r != ReasonTokenExpired {
		t.Errorf("wrapped TokenError: %s", r)
	}
	if r := TokenReason(errors.New("other")); r != ReasonInvalidToken {
		t.Errorf("other error: %s", r)
	}
	if e := (&TokenError{Reason: ReasonInvalidToken, Detail: "bad signature"}).Error(); e != "invalid_token: bad signature" {
		t.Errorf("Error() %q", e)
	}
	if s := (&Claims{IssuedAt: 5, AuthTime: 3}).SignIn(); s != 3 {
		t.Errorf("SignIn with auth_time: %d", s)
	}
	if s := (&Claims{IssuedAt: 5}).SignIn(); s != 5 {
		t.Errorf("SignIn without auth_time: %d", s)
	}
}

func TestFanoutAndNopEvents(t *testing.T) {
	a, b := &recEvents{}, &recEvents{}
	var f Events = Fanout{a, NopEvents{}, b}
	d := &Decision{Allow: true}
	f.Decided(d, 0)
	f.SessionStarted(SessionEvent{SessionID: "1"})
	f.SessionEnded(SessionEvent{SessionID: "2"})
	f.SessionReauthenticated(SessionEvent{SessionID: "3"})
	for _, r := range []*recEvents{a, b} {
		if dc, s, e, ra := r.counts(); dc != 1 || s != 1 || e != 1 || ra != 1 {
			t.Errorf("counts %d %d %d %d", dc, s, e, ra)
		}
	}
}
