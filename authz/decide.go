package authz

// The decision for a request with a verified credential is a pure function
// of the policy, the claims, what the store returned and the time (Decide);
// the engine's driver (engine.go) does the I/O around it: it loads the
// facts, asks Decide, confirms against the store of record when Decide
// says so, and applies the outcome (Begin, Touch, End). Every rule of
// S1–S4 lives in this file and is table-tested without a store.

// Facts is what the store returned for one request.
type Facts struct {
	// Lookup is the session the cookie names (if any) and the state of the
	// token's S3 scope.
	Lookup
	// Current is the scope's current session, loaded when CurrentWanted
	// asked for it.
	Current      Session
	CurrentFound bool
	// Confirmed says the facts were read from the store of record itself,
	// not from a replica-local copy that may lag it (a near cache).
	Confirmed bool
}

// Verdict is what Decide says to do.
type Verdict uint8

const (
	// VerdictDeny refuses the request with Outcome.Reason.
	VerdictDeny Verdict = iota
	// VerdictBegin opens Outcome.New (the driver gives it an id).
	VerdictBegin
	// VerdictResume allows the request in Outcome.Session after storing
	// Outcome.Touch (when not zero).
	VerdictResume
	// VerdictEnd ends Outcome.Session (or, with ScopeOnly, only its scope)
	// with Outcome.Cause at Outcome.EndAt, then denies with Outcome.Reason,
	// or, with ThenBegin, opens a new session (Begin on the same facts).
	VerdictEnd
	// VerdictConfirm: a session is over a limit on facts that were not
	// confirmed; load them from the store of record and decide again.
	VerdictConfirm
)

// Outcome is Decide's answer. It names the session of the Facts it was
// decided on (Of) rather than copying the record: decisions run on every
// request, and a pointer into the facts would move them to the heap.
type Outcome struct {
	Verdict Verdict
	// Reason and Reauth say how to deny (VerdictDeny, VerdictEnd): Reauth
	// makes the login ask for credentials again (S7).
	Reason Reason
	Reauth bool
	// Of names the session to resume or end: Facts.Of(Of).
	Of Which
	// New is the session to begin (VerdictBegin), without its id.
	New *Session
	// Scope is the scope a ScopeOnly end ends.
	Scope Digest
	// Touch is the activity update of a resumed session.
	Touch Touch
	// Reauthenticated says a resumed session saw a newer sign-in.
	Reauthenticated bool
	// Cause, EndAt and ScopeOnly describe an end.
	Cause     EndCause
	EndAt     int64
	ScopeOnly bool
	ThenBegin bool
	// Foreign says the session belongs to another identity than the
	// credential's (S4): a security event.
	Foreign bool
}

// Which names one of the sessions of Facts.
type Which uint8

const (
	NoSession      Which = iota
	CookieSession        // Facts.Session: the one the cookie named
	CurrentSession       // Facts.Current: the scope's current session
)

// Of returns the session w names, nil for NoSession.
func (f *Facts) Of(w Which) *Session {
	switch w {
	case CookieSession:
		return &f.Session
	case CurrentSession:
		return &f.Current
	}
	return nil
}

// CurrentWanted reports whether Decide needs the scope's current session,
// and its id: a client without a cookie (an API client) continues its
// scope's current session, so that S1/S2 hold for every client; so does one
// whose cookie names a live session of another sign-in of the same user,
// or no session: a made-up or foreign cookie must not open a fresh session
// per request and dodge S1/S2.
func CurrentWanted(cl *Claims, lk *Lookup) (string, bool) {
	if endedBefore(cl, lk) {
		return "", false // refused by S3 whatever the current session is: no load
	}
	foreign := lk.SessionFound && !lk.Session.Ended() && lk.Session.Identity == cl.Identity && lk.Session.Scope != cl.Scope
	if (!lk.SessionFound || foreign) && lk.ScopeFound && lk.Scope.Current != "" {
		return lk.Scope.Current, true
	}
	return "", false
}

// Decide applies S1–S4 to a request whose credential has claims cl, on the
// facts f, at now (Unix ms). passive says the request does not count as
// activity.
func Decide(p *Policy, cl *Claims, f *Facts, now int64, passive bool) Outcome {
	signIn := cl.SignIn()
	scopeEnd := f.scopeEnd()
	if endedBefore(cl, &f.Lookup) {
		return Outcome{Verdict: VerdictDeny, Reason: ReasonReauthRequired, Reauth: true}
	}
	which, found := CookieSession, f.SessionFound
	if _, ok := CurrentWanted(cl, &f.Lookup); ok && f.CurrentFound && f.Current.Identity == cl.Identity && !f.Current.Ended() {
		which, found = CurrentSession, true
	}
	s := f.Of(which)
	if !found {
		return Begin(p, cl, f, now)
	}
	if s.Identity != cl.Identity {
		if s.Ended() {
			// Already over: ending it again would raise its scope's end and
			// sign its owner out of newer sessions, on the word of whoever
			// kept a dead cookie. Refuse it (the driver drops the cookie so
			// that the presenter's next sign-in is not refused with it).
			return Outcome{Verdict: VerdictDeny, Reason: ReasonReauthRequired, Reauth: true, Of: which, Foreign: true}
		}
		// S4: the session ends; the event is a security event.
		return Outcome{Verdict: VerdictEnd, Of: which, Cause: CauseIdentityMismatch, EndAt: endAt(p, cl, s, now),
			Reason: ReasonIdentityMismatch, Reauth: true, Foreign: true}
	}
	// The session died with its scope (another session of the same sign-in
	// ended), or ended itself: only a sign-in after that end opens a new one.
	if s.Ended() || (s.Scope == cl.Scope && scopeEnd >= s.Created) {
		if signIn > max(s.EndedAt, scopeEnd) {
			return Begin(p, cl, f, now)
		}
		return Outcome{Verdict: VerdictDeny, Reason: ReasonReauthRequired, Reauth: true}
	}
	if s.Scope != cl.Scope {
		// Same identity, another IdP session: a fresh session for it.
		return Begin(p, cl, f, now)
	}
	return resume(p, cl, f, which, now, passive)
}

// Begin is the outcome of opening a new session for cl on the facts f.
func Begin(p *Policy, cl *Claims, f *Facts, now int64) Outcome {
	signIn := now
	if cl.AuthTime != 0 {
		signIn = cl.AuthTime
		if now-signIn > p.AbsoluteTimeout.Milliseconds() {
			// S1 on first sight: the sign-in itself is too old. Record the
			// end so that silently refreshed tokens of it stay refused.
			return Outcome{Verdict: VerdictEnd, ScopeOnly: true, Scope: cl.Scope,
				Cause: CauseAbsolute, EndAt: now, Reason: ReasonAbsoluteTimeout, Reauth: true}
		}
	}
	// Only a sign-in after the scope's last end gets here. That end may lie
	// ahead of now (see endAt); the session opens after it, not as one that
	// died with it.
	created := now
	if se := f.scopeEnd(); se >= created {
		created = se + 1
	}
	return Outcome{Verdict: VerdictBegin, New: &Session{
		Policy: p.Name, Subject: cl.Subject, Identity: cl.Identity, Scope: cl.Scope,
		SignIn: signIn, Created: created, LastActivity: now, KeepUntil: keep(p, cl, now),
		UserScope: userScope(cl),
	}}
}

// resume applies S1, S2 and the activity update to the live session s.
func resume(p *Policy, cl *Claims, f *Facts, which Which, now int64, passive bool) Outcome {
	s := f.Of(which)
	var t Touch
	signIn := s.SignIn
	reauth := cl.AuthTime > s.SignIn
	if reauth {
		// A newer sign-in within the session restarts its absolute lifetime
		// (the Touch stores it; the store returns the record with it).
		t.SignIn = cl.AuthTime
		signIn = cl.AuthTime
	}
	abs, idle := p.AbsoluteTimeout.Milliseconds(), p.IdleTimeout.Milliseconds()
	// S1 counts from the token's auth_time when it has one. A session opened
	// by a token without it took its start as the sign-in, a guess no later
	// than the real one: a token of that scope revealing an older sign-in
	// does not ride on the guess past its lifetime. (A session whose sign-in
	// is an auth_time keeps it: an older token does not undo a newer sign-in.)
	absOver := now-signIn > abs || signIn == s.Created && cl.AuthTime != 0 && now-cl.AuthTime > abs
	idleAt := s.LastActivity + idle
	if (absOver || now > idleAt) && !f.Confirmed {
		// A timeout ends the session for good (S3), so it is decided on the
		// store of record: a shared store's near cache may not have seen a
		// newer sign-in or activity on another replica yet.
		return Outcome{Verdict: VerdictConfirm}
	}
	if absOver {
		return Outcome{Verdict: VerdictEnd, Of: which, Cause: CauseAbsolute, EndAt: endAt(p, cl, s, now), Reason: ReasonAbsoluteTimeout, Reauth: true}
	}
	if now > idleAt {
		if cl.AuthTime > idleAt {
			// The user signed in again after the session had idled out. The
			// session ends at its deadline, and the new sign-in opens a new
			// session rather than being refused and asked for yet another.
			// Tokens signed in before the deadline stay refused (S3).
			return Outcome{Verdict: VerdictEnd, Of: which, Cause: CauseIdle, EndAt: idleAt, ThenBegin: true}
		}
		return Outcome{Verdict: VerdictEnd, Of: which, Cause: CauseIdle, EndAt: endAt(p, cl, s, now), Reason: ReasonIdleTimeout, Reauth: true}
	}
	if !passive && now-s.LastActivity >= p.ActivityGranularity.Milliseconds() {
		t.LastActivity = now
	}
	if k := keep(p, cl, signIn); k > s.KeepUntil {
		t.KeepUntil = k
	}
	return Outcome{Verdict: VerdictResume, Of: which, Touch: t, Reauthenticated: reauth}
}

// endedBefore is S3 for a credential: its sign-in is not after its scope's
// last end, so it is refused, with or without a cookie.
func endedBefore(cl *Claims, lk *Lookup) bool {
	return lk.ScopeFound && lk.Scope.EndedAt != 0 && cl.SignIn() <= lk.Scope.EndedAt
}

func (f *Facts) scopeEnd() int64 {
	if f.ScopeFound {
		return f.Scope.EndedAt
	}
	return 0
}

// endAt is when an end of session s, decided at now, is recorded. An IdP
// whose clock runs ahead (within the verifier's clock skew) issues tokens
// whose sign-in lies after now; the end must cover those issued before it
// (S3), and a genuine later sign-in still lie after it.
//   - With a token of s's scope presented, the end covers it: replaying it
//     does not pass as a sign-in after the end.
//   - Without one (a sign-out by cookie alone, a session ended because
//     another identity presented it), a session signed in with auth_time
//     knows its sign-in's stamp: the end covers it, and so every token of
//     that sign-in; so does a session of the gate's own sign-in. A token
//     session without auth_time (its sign-in is its start) does not know
//     how far ahead its tokens' iat runs: the end is recorded the whole
//     allowed skew ahead, and a new sign-in without auth_time within that
//     skew after it is asked again.
func endAt(p *Policy, cl *Claims, s *Session, now int64) int64 {
	switch {
	case now <= 0: // refused by the store, as before
		return now
	case cl != nil && cl.Scope == s.Scope:
		return max(now, cl.SignIn())
	case s.SignIn != s.Created || s.Method == MethodOIDC:
		// A session of the gate's own sign-in took its sign-in from the ID
		// token's auth_time, or from the gate's clock at the callback.
		return max(now, s.SignIn)
	}
	return now + p.ClockSkew.Milliseconds()
}

// keep is how long records written at `at` must be kept: past the absolute
// lifetime of any sign-in up to at, and past the presenting token's expiry.
func keep(p *Policy, cl *Claims, at int64) int64 {
	k := at + p.AbsoluteTimeout.Milliseconds()
	if cl != nil && cl.Expiry > k {
		k = cl.Expiry
	}
	return k + retainMargin.Milliseconds()
}

// keepEnd is how long an end of session s recorded at `at` must be kept:
// until every token it covers has expired (S3). A token covered signed in
// at or before at: with auth_time, S1 refuses it anyway once at + the
// absolute timeout has passed; without, its iat is at or before at, so it
// expires by at + MaxTokenLifetime and is accepted for ClockSkew more.
// Tokens the session saw are covered by its own KeepUntil (which follows
// their expiry), the presenting one by keep. s may be nil (a scope's end).
func keepEnd(p *Policy, cl *Claims, s *Session, at int64) int64 {
	k := keep(p, cl, at)
	if s != nil {
		k = max(k, s.KeepUntil)
	}
	if p.MaxTokenLifetime > 0 {
		k = max(k, at+(p.MaxTokenLifetime+p.ClockSkew+retainMargin).Milliseconds())
	}
	return k
}

// userScope reports whether cl's S3 scope is its user's own (the token had
// no sid): recomputed, not inferred from an empty SID, so that claims built
// without their issuer or sid are never taken for it (a session wrongly so
// marked would be missing from the index by user).
func userScope(cl *Claims) bool {
	return cl.SID == "" && cl.Issuer != "" && cl.Scope == ScopeDigest(cl.Issuer, cl.Subject, "")
}
