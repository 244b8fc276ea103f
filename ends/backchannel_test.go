package ends_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/ends"
	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/token"
)

const (
	issuer   = "https://idp.test/realms/app"
	client   = "app-client"
	apiAud   = "app-api"
	policyA  = "app"
	policyB  = "admin-app"
	policyC  = "other-client"
	subject  = "alice"
	provider = "sid-1"
)

var ctx = context.Background()

type fixture struct {
	t        testing.TB
	key      *idp.IDP
	stranger *idp.IDP
	store    authz.Store
	policies []*authz.Policy
	h        http.Handler
	audit    *auditLog
	seq      atomic.Int64
}

type auditLog struct{ events []authz.EndRequest }

func (a *auditLog) EndRequested(e authz.EndRequest) { a.events = append(a.events, e) }

// newFixture serves two policies that take logout tokens for client from
// issuer (token mode, jwks_file) and one for another client, on st.
func newFixture(t testing.TB, st authz.Store) *fixture {
	t.Helper()
	f := &fixture{t: t, store: st, audit: &auditLog{}}
	var err error
	if f.key, err = idp.New(idp.RS256); err != nil {
		t.Fatal(err)
	}
	if f.stranger, err = idp.New(idp.RS256); err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := f.key.WriteJWKS(jwks); err != nil {
		t.Fatal(err)
	}
	tokens := token.NewProvider(token.Options{})
	v, err := tokens.Verifier(token.Config{Issuer: issuer, Audiences: []string{apiAud}, JWKSFile: jwks,
		Algorithms: []string{"RS256"}, ClockSkew: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range []struct{ name, aud string }{{policyA, client}, {policyB, client}, {policyC, "another"}} {
		f.policies = append(f.policies, &authz.Policy{Name: pc.name, AbsoluteTimeout: 8 * time.Hour, IdleTimeout: 30 * time.Minute, Issuer: issuer,
			BackChannel: &authz.BackChannel{Issuer: issuer, Audience: pc.aud, Verifier: v.(authz.LogoutCapable).LogoutVerifier(pc.aud)}})
	}
	f.h = ends.NewBackChannel(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: st, Auditor: f.audit})
	return f
}

func newMemory(t testing.TB) authz.Store {
	t.Helper()
	s, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// session begins a live session of sub (with provider session sid, "" for
// none) in policy, signed in a minute ago.
func (f *fixture) session(policy, sub, sid string) *authz.Session {
	f.t.Helper()
	now := time.Now().UnixMilli()
	s := &authz.Session{ID: "sess-" + strconv.FormatInt(f.seq.Add(1), 10) + "-" + strconv.FormatInt(now, 36), Policy: policy, Subject: sub,
		Identity: authz.IdentityDigest(issuer, sub, nil), Scope: authz.ScopeDigest(issuer, sub, sid),
		SignIn: now - 60_000, Created: now - 60_000, LastActivity: now, KeepUntil: now + 9*3600_000}
	if err := f.store.Begin(ctx, s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) ended(s *authz.Session) bool {
	f.t.Helper()
	lk, err := f.store.Load(ctx, s.Policy, s.ID, s.Scope)
	if err != nil {
		f.t.Fatal(err)
	}
	return lk.Session.Ended() || lk.ScopeFound && lk.Scope.EndedAt >= lk.Session.Created
}

// claims are a valid logout token's, issued now.
func (f *fixture) claims() map[string]any {
	now := time.Now().Unix()
	return map[string]any{"iss": issuer, "aud": client, "iat": now, "exp": now + 120,
		"jti": "jti-" + strconv.FormatInt(f.seq.Add(1), 10), "sid": provider, "sub": subject,
		"events": map[string]any{authz.BackChannelEvent: map[string]any{}}}
}

func (f *fixture) mint(header map[string]any, claims map[string]any) string {
	f.t.Helper()
	if header == nil {
		header = map[string]any{"typ": "logout+jwt"}
	}
	tok, err := f.key.MintWith(header, claims)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func post(h http.Handler, body, contentType string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, ends.BackChannelPath, strings.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func form(tok string) string { return url.Values{"logout_token": {tok}}.Encode() }

const formType = "application/x-www-form-urlencoded"

func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, status int, reason string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d (body %s)", w.Code, status, w.Body)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	if status == http.StatusOK {
		return
	}
	var e struct{ Error, ErrorDescription string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error != reason {
		t.Errorf("body %s: want error %q", w.Body, reason)
	}
}

// TestS18BackChannelLogoutEndsTheProviderSession: a valid logout token
// with sid (and sub) ends that provider session's sessions on every policy
// of that issuer and client, and the user's sid-less ones, and nothing of
// another client or another provider session.
func TestS18BackChannelLogoutEndsTheProviderSession(t *testing.T) {
	f := newFixture(t, newMemory(t))
	a, b := f.session(policyA, subject, provider), f.session(policyB, subject, provider)
	noSID := f.session(policyA, subject, "")
	otherSID := f.session(policyA, subject, "sid-2")
	otherClient := f.session(policyC, subject, provider)
	otherUser := f.session(policyA, "bob", "sid-3")

	checkAnswer(t, post(f.h, form(f.mint(nil, f.claims())), formType), http.StatusOK, "")
	for _, s := range []*authz.Session{a, b, noSID} {
		if !f.ended(s) {
			t.Errorf("session of %s in %s (sid scope %v) is still live", s.Subject, s.Policy, s.Scope == a.Scope)
		}
	}
	for _, s := range []*authz.Session{otherSID, otherClient, otherUser} {
		if f.ended(s) {
			t.Errorf("session of %s in %s ended, but the logout was not about it", s.Subject, s.Policy)
		}
	}
	lk, _ := f.store.Load(ctx, policyA, a.ID, a.Scope)
	if lk.Session.Cause != authz.CauseIdPLogout {
		t.Errorf("cause %v, want idp_logout", lk.Session.Cause)
	}
	if len(f.audit.events) != 1 || f.audit.events[0].Ended != 3 || f.audit.events[0].Who != issuer || f.audit.events[0].Result != "ok" {
		t.Errorf("audit: %+v", f.audit.events)
	}
}

// TestS18SubOnlyEndsEveryProviderSessionOfTheUser: a logout token with sub
// alone ends every session of that user (oauth2-proxy's refuses these).
func TestS18SubOnlyEndsEveryProviderSessionOfTheUser(t *testing.T) {
	f := newFixture(t, newMemory(t))
	one, two, none := f.session(policyA, subject, "s1"), f.session(policyB, subject, "s2"), f.session(policyA, subject, "")
	bob := f.session(policyA, "bob", "")
	c := f.claims()
	delete(c, "sid")
	checkAnswer(t, post(f.h, form(f.mint(nil, c)), formType), http.StatusOK, "")
	for _, s := range []*authz.Session{one, two, none} {
		if !f.ended(s) {
			t.Errorf("%s's session in %s is still live", s.Subject, s.Policy)
		}
	}
	if f.ended(bob) {
		t.Error("another user's session ended")
	}
}

// TestS18SignInInFlight: a sign-in made before the logout, whose callback
// comes after it, cannot open a session: the scope's end covers it (S3).
func TestS18SignInInFlight(t *testing.T) {
	f := newFixture(t, newMemory(t))
	checkAnswer(t, post(f.h, form(f.mint(nil, f.claims())), formType), http.StatusOK, "")
	lk, err := f.store.Load(ctx, policyA, "", authz.ScopeDigest(issuer, "", provider))
	if err != nil {
		t.Fatal(err)
	}
	signIn := time.Now().Add(-time.Second).UnixMilli() // auth_time before the logout
	if out := authz.Decide(f.policies[0], &authz.Claims{Issuer: issuer, Subject: subject, SID: provider, AuthTime: signIn,
		Scope: authz.ScopeDigest(issuer, subject, provider)}, &authz.Facts{Lookup: lk}, time.Now().UnixMilli(), false); out.Verdict != authz.VerdictDeny || out.Reason != authz.ReasonReauthRequired {
		t.Errorf("a sign-in from before the logout: %+v", out)
	}
}

// TestS18HostileLogoutTokens: each is refused with 400 and ends nothing.
func TestS18HostileLogoutTokens(t *testing.T) {
	f := newFixture(t, newMemory(t))
	now := time.Now().Unix()
	with := func(k string, v any) map[string]any {
		c := f.claims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	minted := func(d *idp.IDP, header, claims map[string]any) string {
		if header == nil {
			header = map[string]any{"typ": "logout+jwt"}
		}
		tok, err := d.MintWith(header, claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	none, err := f.key.MintNone(f.claims())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := f.key.MintHS256WithPublicKey(f.claims())
	if err != nil {
		t.Fatal(err)
	}
	idToken := with("events", nil)
	idToken["nonce"], idToken["auth_time"] = "n-1", now
	accessToken := with("events", nil)
	accessToken["scope"] = "openid"
	for _, tc := range []struct {
		name, tok, reason string
	}{
		{"unsigned", none, "invalid_token"},
		{"HMAC with the public key", hs, "invalid_token"},
		{"alg not allowed", minted(f.key, map[string]any{"typ": "logout+jwt", "alg": "RS384"}, f.claims()), "invalid_token"},
		{"wrong key", minted(f.stranger, nil, f.claims()), "invalid_token"},
		{"wrong iss", f.mint(nil, with("iss", "https://evil.test")), "unknown_client"},
		{"wrong aud", f.mint(nil, with("aud", "someone-else")), "unknown_client"},
		{"aud of another policy's client only", f.mint(nil, with("aud", []string{"nobody", "x"})), "unknown_client"},
		{"expired", f.mint(nil, with("exp", now-3600)), "expired"},
		{"iat far in the future", f.mint(nil, with("iat", now+3600)), "invalid_claim"},
		{"no iat", f.mint(nil, with("iat", nil)), "invalid_claim"},
		{"no exp", f.mint(nil, with("exp", nil)), "invalid_claim"},
		{"no jti", f.mint(nil, with("jti", nil)), "invalid_claim"},
		{"nonce", f.mint(nil, with("nonce", "n")), "invalid_claim"},
		{"no events", f.mint(nil, with("events", nil)), "invalid_claim"},
		{"events without the member", f.mint(nil, with("events", map[string]any{"http://schemas.openid.net/event/other": map[string]any{}})), "invalid_claim"},
		{"events member not an object", f.mint(nil, with("events", map[string]any{authz.BackChannelEvent: "yes"})), "invalid_claim"},
		{"neither sid nor sub", f.mint(nil, func() map[string]any { c := with("sid", nil); delete(c, "sub"); return c }()), "invalid_claim"},
		{"sid not a string", f.mint(nil, with("sid", 7)), "invalid_claim"},
		{"typ of an access token", f.mint(map[string]any{"typ": "at+jwt"}, f.claims()), "invalid_token"},
		{"an ID token", f.mint(map[string]any{"typ": "JWT"}, idToken), "invalid_claim"},
		{"an access token", f.mint(map[string]any{"typ": "JWT"}, accessToken), "invalid_claim"},
		{"not a JWS", "a.b", "invalid_token"},
		{"garbage payload", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim := f.session(policyA, subject, provider)
			checkAnswer(t, post(f.h, form(tc.tok), formType), http.StatusBadRequest, tc.reason)
			if f.ended(victim) {
				t.Error("a session ended")
			}
			lk, _ := f.store.Load(ctx, policyA, "", authz.ScopeDigest(issuer, "", provider))
			if lk.ScopeFound && lk.Scope.EndedAt != 0 {
				t.Error("the provider session's scope was raised")
			}
		})
	}
	victim := f.session(policyA, subject, provider)
	for _, tc := range []struct {
		name        string
		method      string
		body, ctype string
		status      int
	}{
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{"JSON body", http.MethodPost, `{"logout_token":"x"}`, "application/json", http.StatusBadRequest},
		{"no token", http.MethodPost, "other=1", formType, http.StatusBadRequest},
		{"two tokens", http.MethodPost, "logout_token=a&logout_token=b", formType, http.StatusBadRequest},
		{"oversized body", http.MethodPost, "logout_token=" + strings.Repeat("a", ends.MaxBody), formType, http.StatusBadRequest},
	} {
		r := httptest.NewRequest(tc.method, ends.BackChannelPath, strings.NewReader(tc.body))
		if tc.ctype != "" {
			r.Header.Set("Content-Type", tc.ctype)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		checkAnswer(t, w, tc.status, "invalid_request")
	}
	if f.ended(victim) {
		t.Error("a malformed request ended a session")
	}
	if len(f.audit.events) != 0 {
		t.Errorf("refused unverified requests were audited as the issuer's: %+v", f.audit.events)
	}
}

// TestS18ReplayedLogoutToken: the same jti is refused the second time, on
// this replica and on another sharing the store, and the replay ends no
// session signed in after the token.
func TestS18ReplayedLogoutToken(t *testing.T) {
	st := newMemory(t)
	f := newFixture(t, st)
	other := ends.NewBackChannel(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: st})
	tok := f.mint(nil, f.claims())
	checkAnswer(t, post(f.h, form(tok), formType), http.StatusOK, "")
	// A session of the user without sid, as the token selects, signed in
	// after it (an hour ahead stands for "after the token's iat").
	at := time.Now().Add(time.Hour).UnixMilli()
	later := &authz.Session{ID: "later", Policy: policyA, Subject: subject, Identity: authz.IdentityDigest(issuer, subject, nil),
		Scope: authz.ScopeDigest(issuer, subject, ""), SignIn: at, Created: at, LastActivity: at, KeepUntil: at + 3600_000}
	if err := st.Begin(ctx, later); err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, post(f.h, form(tok), formType), http.StatusBadRequest, "replayed")
	checkAnswer(t, post(other, form(tok), formType), http.StatusBadRequest, "replayed")
	if f.ended(later) {
		t.Error("a replayed logout token ended a session signed in after it")
	}
}
