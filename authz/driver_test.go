package authz

import (
	"context"
	"testing"
	"time"
)

// nearStore is a FallbackStore fake: its Loads answer from a replica-local
// copy that may lag (stale), Confirmed reads the record, Fallback is the
// store decided on during an outage.
type nearStore struct {
	*memStore
	stale     map[string]Session
	fallback  Store
	confirmed int
}

func (n *nearStore) Load(ctx context.Context, policy, id string, scope Digest) (Lookup, error) {
	lk, err := n.memStore.Load(ctx, policy, id, scope)
	if s, ok := n.stale[id]; ok && err == nil {
		lk.Session = s
	}
	return lk, err
}

func (n *nearStore) Confirmed() Store { n.confirmed++; return n.memStore }
func (n *nearStore) Fallback() Store  { return n.fallback }

func nearHarness(t *testing.T, failOpen bool) (*harness, *nearStore) {
	h := newHarness(t, func(p *Policy) { p.StoreFailOpen = failOpen })
	ns := &nearStore{memStore: h.store, stale: map[string]Session{}, fallback: newMemStore(h.clock)}
	eng, err := NewEngine(Options{Policies: fakePolicies{appHost: h.app}, Store: ns, Clock: h.clock, Events: h.events})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return h, ns
}

// TestS2ConfirmedBeforeEnding: a session that looks idle on a replica's
// stale copy, but was active on another replica, is confirmed against the
// store of record and resumed, not ended.
func TestS2ConfirmedBeforeEnding(t *testing.T) {
	h, ns := nearHarness(t, false)
	raw := h.mint(tok{sub: "alice", authTime: h.now()})
	d := h.check(req{token: raw})
	mustAllow(t, d, "first")
	id := cookieOf(t, d)
	stale, _ := h.store.get("app", id)
	ns.stale[id] = stale
	h.clock.Advance(20 * time.Minute)
	mustAllow(t, h.check(req{token: raw, cookie: id}), "activity at 20m")
	h.clock.Advance(20 * time.Minute) // 40m after the stale copy's activity
	calls := h.ver.Calls()
	mustAllow(t, h.check(req{token: raw, cookie: id}), "at 40m, active at 20m on the record")
	if ns.confirmed != 1 {
		t.Errorf("%d confirmed reads, want 1", ns.confirmed)
	}
	if got := h.ver.Calls() - calls; got != 1 {
		t.Errorf("the token was verified %d times for one request", got)
	}
	if s, _ := h.store.get("app", id); s.Ended() {
		t.Errorf("ended on a stale copy: %+v", s)
	}
}

// TestS9FailOpenDecidesOnTheFallback: with the store of record down, a
// fail-open policy decides on the store's local copy, verifying the token
// once.
func TestS9FailOpenDecidesOnTheFallback(t *testing.T) {
	h, ns := nearHarness(t, true)
	raw := h.mint(tok{sub: "alice", authTime: h.now()})
	h.store.setFail("load", true)
	calls := h.ver.Calls()
	d := h.check(req{token: raw})
	mustAllow(t, d, "on the fallback")
	if d.SessionExpiresAt == 0 || len(d.SetCookie) != 1 {
		t.Errorf("the fallback did not open a session: %s", describe(d))
	}
	if got := h.ver.Calls() - calls; got != 1 {
		t.Errorf("the token was verified %d times for one request", got)
	}
	if _, ok := ns.fallback.(*memStore).get("app", cookieOf(t, d)); !ok {
		t.Error("the session is not in the fallback")
	}
}
