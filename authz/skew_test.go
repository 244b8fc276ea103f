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
