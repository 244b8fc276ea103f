package redis

import (
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// roundTrip runs the store contract on two stores a and b on the same
// Redis: Begin, Touch (flushed), End on a, and b's Load sees the end
// within a bounded time, from its near cache.
func roundTrip(t *testing.T, a, b *Store) *authz.Session {
	t.Helper()
	r := newSession("rt")
	if err := a.Begin(ctx, r); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if lk := mustLoad(t, a.Confirmed(), ctx, r); !lk.SessionFound || lk.Session != *r || lk.Scope.Current != r.ID {
		t.Fatalf("a after Begin: %+v", lk)
	}
	if lk := mustLoad(t, b, ctx, r); !lk.SessionFound || lk.Session.Ended() || lk.Scope.Current != r.ID {
		t.Fatalf("b after Begin: %+v", lk)
	}
	la := r.LastActivity + 1000
	if got, found, err := a.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la}); err != nil || !found || got.LastActivity != la {
		t.Fatalf("Touch = %+v %v %v", got, found, err)
	}
	waitFor(t, "b confirms a's activity", func() bool {
		return mustLoad(t, b.Confirmed(), ctx, r).Session.LastActivity == la
	})
	loadCached(t, b, r)
	start := time.Now()
	if _, ended, err := a.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: start.UnixMilli(), KeepUntil: r.KeepUntil}); err != nil || !ended {
		t.Fatalf("End = %v %v", ended, err)
	}
	for {
		lk := mustLoad(t, b, ctx, r)
		if lk.Session.Ended() && lk.Scope.EndedAt != 0 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("b still serves the session %v after a's end", time.Since(start))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("b saw a's end after %v", time.Since(start))
	for _, s := range []*Store{a, b} {
		if lk := mustLoad(t, s.Confirmed(), ctx, r); !lk.Session.Ended() || lk.Session.Cause != authz.CauseSignedOut {
			t.Fatalf("confirmed read after End: %+v", lk)
		}
	}
	return r
}

// TestSentinel: the store on redis+sentinel://s1,s2/mymaster reaches the
// master the sentinels name, and two stores on the URL share ends.
func TestSentinel(t *testing.T) {
	g := redistest.StartSentinel(t, 0, 2)
	a := open(t, g.URL(), Options{FlushInterval: 10 * time.Millisecond})
	b := open(t, g.URL(), Options{FlushInterval: 10 * time.Millisecond})
	r := roundTrip(t, a, b)
	// The records are on the master.
	if n, err := g.Master.Client().Exists(ctx, a.sessionKey("app", r.ID), a.scopeKey("app", r.Scope)).Result(); err != nil || n != 2 {
		t.Fatalf("records on the master: %d %v", n, err)
	}
}

// TestSentinelFailover: the master dies, the sentinels promote its replica,
// and the stores follow: what ended before stays ended, and the contract
// holds on the new master.
//
// Redis replication is asynchronous and the store does not WAIT for
// replicas, so an end acknowledged by a master that dies before its
// replica has it is lost in a failover (docs/scale-out.md says so). The
// test waits until the replica holds the records before it kills the
// master: it checks that the store follows the failover, not that Redis
// replication is synchronous.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a Sentinel failover")
	}
	g := redistest.StartSentinel(t, 1, 2)
	a := open(t, g.URL(), Options{FlushInterval: 10 * time.Millisecond})
	b := open(t, g.URL(), Options{FlushInterval: 10 * time.Millisecond})
	ended := roundTrip(t, a, b)
	live := newSession("live")
	if err := a.Begin(ctx, live); err != nil {
		t.Fatal(err)
	}
	loadCached(t, b, live)
	keys := []string{a.sessionKey("app", ended.ID), a.scopeKey("app", ended.Scope), a.sessionKey("app", live.ID), a.scopeKey("app", live.Scope)}
	mc, rc := g.Master.Client(), g.Replicas[0].Client()
	waitFor(t, "the replica holds the records", func() bool {
		for _, k := range keys {
			m, err1 := mc.Get(ctx, k).Result()
			r, err2 := rc.Get(ctx, k).Result()
			if err1 != nil || err2 != nil || m != r {
				return false
			}
		}
		return true
	})

	old := g.Master.Addr()
	start := time.Now()
	g.Master.Kill()
	waitFor(t, "a notices the outage", func() bool { return a.Ready(ctx) != nil })
	promoted := g.WaitFailover(t, old, time.Minute)
	t.Logf("promoted after %v", time.Since(start))
	if promoted != g.Replicas[0].Addr() {
		t.Fatalf("promoted %s, want the replica %s", promoted, g.Replicas[0].Addr())
	}
	waitReady(t, a)
	waitReady(t, b)
	t.Logf("failover from %s to %s; stores ready after %v", old, promoted, time.Since(start))

	// Ended stays ended, on both stores, cached or confirmed; a Touch does
	// not revive it.
	for _, s := range []*Store{a, b} {
		for _, c := range []bool{false, true} {
			var l authz.Store = s
			if c {
				l = s.Confirmed()
			}
			if lk := mustLoad(t, l, ctx, ended); !lk.Session.Ended() || lk.Scope.EndedAt == 0 {
				t.Fatalf("ended session after failover (confirmed %v): %+v", c, lk)
			}
			if lk := mustLoad(t, l, ctx, live); !lk.SessionFound || lk.Session.Ended() || lk.Scope.Current != live.ID {
				t.Fatalf("live session after failover (confirmed %v): %+v", c, lk)
			}
		}
	}
	if got, _, err := b.Touch(ctx, "app", ended.ID, authz.Touch{LastActivity: time.Now().UnixMilli()}); err != nil || !got.Ended() {
		t.Fatalf("Touch of the ended session after failover = %+v %v", got, err)
	}
	// The live session ends on the new master, and the end reaches b.
	if _, ok, err := a.End(ctx, "app", live.ID, live.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: live.KeepUntil}); err != nil || !ok {
		t.Fatalf("End after failover = %v %v", ok, err)
	}
	waitFor(t, "b sees the end after failover", func() bool { lk := mustLoad(t, b, ctx, live); return lk.Session.Ended() })
	roundTrip(t, a, b)
	if n, err := g.Replicas[0].Client().Exists(ctx, a.sessionKey("app", live.ID)).Result(); err != nil || n != 1 {
		t.Fatalf("records on the new master: %d %v", n, err)
	}
}
