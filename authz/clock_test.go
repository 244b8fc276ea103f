package authz

import (
	"testing"
	"time"
)

// The wall clock may jump: NTP steps it, a VM resumes, an operator sets it.
// Forward, sessions time out as if the time had passed. Backward, nothing
// that ended comes back, live sessions are not extended by the requests
// made "in the past", and nothing panics.

func TestClockJumpForward(t *testing.T) {
	for _, tc := range []struct {
		jump time.Duration
		want Reason
	}{
		{31 * time.Minute, ReasonIdleTimeout},
		{9 * time.Hour, ReasonAbsoluteTimeout},
		{100 * 365 * 24 * time.Hour, ReasonAbsoluteTimeout},
	} {
		h := newHarness(t)
		raw, cookie := h.signIn(tok{sub: "alice"})
		h.advance(tc.jump)
		mustDeny(t, h.check(req{token: raw, cookie: cookie}), tc.want, "after a jump of "+tc.jump.String())
		mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, "the token alone afterwards")
	}
}

func TestClockJumpBackNeverRevives(t *testing.T) {
	type ending struct {
		name string
		end  func(h *harness, raw, cookie string)
	}
	for _, e := range []ending{
		{"sign-out", func(h *harness, raw, cookie string) {
			mustDeny(t, h.check(req{path: "/logout", token: raw, cookie: cookie}), ReasonSignedOut, "sign-out")
		}},
		{"idle", func(h *harness, raw, cookie string) {
			h.advance(31 * time.Minute)
			mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonIdleTimeout, "idle")
		}},
		{"absolute", func(h *harness, raw, cookie string) {
			h.advance(8*time.Hour + time.Second)
			mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonAbsoluteTimeout, "absolute")
		}},
		{"identity mismatch", func(h *harness, raw, cookie string) {
			mallory := h.mint(tok{sub: "mallory", authTime: h.now()})
			mustDeny(t, h.check(req{token: mallory, cookie: cookie}), ReasonIdentityMismatch, "mismatch")
		}},
	} {
		for _, back := range []time.Duration{time.Minute, 2 * time.Hour, 30 * 24 * time.Hour} {
			h := newHarness(t)
			raw, cookie := h.signIn(tok{sub: "alice"})
			e.end(h, raw, cookie)
			h.advance(-back)
			what := e.name + ", then the clock " + back.String() + " back"
			mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonReauthRequired, what+": cookie and token")
			mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, what+": token alone")
			if d := h.check(req{token: raw, cookie: cookie, path: "/logout"}); d.Reason != ReasonSignedOut {
				t.Errorf("%s: sign-out answered %s", what, describe(d))
			}
			mustDeny(t, h.check(req{token: raw}), ReasonReauthRequired, what+": after another sign-out")
		}
	}
}

func TestClockJumpBackDoesNotExtendLiveSessions(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(10 * time.Minute)
	mustAllow(t, h.check(req{token: raw, cookie: cookie}), "active")
	active := h.now()

	h.advance(-3 * time.Hour) // requests "in the past" are allowed ...
	for range 5 {
		h.advance(time.Minute)
		mustAllow(t, h.check(req{token: raw, cookie: cookie}), "3h back")
	}
	if s, _ := h.store.get("app", cookie); s.LastActivity != ms(active) {
		t.Fatalf("last activity moved back to %v, want %v", time.UnixMilli(s.LastActivity), active)
	}

	// ... and once the clock is right again, the idle deadline still counts
	// from the real last activity.
	h.advance(active.Add(30*time.Minute + time.Millisecond).Sub(h.now()))
	mustDeny(t, h.check(req{token: raw, cookie: cookie}), ReasonIdleTimeout, "idle from the real last activity")
}

// TestClockBeforeTheEpoch: a clock set before 1970 yields times that no
// record can hold as an end (0 means live): the sign-out is refused with
// store_unavailable rather than recorded as not ended, and nothing panics.
func TestClockBeforeTheEpoch(t *testing.T) {
	h := newHarness(t)
	raw, cookie := h.signIn(tok{sub: "alice"})
	h.advance(time.Unix(-3600, 0).Sub(h.now()))
	d := h.check(req{path: "/logout", token: raw, cookie: cookie})
	mustDeny(t, d, ReasonStoreUnavailable, "sign-out before 1970")
	if d.Status != 503 {
		t.Errorf("status %d, want 503", d.Status)
	}
	fresh := h.mint(tok{sub: "bob", authTime: h.now()})
	if d := h.check(req{token: fresh}); !d.Allow && d.Reason != ReasonStoreUnavailable {
		t.Errorf("a sign-in before 1970: %s", describe(d))
	}
}
