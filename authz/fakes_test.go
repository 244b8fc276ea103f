package authz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// t0 is the fake clock's start: a round second, so that Unix-second values in
// decisions can be computed exactly in the tests.
var t0 = time.Date(2030, 1, 2, 8, 0, 0, 0, time.UTC)

// fakeClock is a Clock that moves only when a test advances it.
type fakeClock = testutil.Clock

// fakeVerifier maps raw token strings to claims or errors.
type fakeVerifier struct {
	mu     sync.Mutex
	claims map[string]*Claims
	errs   map[string]error
	calls  int
}

func newFakeVerifier() *fakeVerifier {
	return &fakeVerifier{claims: map[string]*Claims{}, errs: map[string]error{}}
}

func (v *fakeVerifier) Verify(_ context.Context, raw string, _ time.Time) (*Claims, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	if err, ok := v.errs[raw]; ok {
		return nil, err
	}
	if c, ok := v.claims[raw]; ok {
		return c, nil
	}
	return nil, &TokenError{Reason: ReasonInvalidToken, Detail: "unknown token"}
}

func (v *fakeVerifier) add(raw string, c *Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.claims[raw] = c
}

func (v *fakeVerifier) fail(raw string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs[raw] = err
}

func (v *fakeVerifier) Calls() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls
}

// fakePolicies is a PolicySource over a host map, port stripped and case
// folded; nil for unknown hosts.
type fakePolicies map[string]*Policy

func (f fakePolicies) Match(host string) *Policy {
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	return f[strings.ToLower(host)]
}

// memStore is a map-based Store that keeps the contract faithfully: every
// method is atomic under one mutex, LastActivity/SignIn/KeepUntil only grow,
// ended sessions are never revived, scope ends only rise, and records whose
// KeepUntil has passed (by the fake clock) are absent, as in the real stores.
type memStore struct {
	clock Clock

	mu       sync.Mutex
	sessions map[sKey]Session
	scopes   map[cKey]ScopeState
	// fail makes the named operation ("load", "begin", "touch", "end",
	// "claim", "ready") return an error wrapping ErrStoreUnavailable.
	fail map[string]bool
	// hook, when set, runs before each operation outside the lock, so it
	// may call the store itself (to simulate another replica) or fail it.
	hook func(op, id string) error

	claims map[Digest]int64 // keep-until of each claim

	loads, begins, touches, ends, claimsMade int
}

func (m *memStore) setHook(f func(op, id string) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hook = f
}

func (m *memStore) runHook(op, id string) error {
	m.mu.Lock()
	f := m.hook
	m.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(op, id)
}

func newMemStore(c *fakeClock) *memStore {
	return &memStore{clock: c, sessions: map[sKey]Session{}, scopes: map[cKey]ScopeState{}, fail: map[string]bool{}, claims: map[Digest]int64{}}
}

var _ Store = (*memStore)(nil)

type sKey struct{ policy, id string }
type cKey struct {
	policy string
	scope  Digest
}

func sessionKey(policy, id string) sKey     { return sKey{policy, id} }
func scopeKey(policy string, d Digest) cKey { return cKey{policy, d} }

func (m *memStore) failing(op string) error {
	if m.fail[op] {
		return fmt.Errorf("fake %s: %w", op, ErrStoreUnavailable)
	}
	return nil
}

func (m *memStore) setFail(op string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[op] = on
}

func (m *memStore) nowMs() int64 { return m.clock.Now().UnixMilli() }

// session and scope read records, forgetting those past KeepUntil; m.mu held.
func (m *memStore) session(policy, id string) (Session, bool) {
	s, ok := m.sessions[sessionKey(policy, id)]
	if ok && s.KeepUntil < m.nowMs() {
		delete(m.sessions, sessionKey(policy, id))
		return Session{}, false
	}
	return s, ok
}

func (m *memStore) scope(policy string, d Digest) (ScopeState, bool) {
	st, ok := m.scopes[scopeKey(policy, d)]
	if ok && st.KeepUntil < m.nowMs() {
		delete(m.scopes, scopeKey(policy, d))
		return ScopeState{}, false
	}
	return st, ok
}

func (m *memStore) Load(_ context.Context, policy, id string, scope Digest) (Lookup, error) {
	if err := m.runHook("load", id); err != nil {
		return Lookup{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads++
	if err := m.failing("load"); err != nil {
		return Lookup{}, err
	}
	var l Lookup
	if id != "" {
		l.Session, l.SessionFound = m.session(policy, id)
	}
	if scope != (Digest{}) {
		l.Scope, l.ScopeFound = m.scope(policy, scope)
	}
	return l, nil
}

func (m *memStore) Begin(_ context.Context, s *Session) error {
	if err := m.runHook("begin", s.ID); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.begins++
	if err := m.failing("begin"); err != nil {
		return err
	}
	if s.ID == "" || s.Ended() {
		return errors.New("fake begin: needs a live session with an id")
	}
	if _, dup := m.sessions[sessionKey(s.Policy, s.ID)]; dup {
		return errors.New("fake begin: duplicate session id")
	}
	m.sessions[sessionKey(s.Policy, s.ID)] = *s
	st, _ := m.scope(s.Policy, s.Scope)
	st.Begin(s.ID, s.KeepUntil)
	m.scopes[scopeKey(s.Policy, s.Scope)] = st
	return nil
}

func (m *memStore) Touch(_ context.Context, policy, id string, t Touch) (Session, bool, error) {
	if err := m.runHook("touch", id); err != nil {
		return Session{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.touches++
	if err := m.failing("touch"); err != nil {
		return Session{}, false, err
	}
	s, ok := m.session(policy, id)
	if !ok || s.Ended() {
		return s, ok, nil
	}
	s.Advance(t)
	m.sessions[sessionKey(policy, id)] = s
	return s, true, nil
}

func (m *memStore) End(_ context.Context, policy, id string, scope Digest, e End) (Session, bool, error) {
	if err := m.runHook("end", id); err != nil {
		return Session{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ends++
	if err := m.failing("end"); err != nil {
		return Session{}, false, err
	}
	if e.At <= 0 {
		return Session{}, false, fmt.Errorf("fake end at %d", e.At)
	}
	var s Session
	ended := false
	if id != "" {
		var ok bool
		if s, ok = m.session(policy, id); ok && s.EndWith(e) {
			m.sessions[sessionKey(policy, id)] = s
			ended = true
		}
	}
	st, _ := m.scope(policy, scope)
	st.Raise(e)
	m.scopes[scopeKey(policy, scope)] = st
	return s, ended, nil
}

func (m *memStore) Claim(_ context.Context, key Digest, keepUntil int64) (bool, error) {
	if err := m.runHook("claim", ""); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claimsMade++
	if err := m.failing("claim"); err != nil {
		return false, err
	}
	if until, ok := m.claims[key]; ok && until >= m.nowMs() {
		return false, nil
	}
	m.claims[key] = keepUntil
	return true, nil
}

func (m *memStore) Ready(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failing("ready")
}

// get returns a session record directly, for assertions.
func (m *memStore) get(policy, id string) (Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.session(policy, id)
}

type storeCounts struct{ loads, begins, touches, ends int }

func (m *memStore) counts() storeCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return storeCounts{m.loads, m.begins, m.touches, m.ends}
}

// recEvents records every event.
type recEvents struct {
	mu       sync.Mutex
	decided  []Decision
	started  []SessionEvent
	ended    []SessionEvent
	reauthed []SessionEvent
}

func (r *recEvents) Decided(d *Decision, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decided = append(r.decided, *d)
}

func (r *recEvents) SessionStarted(e SessionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, e)
}

func (r *recEvents) SessionEnded(e SessionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = append(r.ended, e)
}

func (r *recEvents) SessionReauthenticated(e SessionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reauthed = append(r.reauthed, e)
}

func (r *recEvents) endedCopy() []SessionEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]SessionEvent(nil), r.ended...)
}

func (r *recEvents) counts() (decided, started, ended, reauthed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.decided), len(r.started), len(r.ended), len(r.reauthed)
}

// errReader fails every read, to exercise session id generation failures.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

const (
	appHost    = "app.example.com"
	otherHost  = "other.example.com"
	issuer     = "https://idp.example.com"
	cookieName = "__Host-sessiongate"
	loginURL   = "https://login.example.com/start"
	signedOut  = "https://login.example.com/signed-out"
)

// testPolicy is the policy most tests start from: seconds-scale limits read
// easily next to the fake clock.
func testPolicy(name string, hosts []string, v Verifier) *Policy {
	return &Policy{
		Name:            name,
		Hosts:           hosts,
		AbsoluteTimeout: 8 * time.Hour,
		IdleTimeout:     30 * time.Minute,
		WarnBefore:      20 * time.Minute,
		PassivePaths:    []string{"/api/poll"},
		Bypass:          []string{"/healthz", "/public/"},
		TokenSources: []TokenSource{
			{Kind: FromHeader, Name: "authorization"},
			{Kind: FromCookie, Name: "access_token"},
		},
		MaxTokenBytes: 16 << 10,
		Verifier:      v,
		Login:         Login{URL: loginURL, ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"},
		Logout:        Logout{Path: "/logout", RedirectURL: signedOut},
		Cookie:        Cookie{Name: cookieName, SameSite: "Lax"},
	}
}

// harness wires an Engine over the fakes: policy "app" on appHost and policy
// "other" on otherHost, sharing one store and one verifier.
type harness struct {
	t      testing.TB
	clock  *fakeClock
	store  *memStore
	ver    *fakeVerifier
	events *recEvents
	app    *Policy
	other  *Policy
	eng    *Engine
	n      int // token counter
}

func newHarness(t testing.TB, mod ...func(*Policy)) *harness {
	t.Helper()
	h := &harness{t: t, clock: testutil.NewClock(t0), ver: newFakeVerifier(), events: &recEvents{}}
	h.store = newMemStore(h.clock)
	h.app = testPolicy("app", []string{appHost}, h.ver)
	h.other = testPolicy("other", []string{otherHost}, h.ver)
	for _, m := range mod {
		m(h.app)
	}
	eng, err := NewEngine(Options{
		Policies: fakePolicies{appHost: h.app, otherHost: h.other},
		Store:    h.store, Clock: h.clock, Events: h.events,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return h
}

// tok describes a token to mint; zero times mean the claim is absent.
type tok struct {
	iss, sub, sid string
	authTime      time.Time
	iat           time.Time // default: now
	exp           time.Time // default: iat + 1h
	bind          []string
}

// mint registers a token with the fake verifier and returns its raw string.
func (h *harness) mint(k tok) string {
	h.n++
	raw := fmt.Sprintf("eyJ.tok-%d-%s.sig", h.n, k.sub)
	h.ver.add(raw, claimsFor(k, h.clock.Now()))
	return raw
}

func claimsFor(k tok, now time.Time) *Claims {
	if k.iss == "" {
		k.iss = issuer
	}
	if k.iat.IsZero() {
		k.iat = now
	}
	if k.exp.IsZero() {
		k.exp = k.iat.Add(time.Hour)
	}
	c := &Claims{
		Issuer: k.iss, Subject: k.sub, SID: k.sid, Audience: []string{"app"},
		IssuedAt: k.iat.UnixMilli(), Expiry: k.exp.UnixMilli(), Bind: k.bind,
		Identity: IdentityDigest(k.iss, k.sub, k.bind),
		Scope:    ScopeDigest(k.iss, k.sub, k.sid),
	}
	if !k.authTime.IsZero() {
		c.AuthTime = k.authTime.UnixMilli()
	}
	return c
}

// req describes a request; the zero value is an API GET on appHost.
type req struct {
	host    string
	path    string
	scheme  string
	token   string // sent as "Authorization: Bearer <token>"
	cookie  string // session id sent in the gate's cookie
	cookies string // extra raw Cookie header content
	browser bool
	headers map[string]string
}

func (r req) build() *Request {
	h := HeaderMap{}
	if r.token != "" {
		h["authorization"] = "Bearer " + r.token
	}
	var cookies []string
	if r.cookie != "" {
		cookies = append(cookies, cookieName+"="+r.cookie)
	}
	if r.cookies != "" {
		cookies = append(cookies, r.cookies)
	}
	if len(cookies) > 0 {
		h["cookie"] = strings.Join(cookies, "; ")
	}
	if r.browser {
		h["accept"] = "text/html,application/xhtml+xml"
		h["sec-fetch-mode"] = "navigate"
	}
	for k, v := range r.headers {
		h[k] = v
	}
	if r.host == "" {
		r.host = appHost
	}
	if r.path == "" {
		r.path = "/app/page"
	}
	if r.scheme == "" {
		r.scheme = "https"
	}
	return &Request{Host: r.host, Path: r.path, Method: "GET", Scheme: r.scheme, Headers: h, SourceAddr: "192.0.2.1:5000", RequestID: "req-1"}
}

func (h *harness) check(r req) Decision {
	h.t.Helper()
	return h.eng.Check(context.Background(), r.build())
}

// advance moves the fake clock.
func (h *harness) advance(d time.Duration) { h.clock.Advance(d) }

func (h *harness) now() time.Time { return h.clock.Now() }

// cookieOf returns the session id a decision's Set-Cookie hands out, "" if none.
func cookieOf(t testing.TB, d Decision) string {
	t.Helper()
	for _, sc := range d.SetCookie {
		v, ok := strings.CutPrefix(sc, cookieName+"=")
		if !ok {
			t.Fatalf("Set-Cookie for another cookie: %q", sc)
		}
		id, _, _ := strings.Cut(v, ";")
		if id != "" {
			return id
		}
	}
	return ""
}

// clearsCookie reports whether a decision deletes the session cookie.
func clearsCookie(d Decision) bool {
	for _, sc := range d.SetCookie {
		if strings.HasPrefix(sc, cookieName+"=;") && strings.Contains(sc, "Max-Age=0") {
			return true
		}
	}
	return false
}

// mustAllow fails unless d allows with a session.
func mustAllow(t testing.TB, d Decision, what string) {
	t.Helper()
	if !d.Allow || d.DryRun || d.Reason != ReasonNone {
		t.Fatalf("%s: want allow, got %s", what, describe(d))
	}
}

// mustDeny fails unless d denies with reason.
func mustDeny(t testing.TB, d Decision, reason Reason, what string) {
	t.Helper()
	if d.Allow || d.Reason != reason {
		t.Fatalf("%s: want deny %s, got %s", what, reason, describe(d))
	}
}

func describe(d Decision) string {
	return fmt.Sprintf("{allow=%v dry=%v reason=%q status=%d loc=%q user=%q setcookie=%q}",
		d.Allow, d.DryRun, d.Reason, d.Status, d.Location, d.User, d.SetCookie)
}

// loginQuery parses a login redirect's query.
func loginQuery(t testing.TB, loc string) url.Values {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != loginURL {
		t.Fatalf("Location %q does not go to the login URL", loc)
	}
	return u.Query()
}

// hasReauth reports whether a login redirect asks for credentials again.
func hasReauth(t testing.TB, loc string) bool {
	t.Helper()
	q := loginQuery(t, loc)
	return q.Get("prompt") == "login" && q.Get("max_age") == "0"
}

// signIn presents a fresh token (auth_time now unless set) without a cookie
// and returns the token and the session cookie handed out. The cookie is ""
// when the request continued its scope's live session instead of opening one.
func (h *harness) signIn(k tok) (raw, cookie string) {
	h.t.Helper()
	if k.authTime.IsZero() {
		k.authTime = h.now()
	}
	raw = h.mint(k)
	d := h.check(req{token: raw, browser: true})
	mustAllow(h.t, d, "sign-in")
	return raw, cookieOf(h.t, d)
}

func ms(t time.Time) int64 { return t.UnixMilli() }
