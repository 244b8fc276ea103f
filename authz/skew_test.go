package authz

import (
	"testing"
	"time"
)

// An IdP whose clock runs ahead (within the verifier's clock skew) issues
// tokens whose sign-in lies after the instant the gate ends their session.
// Replaying the very token that was presented when the session ended must
// not open a new session (S3: "not the same token replayed").
func TestS3FutureSignInWithinSkewDoesNotSurviveItsEnd(t *testing.T) {
	const ahead = 20 * time.Second // IdP clock ahead of the gate, within skew
	endings := []struct {
		name   string
		reason Reason
		end    func(h *harness, raw string, cookie string) (Decision, string)
	}{
		{"sign-out with token", ReasonSignedOut, func(h *harness, raw, cookie string) (Decision, string) {
			return h.check(req{path: "/logout", token: raw, cookie: cookie, browser: true}), raw
		}},
		{"sign-out with token, no cookie", ReasonSignedOut, func(h *harness, raw, _ string) (Decision, string) {
			return h.check(req{path: "/logout", token: raw, browser: true}), raw
		}},
		{"idle timeout", ReasonIdleTimeout, func(h *harness, _, cookie string) (Decision, string) {
			h.advance(31 * time.Minute)
			// A silently refreshed token (no auth_time) from the fast IdP.
			late := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})
			return h.check(req{token: late, cookie: cookie}), late
		}},
	}
	for _, e := range endings {
		t.Run(e.name, func(t *testing.T) {
			h := newHarness(t)
			raw := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)}) // no auth_time: sign-in is iat
			d := h.check(req{token: raw, browser: true})
			mustAllow(t, d, "sign-in")
			cookie := cookieOf(t, d)
			h.advance(time.Second)
			d, replay := e.end(h, raw, cookie)
			if d.Allow || d.Reason != e.reason {
				t.Fatalf("end: %s", describe(d))
			}
			h.advance(time.Second)
			mustDeny(t, h.check(req{token: replay}), ReasonReauthRequired, "same token replayed, no cookie")
			mustDeny(t, h.check(req{token: replay, cookie: cookie}), ReasonReauthRequired, "same token replayed with cookie")
			// A genuine new sign-in from the same fast IdP still works.
			h.advance(time.Second)
			fresh := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})
			mustAllow(t, h.check(req{token: fresh}), "new sign-in")
		})
	}
}

// S1: "sign_in is the token's auth_time claim when present". A session opened
// by a token without auth_time starts its lifetime at the session start; a
// token of the same user and scope that does carry auth_time, older than the
// absolute timeout, must not ride on that later start.
func TestS1OldAuthTimeOnASessionStartedWithoutOne(t *testing.T) {
	h := newHarness(t)
	plain := h.mint(tok{sub: "alice"}) // no auth_time: sign-in is the session start
	d := h.check(req{token: plain})
	mustAllow(t, d, "first")
	cookie := cookieOf(t, d)
	h.advance(time.Minute)
	old := h.mint(tok{sub: "alice", authTime: h.now().Add(-8*time.Hour - time.Second)})
	for _, r := range []req{{token: old, cookie: cookie}, {token: old}} {
		d = h.check(r)
		if d.Allow {
			t.Fatalf("token whose auth_time is past the absolute timeout allowed: %s", describe(d))
		}
	}
	mustDeny(t, h.check(req{token: plain, cookie: cookie}), ReasonReauthRequired, "the session ended with it")
}

// After a sign-out recorded at a fast IdP's sign-in time (ahead of the gate's
// clock), a genuine new sign-in opens one session that then continues; it is
// not taken for a session that died with the earlier end, which would open a
// fresh session (new cookie, fresh deadlines) on every request.
func TestS3NewSessionAfterAFutureEndContinues(t *testing.T) {
	const ahead = 20 * time.Second
	h := newHarness(t)
	raw := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})
	mustAllow(t, h.check(req{token: raw}), "sign-in")
	h.advance(time.Second)
	if d := h.check(req{path: "/logout", token: raw}); d.Reason != ReasonSignedOut {
		t.Fatalf("logout: %s", describe(d))
	}
	h.advance(time.Second)
	fresh := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})
	d := h.check(req{token: fresh})
	mustAllow(t, d, "new sign-in")
	cookie := cookieOf(t, d)
	h.advance(time.Second)
	d = h.check(req{token: fresh, cookie: cookie})
	mustAllow(t, d, "same session")
	if len(d.SetCookie) != 0 {
		t.Errorf("a new session on every request: Set-Cookie %q", d.SetCookie)
	}
	_, started, _, _ := h.events.counts()
	if started != 2 {
		t.Errorf("%d sessions started, want 2", started)
	}
}

// TestS3EndKeptUntilEveryTokenExpires: a session end is kept until every
// token it covers has expired. Before, the end of a sign-out by cookie alone
// was kept for the absolute timeout plus a minute: a token without
// auth_time, issued before the sign-out and valid for an hour, opened a new
// session once the record was gone (90 s after a sign-out with a 10 s
// absolute timeout), whether the session had seen it or not.
func TestS3EndKeptUntilEveryTokenExpires(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration // the policy's max token lifetime; 0: none known
		seen     bool          // the session saw the token before the end
	}{
		{"a token the session saw, no lifetime bound", 0, true},
		{"a token the session saw", 24 * time.Hour, true},
		{"a token of the scope the session never saw", 24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(p *Policy) {
				p.AbsoluteTimeout, p.IdleTimeout, p.WarnBefore = 10*time.Second, 5*time.Second, 0
				p.MaxTokenLifetime, p.ClockSkew = tc.lifetime, 30*time.Second
			})
			// No auth_time: the sign-in is iat. Short-lived, so that only the
			// other token below can keep the records.
			first := h.mint(tok{sub: "alice", sid: "s1", exp: h.now().Add(20 * time.Second)})
			d := h.check(req{token: first, browser: true})
			mustAllow(t, d, "sign-in")
			cookie := cookieOf(t, d)
			h.advance(time.Second)
			// Another token of the same IdP session, valid for an hour.
			other := h.mint(tok{sub: "alice", sid: "s1", exp: h.now().Add(time.Hour)})
			if tc.seen {
				mustAllow(t, h.check(req{token: other, cookie: cookie}), "the other token, in the session")
			}
			h.advance(time.Second)
			mustDeny(t, h.check(req{path: "/logout", cookie: cookie, browser: true}), ReasonSignedOut, "sign-out by cookie alone")
			for _, after := range []time.Duration{90 * time.Second, 50 * time.Minute} {
				h.advance(after)
				mustDeny(t, h.check(req{token: other}), ReasonReauthRequired, "the other token, "+after.String()+" later")
			}
		})
	}
}

// TestS3TokenlessEndCoversSignInsAhead: an end that sees no token of its
// scope (a sign-out by cookie alone, a session ended because another
// identity presented its cookie) covers the sign-ins a fast IdP stamped
// ahead of the gate before it. Before, it was recorded at the gate's now,
// and a token of the ended sign-in whose auth_time (or, without one, iat)
// lay ahead counted as a sign-in after the end and reopened at once.
func TestS3TokenlessEndCoversSignInsAhead(t *testing.T) {
	const ahead, skew = 20 * time.Second, 30 * time.Second
	for _, end := range []struct {
		name string
		end  func(h *harness, cookie string) Decision
		want Reason
	}{
		{"sign-out by cookie alone", func(h *harness, cookie string) Decision {
			return h.check(req{path: "/logout", cookie: cookie, browser: true})
		}, ReasonSignedOut},
		{"identity mismatch", func(h *harness, cookie string) Decision {
			return h.check(req{token: h.mint(tok{sub: "mallory", authTime: h.now()}), cookie: cookie})
		}, ReasonIdentityMismatch},
	} {
		// With auth_time: the session knows its sign-in's stamp. The end
		// covers every token of that sign-in, and a new sign-in right after
		// it (stamped later by the same fast IdP) opens a session at once.
		t.Run(end.name+", auth_time", func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.ClockSkew = skew })
			signIn := h.now().Add(ahead)
			raw := h.mint(tok{sub: "alice", authTime: signIn})
			d := h.check(req{token: raw, browser: true})
			mustAllow(t, d, "sign-in")
			cookie := cookieOf(t, d)
			h.advance(time.Second)
			mustDeny(t, end.end(h, cookie), end.want, "end")
			h.advance(time.Second)
			mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, "the sign-in's token, no cookie")
			mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonReauthRequired, "the sign-in's token, with the cookie")
			refreshed := h.mint(tok{sub: "alice", authTime: signIn, iat: h.now().Add(ahead)})
			mustDeny(t, h.check(req{token: refreshed}), ReasonReauthRequired, "a token of the sign-in refreshed later")
			mustAllow(t, h.check(req{token: h.mint(tok{sub: "alice", authTime: h.now().Add(ahead)})}), "a new sign-in")
		})
		// Without auth_time: the sign-in is each token's iat, which the
		// session has not kept. The end covers the whole skew.
		t.Run(end.name+", iat", func(t *testing.T) {
			h := newHarness(t, func(p *Policy) { p.ClockSkew = skew })
			raw := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})
			d := h.check(req{token: raw, browser: true})
			mustAllow(t, d, "sign-in")
			cookie := cookieOf(t, d)
			h.advance(time.Second)
			refreshed := h.mint(tok{sub: "alice", iat: h.now().Add(ahead)}) // issued before the end
			mustDeny(t, end.end(h, cookie), end.want, "end")
			h.advance(time.Second)
			mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, "the first token")
			mustDeny(t, h.check(req{token: refreshed}), ReasonReauthRequired, "a token refreshed before the end")
			h.advance(skew)
			mustAllow(t, h.check(req{token: h.mint(tok{sub: "alice", iat: h.now().Add(ahead)})}), "a new sign-in past the skew")
		})
	}
}

// TestS3TokenlessEndOfASignInSession: a session of the gate's own sign-in
// (login.oidc) without auth_time took its sign-in from the gate's clock;
// its tokenless end (the browser's sign-out) is recorded at now, not the
// skew ahead, so that signing in again at once is not refused.
func TestS3TokenlessEndOfASignInSession(t *testing.T) {
	p := &Policy{ClockSkew: 30 * time.Second}
	s := &Session{Method: MethodOIDC, SignIn: 1000, Created: 1000}
	if at := endAt(p, nil, s, 2000); at != 2000 {
		t.Errorf("sign-in session: end at %d, want 2000", at)
	}
	s.Method = MethodToken
	if at := endAt(p, nil, s, 2000); at != 32000 {
		t.Errorf("token session without auth_time: end at %d, want 32000", at)
	}
}
