package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

func TestNewEngineNeedsPoliciesAndStore(t *testing.T) {
	if _, err := NewEngine(Options{Store: newMemStore(testutil.NewClock(t0))}); err == nil {
		t.Error("NewEngine without Policies: want error")
	}
	if _, err := NewEngine(Options{Policies: fakePolicies{}}); err == nil {
		t.Error("NewEngine without Store: want error")
	}
	e, err := NewEngine(Options{Policies: fakePolicies{}, Store: newMemStore(testutil.NewClock(t0))})
	if err != nil {
		t.Fatal(err)
	}
	// Defaults are usable: an unknown host decides without a clock, events
	// or logger having been injected.
	if d := e.Check(context.Background(), &Request{Host: "x"}); d.Reason != ReasonUnknownHost {
		t.Errorf("defaults: got %s", describe(d))
	}
}

func TestNewSessionDecision(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice", authTime: h.now()})
	d := h.check(req{token: raw})
	mustAllow(t, d, "first request")
	if d.User != "alice" || d.Policy != "app" || d.Status != 0 || d.Location != "" {
		t.Errorf("allow decision: %s", describe(d))
	}
	if d.Label() != "allow" || d.Denial() {
		t.Errorf("Label %q Denial %v", d.Label(), d.Denial())
	}
	if len(d.SetCookie) != 1 {
		t.Fatalf("Set-Cookie: %q", d.SetCookie)
	}
	id := cookieOf(t, d)
	if !validSessionID(id) {
		t.Errorf("session id %q is not 32 base64url characters", id)
	}
	want := cookieName + "=" + id + "; Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Lax"
	if d.SetCookie[0] != want {
		t.Errorf("Set-Cookie\n got %q\nwant %q", d.SetCookie[0], want)
	}
	if want := t0.Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("SessionExpiresAt %d, want %d", d.SessionExpiresAt, want)
	}
	if want := t0.Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
		t.Errorf("IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
	}
	if d.Warn {
		t.Errorf("ExpiresIn %d outside the warning window", d.ExpiresIn)
	}
	s, ok := h.store.get("app", id)
	if !ok || s.Subject != "alice" || s.SignIn != ms(t0) || s.Created != ms(t0) || s.LastActivity != ms(t0) || s.Ended() {
		t.Errorf("stored session %+v (found %v)", s, ok)
	}
	if s.KeepUntil < ms(t0.Add(8*time.Hour)) {
		t.Errorf("KeepUntil %d before the absolute deadline", s.KeepUntil)
	}
	if _, started, _, _ := h.events.counts(); started != 1 {
		t.Errorf("SessionStarted %d times", started)
	}
	ev := h.events.started[0]
	if ev.SessionID != id || ev.Subject != "alice" || ev.Policy != "app" || !ev.At.Equal(t0) || ev.SourceAddr == "" || ev.RequestID == "" {
		t.Errorf("SessionStarted %+v", ev)
	}

	// The next request with the cookie resumes: no new cookie.
	h.advance(time.Minute)
	d = h.check(req{token: raw, cookie: id})
	mustAllow(t, d, "second request")
	if len(d.SetCookie) != 0 {
		t.Errorf("resumed session re-sets the cookie: %q", d.SetCookie)
	}
	if decided, started, _, _ := h.events.counts(); decided != 2 || started != 1 {
		t.Errorf("Decided %d, SessionStarted %d", decided, started)
	}
}

func TestSessionCookieMaxAgeRoundsUp(t *testing.T) {
	// A sub-second lifetime is valid; Max-Age=0 would tell the browser to
	// delete the cookie it is being given.
	h := newHarness(t, func(p *Policy) {
		p.AbsoluteTimeout, p.IdleTimeout, p.WarnBefore = 1500*time.Millisecond, 500*time.Millisecond, 0
	})
	d := h.check(req{token: h.mint(tok{sub: "alice"})})
	mustAllow(t, d, "sign-in")
	if !strings.Contains(d.SetCookie[0], "; Max-Age=2;") {
		t.Errorf("Set-Cookie %q: want Max-Age=2", d.SetCookie[0])
	}
}

// ---- tokens and cookies -------------------------------------------------

func TestTokenPresentation(t *testing.T) {
	h := newHarness(t, func(p *Policy) {
		p.TokenSources = append(p.TokenSources, TokenSource{Kind: FromHeader, Name: "x-token"})
	})
	good := h.mint(tok{sub: "alice"})
	other := h.mint(tok{sub: "bob"})
	tests := []struct {
		name    string
		headers map[string]string
		want    Reason
		user    string
	}{
		{"bearer", map[string]string{"authorization": "Bearer " + good}, ReasonNone, "alice"},
		{"bearer lower case", map[string]string{"authorization": "bearer " + good}, ReasonNone, "alice"},
		{"bearer upper case, extra spaces", map[string]string{"authorization": "BEARER   " + good + "  "}, ReasonNone, "alice"},
		{"no authorization", nil, ReasonNoToken, ""},
		{"basic scheme", map[string]string{"authorization": "Basic " + good}, ReasonNoToken, ""},
		{"token scheme", map[string]string{"authorization": "Token " + good}, ReasonNoToken, ""},
		{"bare token", map[string]string{"authorization": good}, ReasonNoToken, ""},
		{"scheme only", map[string]string{"authorization": "Bearer"}, ReasonNoToken, ""},
		{"scheme and space", map[string]string{"authorization": "Bearer "}, ReasonNoToken, ""},
		{"scheme and spaces", map[string]string{"authorization": "Bearer    "}, ReasonNoToken, ""},
		{"cookie source", map[string]string{"cookie": "theme=dark; access_token=" + good}, ReasonNone, "alice"},
		{"quoted cookie", map[string]string{"cookie": `access_token="` + good + `"`}, ReasonNone, "alice"},
		{"empty cookie", map[string]string{"cookie": "access_token="}, ReasonNoToken, ""},
		{"prefixed cookie name is another cookie", map[string]string{"cookie": "xaccess_token=" + good}, ReasonNoToken, ""},
		{"header before cookie", map[string]string{"authorization": "Bearer " + good, "cookie": "access_token=" + other}, ReasonNone, "alice"},
		{"non-bearer header falls through to cookie", map[string]string{"authorization": "Basic Zm9vOmJhcg==", "cookie": "access_token=" + other}, ReasonNone, "bob"},
		{"custom header, trimmed", map[string]string{"x-token": "  " + other + " "}, ReasonNone, "bob"},
		{"unknown token", map[string]string{"authorization": "Bearer nope"}, ReasonInvalidToken, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := h.check(req{headers: tc.headers})
			if d.Reason != tc.want || d.User != tc.user || d.Allow != (tc.want == ReasonNone) {
				t.Fatalf("got %s, want reason %q user %q", describe(d), tc.want, tc.user)
			}
			if tc.want == ReasonNoToken && (d.Status != 401 || d.Authenticate != `Bearer realm="sessiongate"`) {
				t.Errorf("no_token challenge: %s %q", describe(d), d.Authenticate)
			}
		})
	}
}

func TestTokenVerificationFailures(t *testing.T) {
	h := newHarness(t)
	h.ver.fail("expired", &TokenError{Reason: ReasonTokenExpired, Detail: "exp"})
	h.ver.fail("bad-sig", &TokenError{Reason: ReasonInvalidToken, Detail: "signature"})
	h.ver.fail("weird", fmt.Errorf("some other failure"))
	tests := []struct {
		token string
		want  Reason
	}{
		{"expired", ReasonTokenExpired},
		{"bad-sig", ReasonInvalidToken},
		{"weird", ReasonInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.token, func(t *testing.T) {
			d := h.check(req{token: tc.token})
			mustDeny(t, d, tc.want, tc.token)
			want := `Bearer realm="sessiongate", error="invalid_token", error_description="` + tc.want.String() + `"`
			if d.Status != 401 || d.Authenticate != want {
				t.Errorf("status %d challenge %q, want 401 %q", d.Status, d.Authenticate, want)
			}
			d = h.check(req{token: tc.token, browser: true})
			mustDeny(t, d, tc.want, tc.token+" browser")
			if d.Status != 302 || hasReauth(t, d.Location) {
				t.Errorf("browser: %s", describe(d))
			}
		})
	}
	if c := h.store.counts(); c != (storeCounts{}) {
		t.Errorf("failed verification touched the store: %+v", c)
	}
}

func TestMaxTokenBytes(t *testing.T) {
	h := newHarness(t, func(p *Policy) { p.MaxTokenBytes = 64 })
	exact := strings.Repeat("a", 64)
	h.ver.add(exact, claimsFor(tok{sub: "alice"}, h.now()))
	over := strings.Repeat("a", 65)
	h.ver.add(over, claimsFor(tok{sub: "alice"}, h.now()))

	mustAllow(t, h.check(req{token: exact}), "token at the limit")
	calls := h.ver.Calls()
	d := h.check(req{token: over})
	mustDeny(t, d, ReasonInvalidToken, "token over the limit")
	if h.ver.Calls() != calls {
		t.Error("an oversized token reached the verifier")
	}
	d = h.check(req{headers: map[string]string{"cookie": "access_token=" + over}})
	mustDeny(t, d, ReasonInvalidToken, "oversized cookie token")
}

func TestSessionCookieAloneIsNeverACredential(t *testing.T) {
	h := newHarness(t)
	_, cookie := h.signIn(tok{sub: "alice"})

	d := h.check(req{cookie: cookie})
	mustDeny(t, d, ReasonNoToken, "API with live cookie only")
	if d.Status != 401 {
		t.Errorf("status %d", d.Status)
	}
	d = h.check(req{cookie: cookie, browser: true})
	mustDeny(t, d, ReasonNoToken, "browser with live cookie only")
	if d.Status != 302 || hasReauth(t, d.Location) {
		t.Errorf("a live session did not end: no reauth params expected: %s", describe(d))
	}
	// The session is still there for requests with a token.
	if s, ok := h.store.get("app", cookie); !ok || s.Ended() {
		t.Errorf("session %+v found %v", s, ok)
	}
}

func TestMalformedSessionCookiesAreIgnored(t *testing.T) {
	for _, v := range []string{
		"short",
		strings.Repeat("A", 31),
		strings.Repeat("A", 33),
		strings.Repeat("A", 31) + ".",
		strings.Repeat("A", 31) + "=",
		strings.Repeat("A", 31) + "+",
		strings.Repeat("A", 30) + "é", // 32 bytes, not base64url
		"",
	} {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			h := newHarness(t)
			raw := h.mint(tok{sub: "alice"})
			d := h.check(req{token: raw, cookies: cookieName + "=" + v})
			mustAllow(t, d, "token with malformed cookie")
			if id := cookieOf(t, d); id == v || !validSessionID(id) {
				t.Errorf("new session id %q", id)
			}
			if c := h.store.counts(); c.loads != 1 {
				t.Errorf("loads %d: the malformed id must not be looked up", c.loads)
			}
			// Without a token, still no_token and never a reauth prompt.
			d = h.check(req{cookies: cookieName + "=" + v, browser: true})
			if d.Reason != ReasonNoToken || hasReauth(t, d.Location) {
				t.Errorf("no token: %s", describe(d))
			}
		})
	}
}

// ---- S1 absolute lifetime ----------------------------------------------

func TestS1AbsoluteLifetime(t *testing.T) {
	tests := []struct {
		name     string
		authTime time.Duration // relative to the first request; 0: no claim
		deadline time.Duration // relative to the first request
	}{
		{"sign_in is auth_time", -time.Hour, 7 * time.Hour},
		{"sign_in is auth_time, just now", 0, 8 * time.Hour},
		{"sign_in is the session start without auth_time", -1, 8 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			k := tok{sub: "alice"}
			if tc.authTime != -1 {
				k.authTime = t0.Add(tc.authTime)
			}
			raw := h.mint(k)
			d := h.check(req{token: raw})
			mustAllow(t, d, "first request")
			cookie := cookieOf(t, d)
			deadline := t0.Add(tc.deadline)
			if d.SessionExpiresAt != deadline.Unix() {
				t.Fatalf("SessionExpiresAt %d, want %d", d.SessionExpiresAt, deadline.Unix())
			}
			// Stay active (20m < idle 30m) right up to the deadline.
			for h.now().Add(20 * time.Minute).Before(deadline) {
				h.advance(20 * time.Minute)
				mustAllow(t, h.check(req{token: raw, cookie: cookie}), "within the lifetime at "+h.now().Sub(t0).String())
			}
			h.advance(deadline.Sub(h.now()))
			d = h.check(req{token: raw, cookie: cookie})
			mustAllow(t, d, "exactly at the absolute deadline")
			if d.SessionExpiresAt != deadline.Unix() {
				t.Errorf("SessionExpiresAt moved to %d", d.SessionExpiresAt)
			}
			h.advance(time.Millisecond)
			d = h.check(req{token: raw, cookie: cookie})
			mustDeny(t, d, ReasonAbsoluteTimeout, "1ms past the deadline")
			if d.Status != 401 || !strings.Contains(d.Authenticate, `error="insufficient_user_authentication"`) ||
				!strings.Contains(d.Authenticate, `error_description="absolute_timeout"`) || !strings.Contains(d.Authenticate, "max_age=0") {
				t.Errorf("challenge %q", d.Authenticate)
			}
			if !clearsCookie(d) {
				t.Errorf("the discovering request does not clear the cookie: %q", d.SetCookie)
			}
			ends := h.events.endedCopy()
			if len(ends) != 1 || ends[0].Cause != CauseAbsolute || ends[0].SessionID != cookie {
				t.Errorf("SessionEnded events %+v", ends)
			}
		})
	}
}

func TestS1AfterTheSessionRecordIsForgotten(t *testing.T) {
	// A live record is kept a little past its absolute deadline. A client
	// that comes back after that still cannot go on: its sign-in is too old
	// on first sight, and that end is recorded for the scope.
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	for range 23 {
		h.advance(20 * time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie}), "active")
	}
	h.advance(30 * time.Minute)
	if _, ok := h.store.get("app", cookie); ok {
		t.Fatal("record still kept: the test does not test forgetting")
	}
	d := h.check(req{token: raw, cookie: cookie, browser: true})
	mustDeny(t, d, ReasonAbsoluteTimeout, "after the record was forgotten")
	if !hasReauth(t, d.Location) {
		t.Errorf("no reauth params: %s", d.Location)
	}
	h.advance(time.Second)
	refreshed := h.mint(tok{sub: "alice", authTime: t0})
	mustDeny(t, h.check(req{token: refreshed}), ReasonReauthRequired, "refreshed token")
}

func TestS1ReauthenticationRestartsTheLifetime(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice", sid: "idp-1"})
	for range 21 { // 7h
		h.advance(20 * time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie}), "active")
	}
	// The user signs in again at the IdP (same IdP session, newer auth_time).
	reauthAt := h.now()
	fresh := h.mint(tok{sub: "alice", sid: "idp-1", authTime: reauthAt})
	d := h.check(req{token: fresh, cookie: cookie})
	mustAllow(t, d, "re-authenticated")
	if want := reauthAt.Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("SessionExpiresAt %d, want %d", d.SessionExpiresAt, want)
	}
	if len(d.SetCookie) != 0 {
		t.Errorf("re-authentication keeps the session: Set-Cookie %q", d.SetCookie)
	}
	if s, _ := h.store.get("app", cookie); s.SignIn != ms(reauthAt) {
		t.Errorf("stored SignIn %d, want %d", s.SignIn, ms(reauthAt))
	}
	_, started, _, reauthed := h.events.counts()
	if started != 1 || reauthed != 1 || h.events.reauthed[0].SessionID != cookie {
		t.Errorf("started %d reauthenticated %d %+v", started, reauthed, h.events.reauthed)
	}
	// Past the first sign-in's deadline the session lives on.
	for range 6 {
		h.advance(20 * time.Minute)
		mustAllow(t, h.check(req{token: fresh, cookie: cookie}), "past the original deadline")
	}
	// An older token (older auth_time) does not move SignIn back.
	d = h.check(req{token: raw, cookie: cookie})
	mustAllow(t, d, "older token, same session")
	if want := reauthAt.Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("old token moved SessionExpiresAt to %d", d.SessionExpiresAt)
	}
	if _, _, _, reauthed := h.events.counts(); reauthed != 1 {
		t.Errorf("reauthenticated %d times", reauthed)
	}
}

func TestS1SignInTooOldOnFirstSight(t *testing.T) {
	h := newHarness(t)
	// Exactly at the limit is allowed.
	atLimit := h.mint(tok{sub: "carol", authTime: h.now().Add(-8 * time.Hour)})
	mustAllow(t, h.check(req{token: atLimit}), "auth_time exactly absolute_timeout ago")

	authTime := h.now().Add(-8*time.Hour - time.Second)
	raw := h.mint(tok{sub: "alice", authTime: authTime, iat: h.now().Add(-time.Minute)})
	d := h.check(req{token: raw, browser: true})
	mustDeny(t, d, ReasonAbsoluteTimeout, "stale auth_time")
	if d.Status != 302 || !hasReauth(t, d.Location) {
		t.Errorf("want a login redirect with reauth params: %s", describe(d))
	}
	if len(d.SetCookie) != 0 {
		t.Errorf("no session, yet Set-Cookie %q", d.SetCookie)
	}
	d = h.check(req{token: raw})
	mustDeny(t, d, ReasonReauthRequired, "same token again")
	if d.Status != 401 || !strings.Contains(d.Authenticate, "insufficient_user_authentication") {
		t.Errorf("API: %s %q", describe(d), d.Authenticate)
	}
	// A silently refreshed token of that sign-in stays refused.
	h.advance(time.Minute)
	refreshed := h.mint(tok{sub: "alice", authTime: authTime})
	mustDeny(t, h.check(req{token: refreshed}), ReasonReauthRequired, "refreshed token")
	// A new sign-in opens a session.
	h.advance(time.Second)
	fresh := h.mint(tok{sub: "alice", authTime: h.now()})
	d = h.check(req{token: fresh})
	mustAllow(t, d, "new sign-in")
	if cookieOf(t, d) == "" {
		t.Error("new session without a cookie")
	}
	if _, started, ended, _ := h.events.counts(); started != 2 || ended != 0 {
		t.Errorf("started %d ended %d", started, ended)
	}
}

// ---- S2 inactivity ------------------------------------------------------

func TestS2IdleTimeout(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(30 * time.Minute)
	d := h.check(req{token: raw, cookie: cookie})
	mustAllow(t, d, "exactly idle_timeout after the last activity")
	if want := h.now().Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
		t.Errorf("IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
	}
	h.advance(30*time.Minute + time.Millisecond)
	d = h.check(req{token: raw, cookie: cookie, browser: true})
	mustDeny(t, d, ReasonIdleTimeout, "idle")
	if d.Status != 302 || !hasReauth(t, d.Location) || !clearsCookie(d) {
		t.Errorf("idle browser denial: %s", describe(d))
	}
	s, _ := h.store.get("app", cookie)
	if s.Cause != CauseIdle || s.EndedAt != ms(h.now()) {
		t.Errorf("stored end %+v", s)
	}
}

func TestS2SlidingActivity(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	// Requests 29 minutes apart keep the session alive over ten idle periods.
	for i := range 10 {
		h.advance(29 * time.Minute)
		d := h.check(req{token: raw, cookie: cookie})
		mustAllow(t, d, fmt.Sprintf("request %d", i))
		if want := h.now().Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
			t.Fatalf("IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
		}
	}
	if _, _, ended, _ := h.events.counts(); ended != 0 {
		t.Errorf("ended %d", ended)
	}
}

func TestS2PassivePathsAreNotActivity(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	idleAt := t0.Add(30 * time.Minute).Unix()
	for _, p := range []string{"/api/poll", "/api/poll/", "/api/poll/x?since=1", "/api/poll#frag"} {
		h.advance(5 * time.Minute)
		d := h.check(req{token: raw, cookie: cookie, path: p})
		mustAllow(t, d, "passive "+p)
		if d.IdleExpiresAt != idleAt {
			t.Errorf("passive %s moved IdleExpiresAt to %d", p, d.IdleExpiresAt)
		}
	}
	if s, _ := h.store.get("app", cookie); s.LastActivity != ms(t0) {
		t.Errorf("passive requests advanced LastActivity to %d", s.LastActivity)
	}
	// "/api/polling" is not under "/api/poll": it is activity.
	h.advance(5 * time.Minute)
	d := h.check(req{token: raw, cookie: cookie, path: "/api/polling"})
	mustAllow(t, d, "/api/polling")
	if want := h.now().Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
		t.Errorf("/api/polling IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
	}
	// With only passive requests after it, the session idles out.
	lastActive := h.now()
	for h.now().Before(lastActive.Add(30 * time.Minute)) {
		h.advance(10 * time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie, path: "/api/poll"}), "passive")
	}
	h.advance(time.Millisecond)
	mustDeny(t, h.check(req{token: raw, cookie: cookie, path: "/api/poll"}), ReasonIdleTimeout, "passive after idle")
}

func TestS2ActivityGranularityCoalescesWrites(t *testing.T) {
	h := newHarness(t, func(p *Policy) { p.ActivityGranularity = 5 * time.Minute })
	raw, cookie := h.signIn(tok{sub: "alice"})
	before := h.store.counts().touches
	// One request a minute for an hour: LastActivity is written every 5m.
	for range 60 {
		h.advance(time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie}), "steady traffic")
	}
	if got := h.store.counts().touches - before; got != 12 {
		t.Errorf("%d Touch calls for 60 requests, want 12", got)
	}
	s, _ := h.store.get("app", cookie)
	if s.LastActivity != ms(t0.Add(time.Hour)) {
		t.Errorf("LastActivity %v, want %v", time.UnixMilli(s.LastActivity).Sub(t0), time.Hour)
	}
	// Requests inside the granularity after the last write are not recorded:
	// the session may time out up to the granularity early, never late.
	lastWrite := h.now()
	for range 4 {
		h.advance(time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie}), "unrecorded activity")
	}
	h.advance(lastWrite.Add(30*time.Minute + time.Millisecond).Sub(h.now()))
	mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonIdleTimeout, "idle from the last recorded activity")
}

// ---- S3 ended stays ended ----------------------------------------------

// endings end alice's session (token raw, cookie) in each of the four ways and
// return the discovering request's decision.
var endings = []struct {
	name   string
	cause  EndCause
	reason Reason
	end    func(h *harness, raw, cookie string) Decision
}{
	{"idle", CauseIdle, ReasonIdleTimeout, func(h *harness, raw, cookie string) Decision {
		h.advance(31 * time.Minute)
		return h.check(req{token: raw, cookie: cookie})
	}},
	{"absolute", CauseAbsolute, ReasonAbsoluteTimeout, func(h *harness, raw, cookie string) Decision {
		for range 24 { // 8h of activity
			h.advance(20 * time.Minute)
			mustAllow(h.t, h.check(req{token: raw, cookie: cookie}), "before the absolute deadline")
		}
		h.advance(30 * time.Second)
		return h.check(req{token: raw, cookie: cookie})
	}},
	{"sign-out", CauseSignedOut, ReasonSignedOut, func(h *harness, raw, cookie string) Decision {
		h.advance(time.Minute)
		return h.check(req{token: raw, cookie: cookie, path: "/logout", browser: true})
	}},
	{"identity mismatch", CauseIdentityMismatch, ReasonIdentityMismatch, func(h *harness, raw, cookie string) Decision {
		h.advance(time.Minute)
		return h.check(req{token: h.mint(tok{sub: "mallory", authTime: h.now()}), cookie: cookie})
	}},
}

func TestS3EndedStaysEnded(t *testing.T) {
	for _, ending := range endings {
		t.Run(ending.name, func(t *testing.T) {
			for _, withSID := range []bool{false, true} {
				t.Run(fmt.Sprintf("sid=%v", withSID), func(t *testing.T) {
					h := newHarness(t)
					k := tok{sub: "alice"}
					if withSID {
						k.sid = "idp-session-1"
					}
					k.authTime = h.now()
					raw, cookie := h.signIn(k)
					d := ending.end(h, raw, cookie)
					if d.Allow || d.Reason != ending.reason {
						t.Fatalf("end: %s", describe(d))
					}
					endedAt := h.now()
					h.advance(time.Second)

					refreshed := k
					refreshed.iat = h.now()
					silent := h.mint(refreshed)
					noAuthTime := k
					noAuthTime.authTime = time.Time{}
					noAuthTime.iat = endedAt
					iatAtEnd := h.mint(noAuthTime)
					for _, r := range []struct {
						name string
						req  req
					}{
						{"same cookie, same token", req{token: raw, cookie: cookie}},
						{"same token, no cookie", req{token: raw}},
						{"silently refreshed token, with cookie", req{token: silent, cookie: cookie}},
						{"silently refreshed token, no cookie", req{token: silent}},
						{"token without auth_time issued at the end", req{token: iatAtEnd, cookie: cookie}},
						{"same cookie, made-up token cookie absent", req{token: raw, cookies: "theme=dark", cookie: cookie}},
					} {
						d := h.check(r.req)
						mustDeny(t, d, ReasonReauthRequired, r.name)
						r.req.browser = true
						d = h.check(r.req)
						if d.Status != 302 || !hasReauth(t, d.Location) {
							t.Errorf("%s (browser): %s", r.name, describe(d))
						}
					}
					// Without a token the ended cookie still asks for credentials.
					d = h.check(req{cookie: cookie, browser: true})
					if d.Reason != ReasonNoToken || !hasReauth(t, d.Location) {
						t.Errorf("ended cookie without token: %s", describe(d))
					}
					if s, ok := h.store.get("app", cookie); !ok || !s.Ended() || s.Cause != ending.cause {
						t.Errorf("stored session %+v found %v", s, ok)
					}
					ends := h.events.endedCopy()
					if len(ends) != 1 || ends[0].Cause != ending.cause || ends[0].SessionID != cookie || ends[0].Subject != "alice" {
						t.Errorf("SessionEnded events: %+v", ends)
					}

					// A new sign-in after the end opens a new session, new cookie.
					fresh := k
					fresh.authTime, fresh.iat = h.now(), h.now()
					raw2 := h.mint(fresh)
					d = h.check(req{token: raw2, cookie: cookie})
					mustAllow(t, d, "new sign-in with the old cookie")
					cookie2 := cookieOf(t, d)
					if cookie2 == "" || cookie2 == cookie {
						t.Fatalf("new session cookie %q (old %q)", cookie2, cookie)
					}
					mustAllow(t, h.check(req{token: raw2, cookie: cookie2}), "new session")
					mustDeny(t, h.check(req{token: raw, cookie: cookie2}), ReasonReauthRequired, "old token, new cookie")
					if s, _ := h.store.get("app", cookie); s.EndedAt == 0 {
						t.Error("the old session was revived")
					}
				})
			}
		})
	}
}

func TestS3NewSignInByIatWithoutAuthTime(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice"}) // no auth_time: sign-in is iat
	d := h.check(req{token: raw})
	mustAllow(t, d, "first")
	cookie := cookieOf(t, d)
	h.advance(31 * time.Minute)
	mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonIdleTimeout, "idle")
	endedAt := h.now()
	mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, "replay")
	atEnd := h.mint(tok{sub: "alice", iat: endedAt})
	mustDeny(t, h.check(req{token: atEnd}), ReasonReauthRequired, "iat == end")
	h.advance(time.Millisecond)
	after := h.mint(tok{sub: "alice"})
	d = h.check(req{token: after, cookie: cookie})
	mustAllow(t, d, "iat after the end")
	if c := cookieOf(t, d); c == "" || c == cookie {
		t.Errorf("new cookie %q", c)
	}
	if want := h.now().Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("SessionExpiresAt %d, want the new session's start + 8h %d", d.SessionExpiresAt, want)
	}
}

func TestS3ScopeBySIDOrUser(t *testing.T) {
	tests := []struct {
		name           string
		sid1, sid2     string
		secondSurvives bool
	}{
		{"distinct sids: other IdP session unaffected", "idp-1", "idp-2", true},
		{"same sid: whole IdP session ends", "idp-1", "idp-1", false},
		{"no sid: scope is the user", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			raw1, cookie1 := h.signIn(tok{sub: "alice", sid: tc.sid1})
			h.advance(time.Second)
			raw2, cookie2 := h.signIn(tok{sub: "alice", sid: tc.sid2})
			rawBob, cookieBob := h.signIn(tok{sub: "bob"})
			h.advance(time.Second)
			d := h.check(req{token: raw1, cookie: cookie1, path: "/logout"})
			if d.Reason != ReasonSignedOut {
				t.Fatalf("logout: %s", describe(d))
			}
			h.advance(time.Second)
			mustDeny(t, h.check(req{token: raw1}), ReasonReauthRequired, "signed-out token")
			d = h.check(req{token: raw2, cookie: cookie2})
			if tc.secondSurvives {
				mustAllow(t, d, "second device")
				mustAllow(t, h.check(req{token: raw2}), "second device without cookie")
			} else {
				mustDeny(t, d, ReasonReauthRequired, "second device")
			}
			mustAllow(t, h.check(req{token: rawBob, cookie: cookieBob}), "another user")
		})
	}
}

func TestS3SessionsBelongToOnePolicy(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice", sid: "idp-1", authTime: h.now()})
	d := h.check(req{token: raw})
	mustAllow(t, d, "app")
	appCookie := cookieOf(t, d)
	d = h.check(req{token: raw, host: otherHost})
	mustAllow(t, d, "other")
	otherCookie := cookieOf(t, d)
	if d.Policy != "other" || otherCookie == appCookie {
		t.Fatalf("other policy: %s", describe(d))
	}
	// The app cookie names no session on the other policy and vice versa.
	if _, ok := h.store.get("other", appCookie); ok {
		t.Error("app session visible to other policy")
	}
	h.advance(time.Minute)
	mustDeny(t, h.check(req{token: raw, cookie: appCookie, path: "/logout"}), ReasonSignedOut, "app logout")
	h.advance(time.Minute)
	mustDeny(t, h.check(req{token: raw, cookie: appCookie}), ReasonReauthRequired, "app after logout")
	mustAllow(t, h.check(req{token: raw, host: otherHost, cookie: otherCookie}), "other after app logout")
	mustAllow(t, h.check(req{token: raw, host: otherHost}), "other, no cookie")
	// Idle on the other policy is its own too.
	h.advance(31 * time.Minute)
	mustDeny(t, h.check(req{token: raw, host: otherHost, cookie: otherCookie}), ReasonIdleTimeout, "other idle")
}

func TestEndIsReportedOnceThenReauthRequired(t *testing.T) {
	for _, ending := range endings {
		t.Run(ending.name, func(t *testing.T) {
			h := newHarness(t)
			raw, cookie := h.signIn(tok{sub: "alice", authTime: t0})
			d := ending.end(h, raw, cookie)
			mustDeny(t, d, ending.reason, "discovering request")
			if !clearsCookie(d) {
				t.Errorf("discovering request keeps the cookie: %q", d.SetCookie)
			}
			for i := range 3 {
				h.advance(time.Second)
				mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonReauthRequired, fmt.Sprintf("later request %d", i))
			}
			ends := h.events.endedCopy()
			if len(ends) != 1 || ends[0].Cause != ending.cause {
				t.Errorf("SessionEnded %+v", ends)
			}
		})
	}
}

func TestConcurrentDiscoveryEndsOnce(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(31 * time.Minute)
	const n = 16
	reasons := make(chan Reason, n)
	for range n {
		go func() { reasons <- h.check(req{token: raw, cookie: cookie}).Reason }()
	}
	for range n {
		if r := <-reasons; r != ReasonIdleTimeout && r != ReasonReauthRequired {
			t.Errorf("reason %s", r)
		}
	}
	if _, _, ended, _ := h.events.counts(); ended != 1 {
		t.Errorf("SessionEnded %d times", ended)
	}
}

// ---- S4 identity binding -----------------------------------------------

func TestS4IdentityMismatch(t *testing.T) {
	h := newHarness(t)
	rawA, cookieA := h.signIn(tok{sub: "alice"})
	h.advance(time.Minute)
	rawB := h.mint(tok{sub: "bob", authTime: h.now()})
	d := h.check(req{token: rawB, cookie: cookieA})
	mustDeny(t, d, ReasonIdentityMismatch, "bob presents alice's cookie")
	if d.Status != 401 || !clearsCookie(d) || d.User != "" {
		t.Errorf("mismatch denial %s", describe(d))
	}
	ends := h.events.endedCopy()
	if len(ends) != 1 || ends[0].Cause != CauseIdentityMismatch || ends[0].Subject != "alice" ||
		ends[0].Presented != "bob" || ends[0].SessionID != cookieA {
		t.Errorf("security event %+v", ends)
	}
	if s, _ := h.store.get("app", cookieA); s.Cause != CauseIdentityMismatch {
		t.Errorf("alice's session %+v", s)
	}
	h.advance(time.Second)
	mustDeny(t, h.check(req{token: rawA, cookie: cookieA}), ReasonReauthRequired, "alice's own token and cookie")
	mustDeny(t, h.check(req{token: rawA}), ReasonReauthRequired, "alice's own token, no cookie")
	// Bob's own session is unaffected by having tried.
	d = h.check(req{token: rawB})
	mustAllow(t, d, "bob without alice's cookie")
	if d.User != "bob" {
		t.Errorf("user %q", d.User)
	}
	if _, _, ended, _ := h.events.counts(); ended != 1 {
		t.Errorf("ended %d", ended)
	}
}

func TestS4BindClaims(t *testing.T) {
	tests := []struct {
		name       string
		first, use tok
		want       Reason
	}{
		{"same tid", tok{sub: "alice", bind: []string{"t1"}}, tok{sub: "alice", bind: []string{"t1"}}, ReasonNone},
		{"different tid", tok{sub: "alice", bind: []string{"t1"}}, tok{sub: "alice", bind: []string{"t2"}}, ReasonIdentityMismatch},
		{"tid missing", tok{sub: "alice", bind: []string{"t1"}}, tok{sub: "alice", bind: []string{""}}, ReasonIdentityMismatch},
		{"different issuer", tok{sub: "alice"}, tok{sub: "alice", iss: "https://other-idp.example.com"}, ReasonIdentityMismatch},
		{"different subject", tok{sub: "alice"}, tok{sub: "alice2"}, ReasonIdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.BindClaims = []string{"tid"} })
			_, cookie := h.signIn(tc.first)
			h.advance(time.Second)
			d := h.check(req{token: h.mint(tc.use), cookie: cookie})
			if d.Reason != tc.want || d.Allow != (tc.want == ReasonNone) {
				t.Errorf("got %s, want %q", describe(d), tc.want)
			}
		})
	}
}

func TestS4MismatchOnEndedSessionEndsNothingMore(t *testing.T) {
	// Mallory kept a copy of alice's cookie. Alice signs out and back in.
	// Presenting the dead cookie with mallory's own token, or replaying it
	// to the logout path, must not end alice's new session.
	for _, attack := range []string{"mismatch", "logout replay"} {
		t.Run(attack, func(t *testing.T) {
			h := newHarness(t)
			rawA, oldCookie := h.signIn(tok{sub: "alice"})
			h.advance(time.Minute)
			mustDeny(t, h.check(req{token: rawA, cookie: oldCookie, path: "/logout"}), ReasonSignedOut, "alice signs out")
			h.advance(time.Minute)
			rawA2, cookieA2 := h.signIn(tok{sub: "alice"})
			h.advance(time.Minute)
			switch attack {
			case "mismatch":
				rawM := h.mint(tok{sub: "mallory", authTime: h.now()})
				d := h.check(req{token: rawM, cookie: oldCookie})
				if d.Allow {
					t.Fatalf("mallory with alice's dead cookie: %s", describe(d))
				}
				if !clearsCookie(d) {
					t.Errorf("dead cookie not cleared, a new sign-in would loop: %q", d.SetCookie)
				}
			case "logout replay":
				d := h.check(req{cookie: oldCookie, path: "/logout"})
				if d.Reason != ReasonSignedOut {
					t.Fatalf("logout replay: %s", describe(d))
				}
			}
			h.advance(time.Second)
			mustAllow(t, h.check(req{token: rawA2, cookie: cookieA2}), "alice's new session")
			mustAllow(t, h.check(req{token: rawA2}), "alice's new token without cookie")
			if _, _, ended, _ := h.events.counts(); ended != 1 {
				t.Errorf("ended %d", ended)
			}
		})
	}
}

// ---- cookie-less clients -----------------------------------------------

func TestCookielessClientsContinueTheScopeSession(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "svc", authTime: h.now()})
	d := h.check(req{token: raw})
	mustAllow(t, d, "first")
	id := cookieOf(t, d)
	for range 5 {
		h.advance(20 * time.Minute)
		d = h.check(req{token: raw})
		mustAllow(t, d, "cookie-less")
		if len(d.SetCookie) != 0 {
			t.Errorf("continued session sets a cookie %q", d.SetCookie)
		}
		if want := h.now().Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
			t.Errorf("IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
		}
	}
	if s, _ := h.store.get("app", id); s.LastActivity != ms(h.now()) {
		t.Errorf("activity not recorded on the scope's session")
	}
	if _, started, _, _ := h.events.counts(); started != 1 {
		t.Errorf("started %d sessions", started)
	}
	// Idle applies to them too.
	h.advance(30*time.Minute + time.Millisecond)
	d = h.check(req{token: raw})
	mustDeny(t, d, ReasonIdleTimeout, "cookie-less idle")
	if len(d.SetCookie) != 0 {
		t.Errorf("cookie-less end sets a cookie: %q", d.SetCookie)
	}
	mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, "after the end")
	mustDeny(t, h.check(req{token: raw, cookie: id}), ReasonReauthRequired, "with the session cookie after the end")
}

func TestUnknownCookieDoesNotDodgeLimits(t *testing.T) {
	// A cookie that names no session (made up, or of another IdP session of
	// the same user) must not open a fresh session per request: the token's
	// scope session, with its idle and absolute clocks, still applies.
	made := strings.Repeat("Z", sessionIDLen)
	tests := []struct {
		name   string
		cookie func(h *harness) string
	}{
		{"made-up cookie", func(*harness) string { return made }},
		{"cookie of another IdP session", func(h *harness) string {
			_, c := h.signIn(tok{sub: "alice", sid: "idp-other"})
			return c
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			other := tc.cookie(h)
			raw, cookie := h.signIn(tok{sub: "alice", sid: "idp-1"})
			h.advance(10 * time.Minute)
			d := h.check(req{token: raw, cookie: other})
			mustAllow(t, d, "live scope session, foreign cookie")
			if got := cookieOf(t, d); got != cookie {
				t.Errorf("Set-Cookie names %q, want the scope's session %q", got, cookie)
			}
			h.advance(31 * time.Minute)
			mustDeny(t, h.check(req{token: raw, cookie: other}), ReasonIdleTimeout, "idle with a foreign cookie")
			mustDeny(t, h.check(req{token: raw, cookie: other}), ReasonReauthRequired, "and afterwards")
			if _, started, _, _ := h.events.counts(); started > 2 {
				t.Errorf("started %d sessions", started)
			}
		})
	}
}

func TestNewIdPSessionWithAnOldCookie(t *testing.T) {
	h := newHarness(t)
	_, c1 := h.signIn(tok{sub: "alice", sid: "idp-1"})
	h.advance(time.Minute)
	// The user signs in at the IdP again (new sid) in the same browser.
	raw2 := h.mint(tok{sub: "alice", sid: "idp-2", authTime: h.now()})
	d := h.check(req{token: raw2, cookie: c1})
	mustAllow(t, d, "new IdP session")
	c2 := cookieOf(t, d)
	if c2 == "" || c2 == c1 {
		t.Fatalf("cookie %q (old %q)", c2, c1)
	}
	if s, _ := h.store.get("app", c1); s.Ended() {
		t.Error("the other IdP session's gate session ended")
	}
	mustAllow(t, h.check(req{token: raw2, cookie: c2}), "new cookie")

	// An ended session of another IdP session still asks for a sign-in
	// after its end when presented.
	mustDeny(t, h.check(req{token: h.mint(tok{sub: "alice", sid: "idp-1", authTime: t0}), cookie: c1, path: "/logout"}), ReasonSignedOut, "sign out of idp-1")
	h.advance(time.Second)
	d = h.check(req{token: raw2, cookie: c1})
	mustDeny(t, d, ReasonReauthRequired, "ended cookie of idp-1 with idp-2's older token")
	mustAllow(t, h.check(req{token: raw2}), "idp-2 without the dead cookie")
}

// ---- S6 sign-out --------------------------------------------------------

func TestS6Logout(t *testing.T) {
	tests := []struct {
		name        string
		withCookie  bool
		token       string // "valid", "invalid", "oversized", ""
		cookieEnded bool   // the cookie's session must end
		scopeEnded  bool   // the token must be refused afterwards
		endedEvents int
	}{
		{"cookie and token", true, "valid", true, true, 1},
		{"cookie only", true, "", true, true, 1},
		{"cookie and invalid token", true, "invalid", true, true, 1},
		{"cookie and oversized token", true, "oversized", true, true, 1},
		// The token's scope's current session is the cookie's: ended by id,
		// so that a cookie-less sign-out is audited too.
		{"token only", false, "valid", true, true, 1},
		{"nothing", false, "", false, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.MaxTokenBytes = 128 })
			h.ver.fail("invalid", &TokenError{Reason: ReasonInvalidToken, Detail: "bad"})
			raw, cookie := h.signIn(tok{sub: "alice"})
			h.advance(time.Minute)
			r := req{path: "/logout?next=/home", browser: true}
			if tc.withCookie {
				r.cookie = cookie
			}
			switch tc.token {
			case "valid":
				r.token = raw
			case "invalid":
				r.token = "invalid"
			case "oversized":
				r.token = strings.Repeat("x", 129)
			}
			d := h.check(r)
			if d.Allow || d.Reason != ReasonSignedOut || d.Status != 302 || d.Location != signedOut || !clearsCookie(d) {
				t.Fatalf("logout: %s", describe(d))
			}
			if want := cookieName + "=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"; len(d.SetCookie) != 1 || d.SetCookie[0] != want {
				t.Errorf("Set-Cookie %q, want %q", d.SetCookie, want)
			}
			if d.Label() != "deny" {
				t.Errorf("label %q", d.Label())
			}
			ends := h.events.endedCopy()
			if len(ends) != tc.endedEvents || (len(ends) == 1 && (ends[0].Cause != CauseSignedOut || ends[0].SessionID != cookie)) {
				t.Errorf("SessionEnded %+v", ends)
			}
			h.advance(time.Second)
			s, _ := h.store.get("app", cookie)
			if s.Ended() != tc.cookieEnded {
				t.Errorf("cookie session ended=%v, want %v", s.Ended(), tc.cookieEnded)
			}
			d = h.check(req{token: raw, cookie: cookie})
			if tc.scopeEnded || tc.cookieEnded {
				mustDeny(t, d, ReasonReauthRequired, "replay with cookie")
			} else {
				mustAllow(t, d, "nothing was signed out")
			}
			d = h.check(req{token: raw})
			if tc.scopeEnded {
				mustDeny(t, d, ReasonReauthRequired, "replay without cookie")
			}
			// Signing in again works.
			_, c2 := h.signIn(tok{sub: "alice"})
			if c2 == cookie {
				t.Error("same cookie after sign-out")
			}
		})
	}
}

// TestS6LogoutMatch: with logout.match normalized or prefix, the spellings
// an application normalises to its sign-out path end the gate's session
// too; exact (the default) keeps them ordinary requests (above).
func TestS6LogoutMatch(t *testing.T) {
	spellings := []string{"/logout/", "/Logout", "/LOGOUT/", "/logout;jsessionid=x", "/a/../logout", "//logout",
		"/./logout", "/%6Cogout", "/logout%2F", "\\logout", "/logout?x=1"}
	for _, tc := range []struct {
		match    LogoutMatch
		signsOut []string
		ordinary []string
	}{
		{LogoutNormalized, spellings, []string{"/logout/x", "/logoutx", "/app/logout", "/logout%2Fx", "/log%20out"}},
		{LogoutPrefix, append(spellings, "/logout/x", "/Logout/Callback;x"), []string{"/logoutx", "/app/logout", "/logouts/x"}},
	} {
		for _, p := range tc.signsOut {
			h := newHarness(t, func(pol *Policy) { pol.Logout.Match = tc.match })
			raw, cookie := h.signIn(tok{sub: "alice"})
			if d := h.check(req{token: raw, cookie: cookie, path: p}); d.Reason != ReasonSignedOut {
				t.Errorf("match %d, %q: %s, want signed_out", tc.match, p, describe(d))
				continue
			}
			if d := h.check(req{token: raw, cookie: cookie, path: "/"}); d.Allow || d.Reason != ReasonReauthRequired {
				t.Errorf("match %d, after %q: %s, want the session ended", tc.match, p, describe(d))
			}
		}
		h := newHarness(t, func(pol *Policy) { pol.Logout.Match = tc.match })
		raw, cookie := h.signIn(tok{sub: "alice"})
		for _, p := range tc.ordinary {
			mustAllow(t, h.check(req{token: raw, cookie: cookie, path: p}), p)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/": "/", "": "/", "/logout": "/logout", "/Logout/": "/logout", "/a//b/./c/../d;x=1/": "/a/b/d",
		"/../../x": "/x", "/%41%2e%2E/b": "/a../b", "/a/%2e%2e/b": "/b", "/a%2Fb%5c": "/a/b", "/a%3Bb": "/a%3bb", "\\a\\b": "/a/b",
		// A "%" that starts no escape is spelled %25, so that it cannot make
		// one with what decoding puts after it (found by FuzzNormalizePath).
		"/a%zz": "/a%25zz", "/a%4": "/a%254", "%%333": "/%2533",
	} {
		if got := NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestS6LogoutPathIsExact(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	for _, p := range []string{"/logout/", "/logout/x", "/logoutx", "/LOGOUT", "/app/logout"} {
		mustAllow(t, h.check(req{token: raw, cookie: cookie, path: p}), p)
	}
	for _, p := range []string{"/logout", "/logout?x=1", "/logout#f"} {
		d := h.check(req{path: p})
		if d.Reason != ReasonSignedOut {
			t.Errorf("%s: %s", p, describe(d))
		}
	}
	// Without a logout path, /logout is an ordinary path.
	h2 := newHarness(t, func(p *Policy) { p.Logout = Logout{} })
	raw2, cookie2 := h2.signIn(tok{sub: "alice"})
	mustAllow(t, h2.check(req{token: raw2, cookie: cookie2, path: "/logout"}), "no logout configured")
}

func TestS6LogoutDoesNotFailOpen(t *testing.T) {
	// Fail-open decides on what is known; a sign-out that cannot be recorded
	// must say so, not forward the request as if nothing happened.
	for _, tc := range []struct {
		op         string
		withCookie bool
	}{{"load", true}, {"end", true}, {"end", false}} {
		t.Run(fmt.Sprintf("%s/cookie=%v", tc.op, tc.withCookie), func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.StoreFailOpen = true })
			raw, cookie := h.signIn(tok{sub: "alice"})
			h.store.setFail(tc.op, true)
			if !tc.withCookie {
				cookie = ""
			}
			d := h.check(req{token: raw, cookie: cookie, path: "/logout"})
			mustDeny(t, d, ReasonStoreUnavailable, "logout with the store down")
			if d.Status != 503 {
				t.Errorf("status %d", d.Status)
			}
		})
	}
}

// ---- S7 denial ------------------------------------------------------------

func TestS7BrowserOrAPI(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		browser bool
	}{
		{"accept html", map[string]string{"accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}, true},
		{"sec-fetch-mode navigate", map[string]string{"sec-fetch-mode": "navigate"}, true},
		{"navigate with json accept", map[string]string{"sec-fetch-mode": "navigate", "accept": "application/json"}, true},
		{"accept json", map[string]string{"accept": "application/json"}, false},
		{"accept any", map[string]string{"accept": "*/*"}, false},
		{"fetch cors", map[string]string{"sec-fetch-mode": "cors", "accept": "application/json"}, false},
		{"no headers", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			d := h.check(req{headers: tc.headers, path: "/a/b?x=1"})
			mustDeny(t, d, ReasonNoToken, "no token")
			if tc.browser {
				if d.Status != 302 || d.Authenticate != "" {
					t.Fatalf("browser: %s", describe(d))
				}
				q := loginQuery(t, d.Location)
				if got := q.Get("rd"); got != "https://app.example.com/a/b?x=1" {
					t.Errorf("return URL %q", got)
				}
				if hasReauth(t, d.Location) {
					t.Error("reauth params for a session that never existed")
				}
			} else if d.Status != 401 || d.Location != "" || d.Authenticate != `Bearer realm="sessiongate"` {
				t.Errorf("API: %s %q", describe(d), d.Authenticate)
			}
		})
	}
}

func TestS7Challenges(t *testing.T) {
	tests := []struct {
		reason Reason
		reauth bool
		want   string
	}{
		{ReasonNoToken, false, `Bearer realm="sessiongate"`},
		{ReasonNoToken, true, `Bearer realm="sessiongate"`},
		{ReasonInvalidToken, false, `Bearer realm="sessiongate", error="invalid_token", error_description="invalid_token"`},
		{ReasonTokenExpired, false, `Bearer realm="sessiongate", error="invalid_token", error_description="token_expired"`},
		{ReasonIdleTimeout, true, `Bearer realm="sessiongate", error="insufficient_user_authentication", error_description="idle_timeout", max_age=0`},
		{ReasonReauthRequired, true, `Bearer realm="sessiongate", error="insufficient_user_authentication", error_description="reauth_required", max_age=0`},
	}
	for _, tc := range tests {
		if got := challenge(tc.reason, tc.reauth); got != tc.want {
			t.Errorf("challenge(%s, %v)\n got %s\nwant %s", tc.reason, tc.reauth, got, tc.want)
		}
	}
}

func TestS7LoginRedirect(t *testing.T) {
	const secret = "SECRET-TOKEN-VALUE"
	tests := []struct {
		name    string
		scheme  string
		host    string
		path    string
		wantRet string
	}{
		{"plain", "https", appHost, "/a/b?x=1", "https://app.example.com/a/b?x=1"},
		{"http scheme kept", "http", appHost, "/a", "http://app.example.com/a"},
		{"unknown scheme is https", "", appHost, "/a", "https://app.example.com/a"},
		{"host case folded, port kept", "https", "APP.Example.com:8443", "/a", "https://app.example.com:8443/a"},
		{"client rd ignored", "https", appHost, "/x?rd=https://evil.example/&redirect=https://evil.example/", "https://app.example.com/x?rd=https://evil.example/&redirect=https://evil.example/"},
		{"network path", "https", appHost, "//evil.example/x", "https://app.example.com/evil.example/x"},
		{"many slashes", "https", appHost, "////evil.example", "https://app.example.com/evil.example"},
		{"backslash", "https", appHost, "/\\evil.example", "https://app.example.com/%5Cevil.example"},
		{"CRLF", "https", appHost, "/a\r\nSet-Cookie: x=1", "https://app.example.com/a%0D%0ASet-Cookie:%20x=1"},
		{"space and non-UTF-8", "https", appHost, "/a b\xff\xfe", "https://app.example.com/a%20b%FF%FE"},
		{"UTF-8", "https", appHost, "/é", "https://app.example.com/%C3%A9"},
		{"fragment dropped", "https", appHost, "/a#frag", "https://app.example.com/a"},
		{"access_token stripped", "https", appHost, "/x?a=1&access_token=" + secret + "&b=2", "https://app.example.com/x?a=1&b=2"},
		{"only access_token", "https", appHost, "/x?access_token=" + secret, "https://app.example.com/x"},
		{"token params any case", "https", appHost, "/x?ID_TOKEN=" + secret + "&Refresh_Token=" + secret + "&keep=1", "https://app.example.com/x?keep=1"},
		{"encoded token param name", "https", appHost, "/x?access%5Ftoken=" + secret + "&keep=1", "https://app.example.com/x?keep=1"},
		{"semicolon-separated token param", "https", appHost, "/x?keep=1&a=1;access_token=" + secret, "https://app.example.com/x?keep=1"},
		{"similar names kept", "https", appHost, "/x?my_access_token_hint=1", "https://app.example.com/x?my_access_token_hint=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			raw := h.mint(tok{sub: "alice"})
			h.ver.fail(secret, &TokenError{Reason: ReasonInvalidToken})
			r := req{scheme: tc.scheme, host: tc.host, path: tc.path, browser: true}.build()
			if tc.scheme == "" {
				r.Scheme = ""
			}
			r.Headers.(HeaderMap)["authorization"] = "Basic " + raw // not a bearer token: no_token
			d := h.eng.Check(context.Background(), r)
			mustDeny(t, d, ReasonNoToken, "no token")
			if strings.ContainsAny(d.Location, "\r\n \x00") {
				t.Fatalf("Location %q carries raw control characters", d.Location)
			}
			if strings.Contains(d.Location, secret) || strings.Contains(d.Location, raw) {
				t.Fatalf("Location %q carries a token", d.Location)
			}
			q := loginQuery(t, d.Location)
			if len(q["rd"]) != 1 {
				t.Fatalf("rd values %q", q["rd"])
			}
			got := q.Get("rd")
			if got != tc.wantRet {
				t.Errorf("return URL\n got %q\nwant %q", got, tc.wantRet)
			}
			u, err := url.Parse(got)
			if err != nil || strings.ToLower(u.Hostname()) != "app.example.com" || u.User != nil {
				t.Errorf("return URL %q leaves the host (%v)", got, err)
			}
		})
	}
}

func TestS7ReauthParamsOnlyWhenASessionEnded(t *testing.T) {
	h := newHarness(t)
	d := h.check(req{browser: true})
	if hasReauth(t, d.Location) {
		t.Error("no session: reauth params")
	}
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(31 * time.Minute)
	d = h.check(req{token: raw, cookie: cookie, browser: true})
	mustDeny(t, d, ReasonIdleTimeout, "idle")
	q := loginQuery(t, d.Location)
	if q.Get("prompt") != "login" || q.Get("max_age") != "0" || q.Get("rd") != "https://app.example.com/app/page" {
		t.Errorf("Location %q", d.Location)
	}
	// A login URL with its own query is extended with &.
	h2 := newHarness(t, func(p *Policy) { p.Login.URL = loginURL + "?client=crm" })
	d = h2.check(req{browser: true, path: "/p"})
	if want := loginURL + "?client=crm&rd=" + url.QueryEscape("https://app.example.com/p"); d.Location != want {
		t.Errorf("Location\n got %q\nwant %q", d.Location, want)
	}
}

// ---- S8 per host ----------------------------------------------------------

func TestS8UnknownHost(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice"})
	for _, host := range []string{"evil.example.com", "", "app.example.com.evil.com"} {
		r := req{token: raw, browser: true}.build()
		r.Host = host
		d := h.eng.Check(context.Background(), r)
		if d.Allow || d.Reason != ReasonUnknownHost || d.Status != 403 || d.Policy != "" || d.Location != "" || d.Label() != "deny" {
			t.Errorf("host %q: %s", host, describe(d))
		}
	}
	if h.ver.Calls() != 0 || h.store.counts() != (storeCounts{}) {
		t.Errorf("unknown host reached verifier (%d) or store (%+v)", h.ver.Calls(), h.store.counts())
	}
	if decided, _, _, _ := h.events.counts(); decided != 3 {
		t.Errorf("Decided %d", decided)
	}
	// Port and case do not matter for known hosts.
	mustAllow(t, h.check(req{host: "APP.example.com:443", token: raw}), "known host with port")
}

// ---- S9 fail closed ---------------------------------------------------------

func TestS9StoreUnavailable(t *testing.T) {
	// Each case fails one store operation on the path it exercises.
	tests := []struct {
		op    string
		setup func(h *harness) req
	}{
		{"load", func(h *harness) req {
			raw, c := h.signIn(tok{sub: "alice"})
			return req{token: raw, cookie: c}
		}},
		{"begin", func(h *harness) req { return req{token: h.mint(tok{sub: "alice"})} }},
		{"touch", func(h *harness) req {
			raw, c := h.signIn(tok{sub: "alice"})
			h.advance(time.Minute)
			return req{token: raw, cookie: c}
		}},
		{"end", func(h *harness) req {
			raw, c := h.signIn(tok{sub: "alice"})
			h.advance(31 * time.Minute)
			return req{token: raw, cookie: c}
		}},
		{"end on stale sign-in", func(h *harness) req {
			return req{token: h.mint(tok{sub: "alice", authTime: h.now().Add(-9 * time.Hour)})}
		}},
	}
	for _, tc := range tests {
		op, _, _ := strings.Cut(tc.op, " ")
		for _, mode := range []string{"enforce", "fail-open", "dry-run"} {
			t.Run(tc.op+"/"+mode, func(t *testing.T) {
				h := newHarness(t, func(p *Policy) {
					p.StoreFailOpen = mode == "fail-open"
					p.DryRun = mode == "dry-run"
				})
				r := tc.setup(h)
				h.store.setFail(op, true)
				for _, browser := range []bool{false, true} {
					r.browser = browser
					d := h.check(r)
					if d.Reason != ReasonStoreUnavailable {
						t.Fatalf("reason: %s", describe(d))
					}
					switch mode {
					case "enforce":
						if d.Allow || d.Status != 503 || d.Location != "" || d.Label() != "deny" {
							t.Errorf("enforce: %s", describe(d))
						}
					case "fail-open":
						if !d.Allow || d.DryRun || d.User != "alice" || d.Label() != "allow" || d.Warn {
							t.Errorf("fail-open: %s", describe(d))
						}
					case "dry-run":
						if !d.Allow || !d.DryRun || !d.Denial() || d.Label() != "dry_run_deny" || d.Status != 0 || d.Location != "" {
							t.Errorf("dry-run: %s", describe(d))
						}
					}
				}
				h.store.setFail(op, false)
			})
		}
	}
}

func TestS9ScopeSessionLoadFails(t *testing.T) {
	// The second Load, of the scope's current session for a cookie-less
	// client, fails: a denial, never a fresh session.
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.store.setHook(func(op, id string) error {
		if op == "load" && id == cookie {
			return fmt.Errorf("replica lost: %w", ErrStoreUnavailable)
		}
		return nil
	})
	mustDeny(t, h.check(req{token: raw}), ReasonStoreUnavailable, "cookie-less")
	if c := h.store.counts(); c.begins != 1 {
		t.Errorf("begins %d", c.begins)
	}
}

func TestS3EndedBetweenLoadAndTouch(t *testing.T) {
	// Another replica ends the session after this request loaded it: the
	// Touch finds it ended (or gone) and S3 wins.
	for _, how := range []string{"ended", "gone"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t)
			raw, cookie := h.signIn(tok{sub: "alice"})
			h.advance(time.Minute)
			h.store.setHook(func(op, id string) error {
				if op != "touch" {
					return nil
				}
				h.store.setHook(nil)
				if how == "gone" {
					h.store.mu.Lock()
					delete(h.store.sessions, sessionKey("app", id))
					h.store.mu.Unlock()
					return nil
				}
				s, _ := h.store.get("app", id)
				_, _, err := h.store.End(context.Background(), "app", id, s.Scope, End{Cause: CauseSignedOut, At: ms(h.now()), KeepUntil: ms(h.now().Add(9 * time.Hour))})
				return err
			})
			d := h.check(req{token: raw, cookie: cookie, browser: true})
			mustDeny(t, d, ReasonReauthRequired, "ended concurrently")
			if !hasReauth(t, d.Location) {
				t.Errorf("Location %q", d.Location)
			}
			if _, _, ended, _ := h.events.counts(); ended != 0 {
				t.Errorf("this request did not end the session, yet %d SessionEnded", ended)
			}
		})
	}
}

func TestS9FailOpenNeedsAVerifiedToken(t *testing.T) {
	h := newHarness(t, func(p *Policy) { p.StoreFailOpen = true })
	h.store.setFail("load", true)
	d := h.check(req{browser: true, cookie: strings.Repeat("A", sessionIDLen)})
	mustDeny(t, d, ReasonNoToken, "no token while the store is down")
	d = h.check(req{token: "garbage"})
	mustDeny(t, d, ReasonInvalidToken, "bad token while the store is down")
}

func TestS9DryRun(t *testing.T) {
	h := newHarness(t, func(p *Policy) { p.DryRun = true })
	d := h.check(req{browser: true})
	if !d.Allow || !d.DryRun || d.Reason != ReasonNoToken || d.Label() != "dry_run_deny" || d.Policy != "app" || d.Location != "" {
		t.Fatalf("dry-run no token: %s", describe(d))
	}
	// Dry-run still records what enforcement would have done.
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(31 * time.Minute)
	d = h.check(req{token: raw, cookie: cookie})
	if !d.Allow || !d.DryRun || d.Reason != ReasonIdleTimeout {
		t.Fatalf("dry-run idle: %s", describe(d))
	}
	d = h.check(req{token: raw, cookie: cookie})
	if !d.Allow || !d.DryRun || d.Reason != ReasonReauthRequired {
		t.Fatalf("dry-run after idle: %s", describe(d))
	}
	if _, _, ended, _ := h.events.counts(); ended != 1 {
		t.Errorf("ended %d", ended)
	}
	// A real allow in dry-run mode is a plain allow.
	h.advance(time.Millisecond)
	_, c2 := h.signIn(tok{sub: "alice"})
	if c2 == "" {
		t.Error("no cookie")
	}
	if last := h.events.decided[len(h.events.decided)-1]; last.Label() != "allow" {
		t.Errorf("Decided saw %s", describe(last))
	}
}

func TestS9SessionIDGenerationFailure(t *testing.T) {
	h := newHarness(t)
	h.eng.rand = errReader{}
	d := h.check(req{token: h.mint(tok{sub: "alice"})})
	mustDeny(t, d, ReasonStoreUnavailable, "no entropy")
	if d.Status != 503 || len(d.SetCookie) != 0 {
		t.Errorf("%s", describe(d))
	}
}

func TestCheckNeverPanics(t *testing.T) {
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice"})
	h.ver.add("nil-claims", nil)
	reqs := []*Request{
		{},
		{Host: appHost},
		{Host: appHost, Path: "", Headers: nil},
		{Host: appHost, Path: "?", Headers: HeaderMap{"authorization": "Bearer " + raw}},
		{Host: appHost, Path: "#", Headers: HeaderMap{"cookie": ";;;=;" + cookieName}},
		{Host: appHost, Path: "\x00\xff", Headers: HeaderMap{"authorization": "Bearer nil-claims"}},
		{Host: appHost + ":", Path: "/logout", Headers: HeaderMap{"cookie": cookieName + "=\""}},
		{Host: "[::1]:80", Path: "*"},
	}
	for i, r := range reqs {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("request %d panicked: %v", i, p)
				}
			}()
			h.eng.Check(context.Background(), r)
		}()
	}
	// Broken policy input denies rather than panics.
	h2 := newHarness(t, func(p *Policy) { p.Bypass = []string{""}; p.PassivePaths = []string{""} })
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("empty bypass/passive prefix panicked: %v", p)
			}
		}()
		h2.check(req{path: "/x"})
		h2.check(req{path: "/x", token: h2.mint(tok{sub: "alice"})})
	}()
}

// ---- S10 bypass -------------------------------------------------------------

func TestS10Bypass(t *testing.T) {
	tests := []struct {
		path   string
		bypass bool
	}{
		{"/healthz", true},
		{"/healthz?verbose=1", true},
		{"/healthz/ready", true},
		{"/public/", true},
		{"/public/app.css", true},
		{"/public/a/b/c.js?v=3#x", true},
		{"/healthzz", false},
		{"/public", false},
		{"/publicity", false},
		{"/public/../admin", false},
		{"/public/./admin", false},
		{"/public/..", false},
		{"/public%2f..", false},
		{"/public/%2e%2e/admin", false},
		{"/public/..%2fadmin", false},
		{"//public/x", false},
		{"/public//x", false},
		{"/public\\..\\admin", false},
		{"/PUBLIC/x", false},
		{"public/x", false},
		{"/admin?/public/", false},
		{"/admin#/public/", false},
		// Raw non-ASCII is not valid in a request target; servers that
		// normalise Unicode (NFKC) read these dot look-alikes as "..".
		{"/public/\u2025/admin", false},
		{"/public/\uff0e\uff0e/admin", false},
		{"/public/\xc0\xae\xc0\xae/admin", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.path), func(t *testing.T) {
			h := newHarness(t)
			raw := h.mint(tok{sub: "alice"})
			for _, r := range []req{{}, {token: raw}, {headers: map[string]string{"authorization": "Bearer unknown"}}} {
				r.path = tc.path
				rq := r.build()
				rq.Path = tc.path // keep "" as is
				d := h.eng.Check(context.Background(), rq)
				if tc.bypass {
					if !d.Allow || d.User != "" || d.Reason != ReasonNone || d.SessionExpiresAt != 0 || d.IdleExpiresAt != 0 || len(d.SetCookie) != 0 || d.Warn {
						t.Errorf("bypass: %s", describe(d))
					}
				} else if r.token == "" && r.headers == nil && d.Reason != ReasonNoToken {
					t.Errorf("not bypassed, no token: %s", describe(d))
				}
			}
			if tc.bypass && (h.ver.Calls() != 0 || h.store.counts() != (storeCounts{})) {
				t.Errorf("bypassed path reached the verifier or store")
			}
		})
	}
}

// ---- S11 warnings -------------------------------------------------------

func TestS11Warnings(t *testing.T) {
	type step struct {
		at       time.Duration // since t0, the first request
		path     string        // "" is activity, "/api/poll" passive
		expires  time.Duration // wanted ExpiresIn; none for no warning
		idleExp  time.Duration // wanted IdleExpiresAt, since t0
		wantDeny Reason
	}
	const none = -1
	tests := []struct {
		name            string
		abs, idle, warn time.Duration
		authTimeAgo     time.Duration // auth_time before t0
		steps           []step
	}{
		{"idle deadline first", time.Hour, 30 * time.Minute, 20 * time.Minute, 0, []step{
			{0, "", none, 30 * time.Minute, 0},
			{9*time.Minute + 59*time.Second, "/api/poll", none, 30 * time.Minute, 0},
			{10 * time.Minute, "/api/poll", 20 * time.Minute, 30 * time.Minute, 0},
			{25*time.Minute + 500*time.Millisecond, "/api/poll", 4*time.Minute + 59*time.Second, 30 * time.Minute, 0},
			{30 * time.Minute, "/api/poll", 0, 30 * time.Minute, 0},
			{30 * time.Minute, "", none, time.Hour, 0}, // activity: both deadlines 30m away
		}},
		{"absolute deadline first", time.Hour, 30 * time.Minute, 20 * time.Minute, 0, []step{
			{0, "", none, 30 * time.Minute, 0},
			{20 * time.Minute, "", none, 50 * time.Minute, 0},
			{39 * time.Minute, "", none, 69 * time.Minute, 0}, // 21m to the absolute deadline
			{40 * time.Minute, "", 20 * time.Minute, 70 * time.Minute, 0},
			{45 * time.Minute, "", 15 * time.Minute, 75 * time.Minute, 0},
			{time.Hour, "", 0, 90 * time.Minute, 0},
			{time.Hour + time.Millisecond, "", none, 0, ReasonAbsoluteTimeout},
		}},
		{"warn_before longer than idle", 8 * time.Hour, 30 * time.Minute, 40 * time.Minute, 0, []step{
			{0, "", 30 * time.Minute, 30 * time.Minute, 0},
			{10 * time.Minute, "", 30 * time.Minute, 40 * time.Minute, 0},
			{15 * time.Minute, "/api/poll", 25 * time.Minute, 40 * time.Minute, 0},
		}},
		{"no warning configured", time.Hour, 30 * time.Minute, 0, 0, []step{
			{0, "", none, 30 * time.Minute, 0},
			{29 * time.Minute, "/api/poll", none, 30 * time.Minute, 0},
			{30 * time.Minute, "", none, time.Hour, 0},
			{59 * time.Minute, "", none, 89 * time.Minute, 0},
		}},
		{"sign-in before the session", time.Hour, 30 * time.Minute, 20 * time.Minute, 50 * time.Minute, []step{
			{0, "", 10 * time.Minute, 30 * time.Minute, 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.AbsoluteTimeout, p.IdleTimeout, p.WarnBefore = tc.abs, tc.idle, tc.warn })
			signIn := t0.Add(-tc.authTimeAgo)
			raw := h.mint(tok{sub: "alice", authTime: signIn})
			var cookie string
			for i, s := range tc.steps {
				h.advance(t0.Add(s.at).Sub(h.now()))
				d := h.check(req{token: raw, cookie: cookie, path: s.path})
				if cookie == "" {
					cookie = cookieOf(t, d)
				}
				if s.wantDeny != ReasonNone {
					mustDeny(t, d, s.wantDeny, fmt.Sprintf("step %d", i))
					if d.Warn || d.SessionExpiresAt != 0 {
						t.Errorf("step %d: denial with deadlines %s", i, describe(d))
					}
					continue
				}
				mustAllow(t, d, fmt.Sprintf("step %d", i))
				wantIn := int64(-1)
				if s.expires != none {
					wantIn = int64(s.expires / time.Second)
				}
				gotIn := int64(-1) // no warning
				if d.Warn {
					gotIn = d.ExpiresIn
				}
				if gotIn != wantIn {
					t.Errorf("step %d (%v): ExpiresIn %d, want %d", i, s.at, gotIn, wantIn)
				}
				if want := signIn.Add(tc.abs).Unix(); d.SessionExpiresAt != want {
					t.Errorf("step %d: SessionExpiresAt %d, want %d", i, d.SessionExpiresAt, want)
				}
				if want := t0.Add(s.idleExp).Unix(); d.IdleExpiresAt != want {
					t.Errorf("step %d: IdleExpiresAt %d, want %d", i, d.IdleExpiresAt, want)
				}
			}
		})
	}
}

func TestS11SubSecondDeadlines(t *testing.T) {
	h := newHarness(t)
	h.advance(1500 * time.Millisecond)
	start := h.now()
	d := h.check(req{token: h.mint(tok{sub: "alice", authTime: start.Add(-250 * time.Millisecond)})})
	mustAllow(t, d, "sign-in")
	if want := start.Add(-250 * time.Millisecond).Add(8 * time.Hour).Unix(); d.SessionExpiresAt != want {
		t.Errorf("SessionExpiresAt %d, want %d", d.SessionExpiresAt, want)
	}
	if want := start.Add(30 * time.Minute).Unix(); d.IdleExpiresAt != want {
		t.Errorf("IdleExpiresAt %d, want %d", d.IdleExpiresAt, want)
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	h := newHarness(t)
	var buf strings.Builder
	h.eng.log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var secrets []string
	rawA, cookieA := h.signIn(tok{sub: "alice"})
	secrets = append(secrets, rawA, cookieA)
	h.advance(time.Minute)
	rawM := h.mint(tok{sub: "mallory", authTime: h.now()})
	secrets = append(secrets, rawM)
	mustDeny(t, h.check(req{token: rawM, cookie: cookieA}), ReasonIdentityMismatch, "mismatch")
	mustDeny(t, h.check(req{token: rawM, cookie: cookieA}), ReasonReauthRequired, "mismatch again, session ended")
	h.ver.fail("eyJ.secret-bad.sig", &TokenError{Reason: ReasonInvalidToken, Detail: "signature"})
	secrets = append(secrets, "eyJ.secret-bad.sig")
	mustDeny(t, h.check(req{token: "eyJ.secret-bad.sig"}), ReasonInvalidToken, "bad token")
	rawB, cookieB := h.signIn(tok{sub: "bob"})
	secrets = append(secrets, rawB, cookieB)
	h.store.setFail("touch", true)
	h.advance(time.Minute)
	mustDeny(t, h.check(req{token: rawB, cookie: cookieB}), ReasonStoreUnavailable, "store down")
	h.store.setFail("touch", false)
	h.check(req{token: rawB, cookie: cookieB, path: "/logout"})

	out := buf.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("log carries %q:\n%s", s, out)
		}
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "session_subject=alice") || !strings.Contains(out, "token_subject=mallory") {
		t.Errorf("no security event for the identity mismatch:\n%s", out)
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "session store unavailable") {
		t.Errorf("store failure not logged:\n%s", out)
	}
}

// ---- benchmarks -------------------------------------------------------------

// BenchmarkEngineCheckLiveSession is the hot path: the verifier answers from
// its cache (here a map), the session is live in the store. With a
// granularity, steady traffic rarely writes; without, every request does.
func BenchmarkEngineCheckLiveSession(b *testing.B) {
	for _, g := range []time.Duration{time.Minute, 0} {
		b.Run("granularity="+g.String(), func(b *testing.B) {
			h := newHarness(b, func(p *Policy) { p.ActivityGranularity = g })
			h.eng.events = NopEvents{}
			raw, cookie := h.signIn(tok{sub: "alice", sid: "idp-1"})
			r := req{token: raw, cookie: cookie, path: "/app/page?x=1", headers: map[string]string{"accept": "application/json"}}.build()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				h.clock.Advance(time.Millisecond)
				if d := h.eng.Check(ctx, r); !d.Allow {
					b.Fatal(describe(d))
				}
			}
		})
	}
}

// BenchmarkEngineCheckDeny is a request without a token: a browser gets the
// login redirect built, an API client a 401.
func BenchmarkEngineCheckDeny(b *testing.B) {
	for _, browser := range []bool{true, false} {
		name := "api"
		if browser {
			name = "browser"
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b)
			h.eng.events = NopEvents{}
			r := req{path: "/app/page?x=1", browser: browser}.build()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d := h.eng.Check(ctx, r); d.Allow {
					b.Fatal(describe(d))
				}
			}
		})
	}
}

func TestS2SignInAfterIdleDeadlineOpensNewSession(t *testing.T) {
	h := newHarness(t)
	start := h.now()
	old, cookie := h.signIn(tok{sub: "alice", authTime: start})
	// The session idles out at start+30m; the user signs in again at +40m
	// and comes back at +41m with the old cookie and the new token.
	h.advance(40 * time.Minute)
	fresh := h.mint(tok{sub: "alice", authTime: h.now()})
	h.advance(time.Minute)
	d := h.check(req{token: fresh, cookie: cookie, browser: true})
	mustAllow(t, d, "a sign-in after the idle deadline")
	if len(d.SetCookie) != 1 || strings.Contains(d.SetCookie[0], cookie) {
		t.Fatalf("want a new session cookie, got %v", d.SetCookie)
	}
	s, _ := h.store.get("app", cookie)
	if s.Cause != CauseIdle || s.EndedAt != ms(start.Add(30*time.Minute)) {
		t.Errorf("old session must end at its idle deadline: %+v", s)
	}
	// The old sign-in stays refused (S3), the new one goes on.
	mustDeny(t, h.check(req{token: old}), ReasonReauthRequired, "old token after the end")
	mustAllow(t, h.check(req{token: fresh}), "new token")
	if _, _, ended, _ := h.events.counts(); ended != 1 {
		t.Errorf("SessionEnded events: %d, want 1", ended)
	}
}
