package authz

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestS18CallbackInFlightAfterBackChannelLogout: the provider signs a
// person out (a back-channel logout of their provider session) while the
// callback of a sign-in made before it is still on its way; the callback
// opens no session (the raised scope end refuses it, S3/S14), and a
// session of that provider session already open is over.
func TestS18CallbackInFlightAfterBackChannelLogout(t *testing.T) {
	h := newSignInHarness(t)
	open := h.signInNow("alice", time.Hour)
	// Bob's sign-in has no session yet: its callback has not come back.
	inFlight := h.provider("bob", h.now().Add(-2*time.Second), time.Hour, 0)

	h.advance(time.Second)
	at := h.now().UnixMilli()
	for _, sid := range []string{"idp-session-alice", "idp-session-bob"} {
		ended, err := EndSessions(context.Background(), h.store, h.ev, h.app,
			Selector{Issuer: issuer, SID: sid, SignedInBy: at}, CauseIdPLogout, at)
		if want := strings.HasSuffix(sid, "alice"); err != nil || (len(ended) == 1) != want || want && ended[0].ID != open {
			t.Fatalf("EndSessions(%s) = %+v, %v", sid, ended, err)
		}
	}
	begins := h.store.counts().begins
	// The callback is answered by a new sign-in that asks for credentials
	// (the provider's session ended), not by a session.
	starts := len(h.si.starts)
	d := h.check(req{browser: true, path: inFlight})
	if d.Allow || d.Reason == ReasonSignedIn || d.Status != 302 || !strings.HasPrefix(d.Location, idpAuthorize) ||
		len(d.SetCookie) != 1 || d.SetCookie[0] != txnCookie {
		t.Fatalf("the callback in flight: %s", describe(d))
	}
	if len(h.si.starts) != starts+1 || h.si.starts[starts] < at {
		t.Errorf("the new sign-in does not ask for re-authentication after the logout (endedAt %v, logout at %d)", h.si.starts[starts:], at)
	}
	if h.store.counts().begins != begins {
		t.Error("the callback in flight opened a session")
	}
	// The open session's cookie now leads to the provider, asking for
	// credentials again.
	d = h.check(req{browser: true, cookie: open})
	if d.Allow || d.Status != 302 || !strings.HasPrefix(d.Location, idpAuthorize) {
		t.Fatalf("the ended session: %s", describe(d))
	}
	if n := len(h.si.starts); n == 0 || h.si.starts[n-1] == 0 {
		t.Errorf("the sign-in after a back-channel logout does not ask for re-authentication: %v", h.si.starts)
	}
	// A sign-in after the logout opens a new session.
	h.advance(time.Second)
	if d := h.check(req{browser: true, path: h.provider("bob", h.now(), time.Hour, 0)}); d.Reason != ReasonSignedIn {
		t.Fatalf("a sign-in after the logout: %s", describe(d))
	}
}

// TestUserEndCoversProviderSessionsNeverSeen: an end that names the user
// (a logout token without a sid, an administrator's end --user) refuses the
// tokens of that user signed in before it even from a provider session no
// session here has seen (S3): its sid scope has no end of its own, the
// user's scope has. Tokens signed in after the end open sessions.
func TestUserEndCoversProviderSessionsNeverSeen(t *testing.T) {
	h := newHarness(t)
	signedIn := h.now()
	seen := h.mint(tok{sub: "alice", sid: "op-1", authTime: signedIn})
	if d := h.check(req{token: seen}); !d.Allow {
		t.Fatalf("first token: %s", describe(d))
	}
	// Minted before the end, presented only after it, from another
	// provider session of alice.
	unseen := h.mint(tok{sub: "alice", sid: "op-2", authTime: signedIn})
	h.advance(time.Second)
	at := h.now().UnixMilli()
	ended, err := EndSessions(context.Background(), h.store, h.events, h.app, Selector{Issuer: issuer, Subject: "alice"}, CauseAdmin, at)
	if err != nil || len(ended) != 1 {
		t.Fatalf("EndSessions = %+v, %v", ended, err)
	}
	h.advance(time.Second)
	for name, raw := range map[string]string{"seen": seen, "never seen": unseen} {
		if d := h.check(req{token: raw}); d.Allow || d.Reason != ReasonReauthRequired {
			t.Errorf("a token of the %s provider session signed in before the end: %s", name, describe(d))
		}
	}
	// Bob is not alice.
	if d := h.check(req{token: h.mint(tok{sub: "bob", sid: "op-3", authTime: signedIn})}); !d.Allow {
		t.Errorf("another user's token: %s", describe(d))
	}
	// A sign-in after the end opens a session, in any provider session.
	if d := h.check(req{token: h.mint(tok{sub: "alice", sid: "op-4", authTime: h.now()})}); !d.Allow {
		t.Errorf("a sign-in after the end: %s", describe(d))
	}
}

// TestUserEndAsksCredentialsOfUnseenProviderSession: after an end that
// names the user, a callback whose ID token comes from a provider session
// no session here has seen, with a sign-in from before the end (single
// sign-on), opens no session: the browser is asked for credentials (S3,
// S14).
func TestUserEndAsksCredentialsOfUnseenProviderSession(t *testing.T) {
	h := newSignInHarness(t)
	before := h.now()
	h.advance(time.Second)
	at := h.now().UnixMilli()
	if _, err := EndSessions(context.Background(), h.store, h.ev, h.app, Selector{Issuer: issuer, Subject: "alice"}, CauseAdmin, at); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Second)
	begins, starts := h.store.counts().begins, len(h.si.starts)
	d := h.check(req{browser: true, path: h.provider("alice", before, time.Hour, 0)})
	if d.Allow || d.Status != 302 || !strings.HasPrefix(d.Location, idpAuthorize) {
		t.Fatalf("a callback with a sign-in from before the user's end: %s", describe(d))
	}
	if h.store.counts().begins != begins {
		t.Error("the callback opened a session")
	}
	if len(h.si.starts) != starts+1 || h.si.starts[starts] < at {
		t.Errorf("the new sign-in does not ask for credentials after the end (endedAt %v, end at %d)", h.si.starts[starts:], at)
	}
	// With credentials typed after the end: a session.
	if d := h.check(req{browser: true, path: h.provider("alice", h.now(), time.Hour, at)}); d.Reason != ReasonSignedIn {
		t.Fatalf("a sign-in after the end: %s", describe(d))
	}
}
