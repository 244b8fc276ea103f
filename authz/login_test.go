package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSignIn is a SignIn whose callbacks are scripted: a callback request's
// state names the SignedIn it finishes with, once.
type fakeSignIn struct {
	mu       sync.Mutex
	signed   map[string]*SignedIn // by state
	used     map[string]bool
	starts   []int64 // endedAt of each Start
	startErr error
	// refresh, when set, answers Refresh; gate, when set, holds every
	// Refresh until it is closed.
	refresh   func(g *Grant) (*Grant, error)
	gate      chan struct{}
	refreshes int
}

const (
	callbackPath = "/_sessiongate/callback"
	idpAuthorize = "https://idp.example.com/authorize"
	idpLogout    = "https://idp.example.com/logout"
	txnCookie    = LoginCookiePrefix + "0=sealed-transaction; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"
)

func newFakeSignIn() *fakeSignIn {
	return &fakeSignIn{signed: map[string]*SignedIn{}, used: map[string]bool{}}
}

func (f *fakeSignIn) CallbackPath() string { return callbackPath }

func (f *fakeSignIn) Start(_ context.Context, r *Request, returnURL string, endedAt int64) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return "", "", f.startErr
	}
	f.starts = append(f.starts, endedAt)
	return idpAuthorize + "?state=s" + url.QueryEscape(returnURL), txnCookie, nil
}

func (f *fakeSignIn) Finish(_ context.Context, r *Request) (*SignedIn, error) {
	u, _ := url.Parse(r.Path)
	state := u.Query().Get("state")
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.signed[state]
	if !ok || f.used[state] {
		return nil, &SignInError{Reason: ReasonSignInFailed, Detail: "unknown or used login transaction"}
	}
	f.used[state] = true
	return s, nil
}

func (f *fakeSignIn) Refresh(_ context.Context, g *Grant) (*Grant, error) {
	f.mu.Lock()
	f.refreshes++
	gate, refresh := f.gate, f.refresh
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if refresh == nil {
		return nil, errors.New("no refresh scripted")
	}
	return refresh(g)
}

func (f *fakeSignIn) EndSessionURL(_ *Request, g *Grant) string {
	if g == nil || g.IDToken == "" {
		return idpLogout
	}
	return idpLogout + "?id_token_hint=" + url.QueryEscape(g.IDToken)
}

func (f *fakeSignIn) Seal(g *Grant) ([]byte, error) {
	b, err := json.Marshal(g)
	return append([]byte("sealed:"), b...), err
}

func (f *fakeSignIn) Open(sealed []byte) (*Grant, error) {
	b, ok := strings.CutPrefix(string(sealed), "sealed:")
	if !ok {
		return nil, errors.New("not sealed here")
	}
	var g Grant
	return &g, json.Unmarshal([]byte(b), &g)
}

func (f *fakeSignIn) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// countingEvents also counts sign-ins and refreshes and audits refusals.
type countingEvents struct {
	recEvents
	signIns   map[string]int
	refreshed map[string]int
	refused   []SessionEvent
}

func (c *countingEvents) SignInFinished(_, result string, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signIns[result]++
}

func (c *countingEvents) Refreshed(_, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshed[result]++
}

func (c *countingEvents) SignInRefused(e SessionEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused = append(c.refused, e)
}

type signInHarness struct {
	*harness
	si *fakeSignIn
	ev *countingEvents
	n  int
}

func newSignInHarness(t testing.TB, mod ...func(*Policy)) *signInHarness {
	si := newFakeSignIn()
	h := newHarness(t, append([]func(*Policy){func(p *Policy) {
		p.Login = Login{SignIn: si, ReauthQuery: "max_age=0&prompt=login"}
		p.Upstream = Upstream{AccessToken: "authorization", IdentityHeaders: []string{"x-user-email"}}
	}}, mod...)...)
	ev := &countingEvents{signIns: map[string]int{}, refreshed: map[string]int{}}
	eng, err := NewEngine(Options{Policies: fakePolicies{appHost: h.app, otherHost: h.other}, Store: h.store, Clock: h.clock, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return &signInHarness{harness: h, si: si, ev: ev}
}

// provider scripts the next callback: the ID token's claims (auth_time
// authTime, zero for none), a grant whose access token expires in
// accessLife, and the transaction's endedAt. It returns the callback path.
func (h *signInHarness) provider(sub string, authTime time.Time, accessLife time.Duration, endedAt int64) string {
	h.n++
	state := "st" + string(rune('a'+h.n))
	k := tok{sub: sub, sid: "idp-session-" + sub, authTime: authTime}
	cl := claimsFor(k, h.now())
	h.si.mu.Lock()
	h.si.signed[state] = &SignedIn{
		Claims: cl,
		Grant: &Grant{AccessToken: "AT-" + state, RefreshToken: "RT-" + state, IDToken: "IDT-" + state,
			AccessExpiry: h.now().Add(accessLife).UnixMilli(), Headers: []Header{{Name: "x-user-email", Value: sub + "@example.com"}}},
		ReturnURL: "https://" + appHost + "/app/page?x=1",
		EndedAt:   endedAt,
	}
	h.si.mu.Unlock()
	return callbackPath + "?code=c&state=" + state
}

// signInNow runs a callback and returns the session cookie it hands out.
func (h *signInHarness) signInNow(sub string, accessLife time.Duration) string {
	h.t.Helper()
	d := h.check(req{browser: true, path: h.provider(sub, h.now(), accessLife, 0)})
	if d.Reason != ReasonSignedIn || d.Status != 302 {
		h.t.Fatalf("callback: %s", describe(d))
	}
	return cookieOf(h.t, d)
}

func upstream(d Decision, name string) string {
	for _, h := range d.Upstream {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

func TestSignInCallbackOpensASession(t *testing.T) {
	h := newSignInHarness(t)
	authTime := h.now().Add(-time.Second)
	d := h.check(req{browser: true, path: h.provider("alice", authTime, time.Hour, 0)})
	if d.Allow || d.Status != 302 || d.Reason != ReasonSignedIn || d.Location != "https://"+appHost+"/app/page?x=1" || len(d.SetCookie) != 1 {
		t.Fatalf("callback: %s", describe(d))
	}
	id := cookieOf(t, d)
	s, ok := h.store.get("app", id)
	if !ok || s.Method != MethodOIDC || s.SignIn != authTime.UnixMilli() || s.Grant == "" || s.GrantAt != h.now().UnixMilli() {
		t.Fatalf("session: %+v", s)
	}
	if h.ev.signIns["success"] != 1 || len(h.ev.started) != 1 || h.ev.started[0].Method != MethodOIDC {
		t.Errorf("events: sign-ins %v, started %+v", h.ev.signIns, h.ev.started)
	}
	// The cookie, backed by the grant, is the credential: no token.
	h.advance(time.Minute)
	d = h.check(req{browser: true, cookie: id, cookies: "theme=dark; " + LoginCookiePrefix + "1=txn"})
	mustAllow(t, d, "with the session cookie")
	if d.User != "alice" || upstream(d, "authorization") != "Bearer AT-stb" || upstream(d, "x-user-email") != "alice@example.com" {
		t.Errorf("upstream: user %q, %+v", d.User, d.Upstream)
	}
	if !d.StripCookies || d.UpstreamCookie != "theme=dark" {
		t.Errorf("cookies upstream: %v %q", d.StripCookies, d.UpstreamCookie)
	}
	if want := authTime.Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("S1 counts from the ID token's auth_time: %d, want %d", d.SessionExpiresAt, want)
	}
	// An API client of the session (the application's own fetches) too.
	mustAllow(t, h.check(req{cookie: id}), "API request with the session cookie")
}

func TestSignInStrictCookieNavigatesWithAPage(t *testing.T) {
	h := newSignInHarness(t, func(p *Policy) { p.Cookie.SameSite = "Strict" })
	d := h.check(req{browser: true, path: h.provider("alice", h.now(), time.Hour, 0)})
	if d.Status != 200 || d.Location != "" || d.ContentType != ContentTypeHTML || !strings.Contains(d.Body, `url=https://app.example.com/app/page?x=1`) || len(d.SetCookie) != 1 {
		t.Fatalf("callback with a Strict cookie: %s %q", describe(d), d.Body)
	}
}

func TestSignInCallbackReplayed(t *testing.T) {
	h := newSignInHarness(t)
	path := h.provider("alice", h.now(), time.Hour, 0)
	h.check(req{browser: true, path: path})
	begins := h.store.counts().begins
	d := h.check(req{browser: true, path: path})
	if d.Reason != ReasonSignInFailed || d.Status != 400 || d.Location != "" || len(d.SetCookie) != 0 || d.ContentType != ContentTypeHTML {
		t.Fatalf("replayed callback: %s", describe(d))
	}
	if h.store.counts().begins != begins {
		t.Error("a replayed callback opened a session")
	}
	if api := h.check(req{path: path}); api.ContentType != ContentTypeJSON || api.Status != 400 {
		t.Errorf("API client: %s %q", describe(api), api.ContentType)
	}
}

// TestS14ReauthenticationNotPerformed: a provider that answers a request
// for re-authentication with its old sign-in gets no session and no loop.
func TestS14ReauthenticationNotPerformed(t *testing.T) {
	h := newSignInHarness(t)
	signedIn := h.now()
	id := h.signInNow("alice", time.Hour)
	h.advance(31 * time.Minute)
	d := h.check(req{browser: true, cookie: id})
	if d.Reason != ReasonIdleTimeout || d.Status != 302 || !strings.HasPrefix(d.Location, idpAuthorize) || len(d.SetCookie) != 1 || d.SetCookie[0] != txnCookie {
		t.Fatalf("idle: %s", describe(d))
	}
	s, _ := h.store.get("app", id)
	if len(h.si.starts) != 1 || h.si.starts[0] != s.EndedAt || s.EndedAt == 0 {
		t.Fatalf("Start's endedAt %v, the session ended at %d", h.si.starts, s.EndedAt)
	}
	// The provider signs the browser in with the old sign-in (SSO).
	begins := h.store.counts().begins
	for _, at := range []time.Time{signedIn, time.UnixMilli(s.EndedAt)} {
		d = h.check(req{browser: true, path: h.provider("alice", at, time.Hour, s.EndedAt)})
		if d.Reason != ReasonReauthNotPerformed || d.Status != 403 || d.Location != "" || len(d.SetCookie) != 0 || !strings.Contains(d.Body, "credentials") {
			t.Fatalf("auth_time %v, end %d: %s", at, s.EndedAt, describe(d))
		}
	}
	if h.store.counts().begins != begins || len(h.ev.refused) != 2 || h.ev.refused[0].Reason != ReasonReauthNotPerformed || h.ev.signIns["reauth_not_performed"] != 2 {
		t.Errorf("no session, counted and audited: begins %d→%d, refused %+v, counted %v", begins, h.store.counts().begins, h.ev.refused, h.ev.signIns)
	}
	// A real re-authentication opens a new session.
	h.advance(time.Second)
	d = h.check(req{browser: true, path: h.provider("alice", h.now(), time.Hour, s.EndedAt)})
	if d.Reason != ReasonSignedIn {
		t.Fatalf("after re-authentication: %s", describe(d))
	}
}

func TestSignInBrowserWithoutSessionStarts(t *testing.T) {
	h := newSignInHarness(t)
	d := h.check(req{browser: true})
	if d.Status != 302 || d.Reason != ReasonNoToken || !strings.HasPrefix(d.Location, idpAuthorize) || len(d.SetCookie) != 1 || d.SetCookie[0] != txnCookie {
		t.Fatalf("browser: %s", describe(d))
	}
	if len(h.si.starts) != 1 || h.si.starts[0] != 0 {
		t.Errorf("Start endedAt %v, want 0 (no session ended)", h.si.starts)
	}
	if d := h.check(req{}); d.Status != 401 || d.Location != "" {
		t.Errorf("API client: %s", describe(d))
	}
	// API clients may present bearer tokens, validated as in token mode.
	raw := h.mint(tok{sub: "svc", authTime: h.now()})
	mustAllow(t, h.check(req{token: raw}), "bearer token")
	h.si.startErr = &SignInError{Reason: ReasonProviderUnavailable, Detail: "discovery pending"}
	if d := h.check(req{browser: true}); d.Status != 503 || d.Reason != ReasonProviderUnavailable || d.Location != "" || d.Body == "" {
		t.Errorf("Start failing: %s", describe(d))
	}
}

// TestS16RefreshOnceUnderConcurrency: 50 requests arriving as the access
// token nears expiry cause one refresh, and all go on with its token.
func TestS16RefreshOnceUnderConcurrency(t *testing.T) {
	h := newSignInHarness(t)
	signedIn := h.now().UnixMilli()
	id := h.signInNow("alice", 10*time.Minute)
	h.si.gate = make(chan struct{})
	h.si.refresh = func(g *Grant) (*Grant, error) {
		n := *g
		n.AccessToken, n.AccessExpiry = "AT-refreshed", h.now().Add(10*time.Minute).UnixMilli()
		return &n, nil
	}
	h.advance(9*time.Minute + 30*time.Second)
	var wg sync.WaitGroup
	ds := make([]Decision, 50)
	for i := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds[i] = h.eng.Check(context.Background(), req{browser: true, cookie: id}.build())
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them pile up behind the one refresh
	close(h.si.gate)
	wg.Wait()
	if n := h.si.refreshCount(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	for i, d := range ds {
		if !d.Allow || upstream(d, "authorization") != "Bearer AT-refreshed" {
			t.Fatalf("request %d: %s %+v", i, describe(d), d.Upstream)
		}
	}
	s, _ := h.store.get("app", id)
	if s.SignIn != signedIn || s.Ended() {
		t.Errorf("the refresh moved the sign-in (S1) or ended the session: %+v", s)
	}
	if h.ev.refreshed["success"] != 1 {
		t.Errorf("refreshes counted: %v", h.ev.refreshed)
	}
}

func TestS16RefreshRevokedEndsTheSession(t *testing.T) {
	h := newSignInHarness(t)
	id := h.signInNow("alice", 2*time.Minute)
	h.si.refresh = func(*Grant) (*Grant, error) { return nil, ErrGrantRevoked }
	h.advance(time.Minute + 40*time.Second)
	d := h.check(req{browser: true, cookie: id})
	if d.Allow || !strings.HasPrefix(d.Location, idpAuthorize) {
		t.Fatalf("revoked: %s", describe(d))
	}
	s, _ := h.store.get("app", id)
	if !s.Ended() || s.Cause != CauseIdPRevoked || s.Grant != "" {
		t.Fatalf("session after invalid_grant: %+v", s)
	}
	if got := h.si.starts[len(h.si.starts)-1]; got != s.EndedAt {
		t.Errorf("the new sign-in must follow the end: Start endedAt %d, end %d", got, s.EndedAt)
	}
	if h.ev.refreshed["revoked"] != 1 || len(h.ev.ended) != 1 || h.ev.ended[0].Cause != CauseIdPRevoked {
		t.Errorf("events: %v %+v", h.ev.refreshed, h.ev.ended)
	}
}

// TestS16ProviderOutage: a refresh that cannot reach the provider does not
// end the session; it goes on until its access token expires, then gets
// provider_unavailable, and refreshes once the provider is back.
func TestS16ProviderOutage(t *testing.T) {
	h := newSignInHarness(t)
	id := h.signInNow("alice", 2*time.Minute)
	h.si.refresh = func(*Grant) (*Grant, error) { return nil, errors.New("connection refused") }
	h.advance(time.Minute + 40*time.Second)
	d := h.check(req{browser: true, cookie: id})
	mustAllow(t, d, "refresh failing, token still valid")
	if upstream(d, "authorization") != "Bearer AT-stb" {
		t.Errorf("old token upstream: %+v", d.Upstream)
	}
	h.advance(time.Minute) // expired
	d = h.check(req{browser: true, cookie: id})
	if d.Allow || d.Status != 503 || d.Reason != ReasonProviderUnavailable || d.Location != "" {
		t.Fatalf("expired, provider down: %s", describe(d))
	}
	if s, _ := h.store.get("app", id); s.Ended() {
		t.Fatalf("a provider outage ended the session: %+v", s)
	}
	h.si.refresh = func(g *Grant) (*Grant, error) {
		n := *g
		n.AccessToken, n.AccessExpiry = "AT-back", h.now().Add(10*time.Minute).UnixMilli()
		return &n, nil
	}
	h.advance(refreshLease + time.Second) // the failed attempt's lease runs out
	d = h.check(req{browser: true, cookie: id})
	mustAllow(t, d, "provider back")
	if upstream(d, "authorization") != "Bearer AT-back" {
		t.Errorf("after the outage: %+v", d.Upstream)
	}
}

// TestS17LogoutAtTheProvider: the logout path ends the session and sends
// the browser to the provider's end_session_endpoint with the ID token; no
// other token ever appears in a Location.
func TestS17LogoutAtTheProvider(t *testing.T) {
	h := newSignInHarness(t)
	id := h.signInNow("alice", time.Hour)
	d := h.check(req{browser: true, cookie: id, path: "/logout"})
	if d.Status != 302 || d.Location != idpLogout+"?id_token_hint=IDT-stb" || !clearsCookie(d) || len(d.SetCookie) != 1 {
		t.Fatalf("logout: %s", describe(d))
	}
	if s, _ := h.store.get("app", id); !s.Ended() || s.Cause != CauseSignedOut {
		t.Fatalf("session after logout: %+v", s)
	}
	for _, secret := range []string{"AT-stb", "RT-stb"} {
		if strings.Contains(d.Location, secret) {
			t.Errorf("Location carries %s", secret)
		}
	}
	// The old cookie is refused and a new sign-in must re-authenticate.
	d = h.check(req{browser: true, cookie: id})
	if d.Allow || d.Reason != ReasonReauthRequired || h.si.starts[len(h.si.starts)-1] == 0 {
		t.Fatalf("old cookie after logout: %s, starts %v", describe(d), h.si.starts)
	}
	// Without a session: still to the provider, without a hint.
	if d := h.check(req{browser: true, path: "/logout"}); d.Location != idpLogout {
		t.Errorf("logout without a session: %s", describe(d))
	}
}

func TestSignInSessionLimits(t *testing.T) {
	h := newSignInHarness(t)
	id := h.signInNow("alice", 24*time.Hour)
	for range 16 {
		h.advance(29 * time.Minute)
		mustAllow(t, h.check(req{browser: true, cookie: id}), "active")
	}
	h.advance(16*time.Minute + 30*time.Second) // past 8 hours since the sign-in
	d := h.check(req{browser: true, cookie: id})
	if d.Allow || d.Reason != ReasonAbsoluteTimeout || !strings.HasPrefix(d.Location, idpAuthorize) || len(d.SetCookie) != 1 {
		t.Fatalf("S1: %s", describe(d))
	}
	// Every Location of the sign-in flow is free of the grant's tokens.
	for _, dd := range h.ev.decided {
		for _, secret := range []string{"AT-", "RT-", "IDT-"} {
			if strings.Contains(dd.Location, secret) {
				t.Errorf("Location %q carries a token", dd.Location)
			}
		}
	}
}

func TestStripGateCookies(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "",
		"a=1":                  "a=1",
		cookieName + "=x":      "",
		cookieName + "=x; a=1": "a=1",
		"a=1; " + cookieName + "=x; " + LoginCookiePrefix + "2=y; b=2": "a=1; b=2",
		"a=1;b=2":               "a=1;b=2",
		cookieName + "-other=1": cookieName + "-other=1",
	} {
		if got := stripGateCookies(in, cookieName); got != want {
			t.Errorf("stripGateCookies(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkEngineCheckSignInSession is the hot path of a login.oidc policy:
// a live session presented by its cookie, the grant's headers upstream.
func BenchmarkEngineCheckSignInSession(b *testing.B) {
	h := newSignInHarness(b, func(p *Policy) { p.ActivityGranularity = time.Minute })
	h.eng.events = NopEvents{}
	id := h.signInNow("alice", 24*time.Hour)
	r := req{cookie: id, cookies: "theme=dark", path: "/app/page?x=1", headers: map[string]string{"accept": "application/json"}}.build()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.clock.Advance(time.Millisecond)
		if d := h.eng.Check(ctx, r); !d.Allow || len(d.Upstream) == 0 {
			b.Fatal(describe(d))
		}
	}
}

// TestSignInDryRun: a dry-run policy lets browsers through, and a sign-in
// that a browser completes anyway still opens its session.
func TestSignInDryRun(t *testing.T) {
	h := newSignInHarness(t, func(p *Policy) { p.DryRun = true })
	if d := h.check(req{browser: true}); !d.Allow || !d.DryRun || d.Reason != ReasonNoToken {
		t.Errorf("browser without a session: %s", describe(d))
	}
	d := h.check(req{browser: true, path: h.provider("alice", h.now(), time.Hour, 0)})
	if d.Allow || d.Status != 302 || d.Reason != ReasonSignedIn || cookieOf(t, d) == "" {
		t.Fatalf("callback of a dry-run policy: %s", describe(d))
	}
}

// A callback whose sign-in is already older than the policy's lifetime (S1
// on first sight, the usual path after an 8-hour session) starts a new
// sign-in that asks for credentials, and returns the user to the page the
// transaction was started for, not to the callback.
func TestSignInTooOldRestartsToThePage(t *testing.T) {
	h := newSignInHarness(t)
	d := h.check(req{browser: true, path: h.provider("alice", h.now().Add(-9*time.Hour), time.Hour, 0)})
	if d.Status != 302 || d.Reason != ReasonAbsoluteTimeout || !strings.HasPrefix(d.Location, idpAuthorize) {
		t.Fatalf("callback with an old sign-in: %s", describe(d))
	}
	if want := "state=s" + url.QueryEscape("https://"+appHost+"/app/page?x=1"); !strings.Contains(d.Location, want) {
		t.Errorf("restarted sign-in %q does not return to the page (%s)", d.Location, want)
	}
	if n := len(h.si.starts); n != 1 || h.si.starts[0] == 0 {
		t.Errorf("starts %v: want one that asks for re-authentication", h.si.starts)
	}
}

// A browser that no longer shows its ended session (its cookie expired or
// was dropped) starts a plain sign-in; when the provider answers with a
// sign-in from before the end, the gate asks again, for credentials, once:
// a provider that ignores that too gets the page, not a loop.
func TestS14EndedSessionWithoutItsCookie(t *testing.T) {
	h := newSignInHarness(t)
	signedIn := h.now()
	id := h.signInNow("alice", time.Hour)
	h.advance(31 * time.Minute)
	h.check(req{browser: true, cookie: id}) // idle: ended
	s, _ := h.store.get("app", id)
	h.si.starts = nil
	// Without the cookie: a plain sign-in; the provider's SSO answers with
	// the old sign-in.
	d := h.check(req{browser: true, path: h.provider("alice", signedIn, time.Hour, 0)})
	if d.Status != 302 || !strings.HasPrefix(d.Location, idpAuthorize) || d.Reason != ReasonReauthRequired {
		t.Fatalf("old sign-in on a plain attempt: %s", describe(d))
	}
	if len(h.si.starts) != 1 || h.si.starts[0] < s.EndedAt {
		t.Fatalf("Start's endedAt %v, want the end %d", h.si.starts, s.EndedAt)
	}
	if !strings.Contains(d.Location, url.QueryEscape("https://"+appHost+"/app/page?x=1")) {
		t.Errorf("the new attempt does not return to the page: %s", d.Location)
	}
	// The provider ignores the request for credentials: the page.
	d = h.check(req{browser: true, path: h.provider("alice", signedIn, time.Hour, h.si.starts[0])})
	if d.Reason != ReasonReauthNotPerformed || d.Status != 403 || d.Location != "" {
		t.Fatalf("ignored re-authentication: %s", describe(d))
	}
}

// Paths that need no session do not carry the gate's cookies to the
// application either (S15).
func TestSignInBypassStripsGateCookies(t *testing.T) {
	h := newSignInHarness(t, func(p *Policy) { p.Bypass = []string{"/public/"} })
	d := h.check(req{browser: true, path: "/public/x", cookies: "theme=dark; " + LoginCookiePrefix + "0=txn; " + cookieName + "=abc"})
	mustAllow(t, d, "bypassed path")
	if !d.StripCookies || d.UpstreamCookie != "theme=dark" {
		t.Errorf("cookies upstream on a bypassed path: %v %q", d.StripCookies, d.UpstreamCookie)
	}
}

// TestS9SignInSessionFailOpen: with the store of record down, a fail-open
// policy serves a sign-in session from the store's local copy, with its
// access token upstream; a policy that did not opt in denies.
func TestS9SignInSessionFailOpen(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		h := newSignInHarness(t, func(p *Policy) { p.StoreFailOpen = failOpen })
		fallback := newMemStore(h.clock)
		ns := &nearStore{memStore: h.store, stale: map[string]Session{}, fallback: fallback}
		eng, err := NewEngine(Options{Policies: fakePolicies{appHost: h.app}, Store: ns, Clock: h.clock, Events: h.ev})
		if err != nil {
			t.Fatal(err)
		}
		h.eng = eng
		id := h.signInNow("alice", time.Hour)
		s, _ := h.store.get("app", id)
		if err := fallback.Begin(context.Background(), &s); err != nil { // what this replica knows
			t.Fatal(err)
		}
		h.store.setFail("load", true)
		h.advance(time.Minute)
		d := h.check(req{browser: true, cookie: id})
		if !failOpen {
			if d.Allow || d.Reason != ReasonStoreUnavailable || d.Status != 503 {
				t.Errorf("not fail-open: %s", describe(d))
			}
			continue
		}
		mustAllow(t, d, "fail-open on the local copy")
		if upstream(d, "authorization") != "Bearer AT-stb" {
			t.Errorf("upstream on the fallback: %+v", d.Upstream)
		}
	}
}
