package authz

import (
	"testing"
	"time"
)

// TestDecide: the decision as a function of its inputs, no store.
func TestDecide(t *testing.T) {
	p := testPolicy("app", []string{"app.example.com"}, nil)
	p.ActivityGranularity = time.Minute
	const (
		now  = int64(1_800_000_000_000)
		min  = int64(60_000)
		hour = 60 * min
	)
	alice := IdentityDigest("iss", "alice", nil)
	bob := IdentityDigest("iss", "bob", nil)
	sid1, sid2 := ScopeDigest("iss", "alice", "s1"), ScopeDigest("iss", "alice", "s2")
	claims := func(authTime int64, scope Digest) *Claims {
		return &Claims{Issuer: "iss", Subject: "alice", AuthTime: authTime, IssuedAt: now - min, Expiry: now + 5*min, Identity: alice, Scope: scope}
	}
	live := Session{ID: "s", Policy: "app", Subject: "alice", Identity: alice, Scope: sid1, SignIn: now - hour, Created: now - hour, LastActivity: now - 5*min, KeepUntil: now + 8*hour}
	with := func(f func(*Session)) Session { s := live; f(&s); return s }
	found := func(s Session) Facts {
		return Facts{Lookup: Lookup{Session: s, SessionFound: true, Scope: ScopeState{Current: s.ID}, ScopeFound: true}, Confirmed: true}
	}
	for _, tc := range []struct {
		name    string
		cl      *Claims
		f       Facts
		passive bool
		want    Outcome
	}{
		{"no session: begin", claims(now-min, sid1), Facts{}, false,
			Outcome{Verdict: VerdictBegin, New: ptr(Session{Policy: "app", Subject: "alice", Identity: alice, Scope: sid1, SignIn: now - min, Created: now, LastActivity: now, KeepUntil: keep(p, claims(now-min, sid1), now)})}},
		{"no auth_time: the session's start is the sign-in", claims(0, sid1), Facts{}, false,
			Outcome{Verdict: VerdictBegin, New: ptr(Session{Policy: "app", Subject: "alice", Identity: alice, Scope: sid1, SignIn: now, Created: now, LastActivity: now, KeepUntil: keep(p, claims(0, sid1), now)})}},
		{"sign-in older than the lifetime: end the scope", claims(now-9*hour, sid1), Facts{}, false,
			Outcome{Verdict: VerdictEnd, ScopeOnly: true, Scope: sid1, Cause: CauseAbsolute, EndAt: now, Reason: ReasonAbsoluteTimeout, Reauth: true}},
		{"S3: sign-in not after the scope's end", claims(now-hour, sid1), Facts{Lookup: Lookup{Scope: ScopeState{EndedAt: now - hour}, ScopeFound: true}}, false,
			Outcome{Verdict: VerdictDeny, Reason: ReasonReauthRequired, Reauth: true}},
		{"resume, activity recorded", claims(now-hour, sid1), found(live), false,
			Outcome{Verdict: VerdictResume, Of: CookieSession, Touch: Touch{LastActivity: now}}},
		{"resume, passive: no activity", claims(now-hour, sid1), found(live), true,
			Outcome{Verdict: VerdictResume, Of: CookieSession}},
		{"resume within the granularity: no write", claims(now-hour, sid1), found(with(func(s *Session) { s.LastActivity = now - 10_000 })), false,
			Outcome{Verdict: VerdictResume, Of: CookieSession}},
		{"a newer sign-in restarts S1", claims(now-2*min, sid1), found(live), false,
			Outcome{Verdict: VerdictResume, Of: CookieSession, Touch: Touch{SignIn: now - 2*min, LastActivity: now}, Reauthenticated: true}},
		{"S2 over, unconfirmed: confirm", claims(now-hour, sid1), func() Facts {
			f := found(with(func(s *Session) { s.LastActivity = now - 31*min }))
			f.Confirmed = false
			return f
		}(), false, Outcome{Verdict: VerdictConfirm}},
		{"S2 over: end idle", claims(now-hour, sid1), found(with(func(s *Session) { s.LastActivity = now - 31*min })), false,
			Outcome{Verdict: VerdictEnd, Of: CookieSession, Cause: CauseIdle, EndAt: now, Reason: ReasonIdleTimeout, Reauth: true}},
		{"S2 over, signed in after the deadline: end at the deadline, then begin", claims(now-min, sid1), found(with(func(s *Session) { s.LastActivity = now - 40*min; s.SignIn = now - 2*hour })), false,
			Outcome{Verdict: VerdictEnd, Of: CookieSession, Cause: CauseIdle, EndAt: now - 10*min, ThenBegin: true}},
		{"S1 over: end absolute", claims(now-9*hour+1, sid1), found(with(func(s *Session) { s.SignIn = now - 9*hour; s.Created = now - 9*hour })), false,
			Outcome{Verdict: VerdictEnd, Of: CookieSession, Cause: CauseAbsolute, EndAt: now, Reason: ReasonAbsoluteTimeout, Reauth: true}},
		{"S4: another identity's live session ends", &Claims{Subject: "bob", AuthTime: now - min, Identity: bob, Scope: sid2, Expiry: now + min}, found(live), false,
			Outcome{Verdict: VerdictEnd, Of: CookieSession, Cause: CauseIdentityMismatch, EndAt: now, Reason: ReasonIdentityMismatch, Reauth: true, Foreign: true}},
		{"S4: another identity's ended session is only refused", &Claims{Subject: "bob", AuthTime: now - min, Identity: bob, Scope: sid2}, found(with(func(s *Session) { s.EndedAt = now - 2*min })), false,
			Outcome{Verdict: VerdictDeny, Of: CookieSession, Reason: ReasonReauthRequired, Reauth: true, Foreign: true}},
		{"ended, sign-in after the end: begin", claims(now-min, sid1), found(with(func(s *Session) { s.EndedAt = now - 2*min })), false,
			Outcome{Verdict: VerdictBegin, New: ptr(Session{Policy: "app", Subject: "alice", Identity: alice, Scope: sid1, SignIn: now - min, Created: now, LastActivity: now, KeepUntil: keep(p, claims(now-min, sid1), now)})}},
		{"ended, sign-in before the end: reauth", claims(now-3*min, sid1), found(with(func(s *Session) { s.EndedAt = now - 2*min })), false,
			Outcome{Verdict: VerdictDeny, Reason: ReasonReauthRequired, Reauth: true}},
		{"another IdP session of the same user: begin", claims(now-min, sid2), found(live), false,
			Outcome{Verdict: VerdictBegin, New: ptr(Session{Policy: "app", Subject: "alice", Identity: alice, Scope: sid2, SignIn: now - min, Created: now, LastActivity: now, KeepUntil: keep(p, claims(now-min, sid2), now)})}},
		{"no cookie: the scope's current session", claims(now-hour, sid1), Facts{Lookup: Lookup{Scope: ScopeState{Current: "s"}, ScopeFound: true}, Current: live, CurrentFound: true, Confirmed: true}, false,
			Outcome{Verdict: VerdictResume, Of: CurrentSession, Touch: Touch{LastActivity: now}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(p, tc.cl, &tc.f, now, tc.passive)
			if !sameOutcome(got, tc.want) {
				t.Errorf("Decide\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func ptr(s Session) *Session { return &s }

// sameOutcome compares outcomes, and the new sessions they lay out by value.
func sameOutcome(a, b Outcome) bool {
	if (a.New == nil) != (b.New == nil) || a.New != nil && *a.New != *b.New {
		return false
	}
	a.New, b.New = nil, nil
	return a == b
}

func TestCurrentWanted(t *testing.T) {
	alice := IdentityDigest("iss", "alice", nil)
	s1, s2 := ScopeDigest("iss", "alice", "1"), ScopeDigest("iss", "alice", "2")
	cl := &Claims{Identity: alice, Scope: s1}
	scope := ScopeState{Current: "cur"}
	for _, tc := range []struct {
		name string
		lk   Lookup
		want bool
	}{
		{"no cookie, a current session", Lookup{Scope: scope, ScopeFound: true}, true},
		{"no cookie, no scope", Lookup{}, false},
		{"the cookie's session of this scope", Lookup{Session: Session{Identity: alice, Scope: s1}, SessionFound: true, Scope: scope, ScopeFound: true}, false},
		{"the cookie's live session of another sign-in", Lookup{Session: Session{Identity: alice, Scope: s2}, SessionFound: true, Scope: scope, ScopeFound: true}, true},
		{"the cookie's ended session of another sign-in", Lookup{Session: Session{Identity: alice, Scope: s2, EndedAt: 1}, SessionFound: true, Scope: scope, ScopeFound: true}, false},
	} {
		if id, ok := CurrentWanted(cl, &tc.lk); ok != tc.want || ok && id != "cur" {
			t.Errorf("%s: %q, %v; want %v", tc.name, id, ok, tc.want)
		}
	}
}
