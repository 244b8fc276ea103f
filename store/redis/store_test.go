package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

var ctx = context.Background()

// open returns a store on url, closed when the test ends, once it is ready.
func open(t testing.TB, url string, o Options) *Store {
	t.Helper()
	if o.Timeout == 0 {
		// Tests that are not about a slow Redis must not fail when a
		// loaded machine (the race detector, parallel packages) takes
		// longer than production's bound; those that are set their own.
		o.Timeout = 2 * time.Second
	}
	s, err := Open(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitReady(t, s)
	return s
}

func waitReady(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for s.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("store not ready: %v", s.Ready(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var seq int

// newSession returns a live session of policy "app" that began now.
func newSession(scope string) *authz.Session {
	seq++
	now := time.Now().UnixMilli()
	return &authz.Session{
		ID: fmt.Sprintf("id-%d-%d-%s", seq, now, scope), Policy: "app", Subject: "alice",
		Identity: authz.IdentityDigest("iss", "alice", nil), Scope: authz.ScopeDigest("iss", "alice", scope),
		SignIn: now, Created: now, LastActivity: now, KeepUntil: now + int64(time.Hour/time.Millisecond),
	}
}

func mustLoad(t testing.TB, s authz.Store, c context.Context, r *authz.Session) authz.Lookup {
	t.Helper()
	lk, err := s.Load(c, r.Policy, r.ID, r.Scope)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return lk
}

// TestLifecycle: the authz.Store contract against a real Redis, through the
// near cache and around it.
func TestLifecycle(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{FlushInterval: 20 * time.Millisecond})
	r := newSession("sid-1")
	if lk := mustLoad(t, s, ctx, r); lk.SessionFound || lk.ScopeFound {
		t.Fatalf("before Begin: %+v", lk)
	}
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	for i, l := range []authz.Store{s, s.Confirmed()} {
		lk := mustLoad(t, l, ctx, r)
		if !lk.SessionFound || lk.Session != *r || !lk.ScopeFound || lk.Scope.Current != r.ID || lk.Scope.EndedAt != 0 {
			t.Fatalf("after Begin (confirmed %v): %+v", i == 1, lk)
		}
	}
	// The record carries its KeepUntil as Redis' expiry.
	rc := srv.Client()
	if at, err := rc.PExpireTime(ctx, s.sessionKey("app", r.ID)).Result(); err != nil || at.Milliseconds() != r.KeepUntil {
		t.Errorf("session expiry = %v %v, want %d", at.Milliseconds(), err, r.KeepUntil)
	}

	la := r.LastActivity + 5000
	got, found, err := s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la, KeepUntil: r.KeepUntil + 1})
	if err != nil || !found || got.LastActivity != la || got.KeepUntil != r.KeepUntil+1 {
		t.Fatalf("Touch = %+v %v %v", got, found, err)
	}
	// Touch never moves time backwards.
	if got, _, _ := s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la - 1}); got.LastActivity != la {
		t.Errorf("Touch moved last activity back to %d", got.LastActivity)
	}
	// Coalesced: Redis has it after a flush.
	waitFor(t, "activity flushed", func() bool {
		lk := mustLoad(t, s.Confirmed(), ctx, r)
		return lk.Session.LastActivity == la
	})

	at := la + 1
	ended, ok, err := s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: at, KeepUntil: r.KeepUntil + 10})
	if err != nil || !ok || ended.EndedAt != at || ended.Cause != authz.CauseSignedOut {
		t.Fatalf("End = %+v %v %v", ended, ok, err)
	}
	if _, again, _ := s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseIdle, At: at + 1, KeepUntil: 1}); again {
		t.Error("a second End reported ended again")
	}
	for i, l := range []authz.Store{s, s.Confirmed()} {
		lk := mustLoad(t, l, ctx, r)
		if !lk.Session.Ended() || lk.Session.Cause != authz.CauseSignedOut || lk.Scope.EndedAt != at+1 || lk.Scope.Current != r.ID {
			t.Fatalf("after End (confirmed %v): %+v", i == 1, lk)
		}
	}
	// S3: a Touch of an ended session changes nothing, here or in Redis.
	got, found, err = s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: at + 100})
	if err != nil || !found || !got.Ended() || got.LastActivity != la {
		t.Fatalf("Touch after End = %+v %v %v", got, found, err)
	}
	// An end of the scope alone.
	other := authz.ScopeDigest("iss", "bob", "")
	if _, ok, err := s.End(ctx, "app", "", other, authz.End{Cause: authz.CauseAbsolute, At: 7, KeepUntil: r.KeepUntil}); err != nil || ok {
		t.Fatalf("scope End = %v %v", ok, err)
	}
	if lk, _ := s.Load(ctx, "app", "", other); !lk.ScopeFound || lk.Scope.EndedAt != 7 || lk.SessionFound {
		t.Fatalf("scope after End: %+v", lk)
	}
}

// TestCorruptRecord: a record that does not decode is an error, never an
// absent session and never an outage (fail-open must not apply).
func TestCorruptRecord(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{})
	r := newSession("")
	if err := srv.Client().Set(ctx, s.sessionKey("app", r.ID), "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctx, "app", r.ID, r.Scope)
	if !errors.Is(err, authz.ErrCorruptRecord) || errors.Is(err, authz.ErrStoreUnavailable) {
		t.Errorf("Load: %v", err)
	}
	_, _, err = s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: 1})
	if !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("Touch: %v", err)
	}
	_, _, err = s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseIdle, At: 1, KeepUntil: r.KeepUntil})
	if !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("End: %v", err)
	}
}

// TestTouchEndRace: Touches racing an End on two replicas never revive the
// session: once End returns, every later Touch and read finds it ended, and
// so does Redis after the last flush.
func TestTouchEndRace(t *testing.T) {
	srv := redistest.Start(t)
	a := open(t, srv.URL(), Options{FlushInterval: 5 * time.Millisecond})
	b := open(t, srv.URL(), Options{FlushInterval: 5 * time.Millisecond})
	for round := range 20 {
		r := newSession("")
		if err := a.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		loadCached(t, b, r) // b's Touches coalesce
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for i, st := range []*Store{a, b, a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := int64(1); ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, _, err := st.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: r.LastActivity + n*10 + int64(i)}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		at := time.Now().UnixMilli()
		if _, ended, err := a.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: at, KeepUntil: r.KeepUntil}); err != nil || !ended {
			t.Fatalf("End: %v %v", ended, err)
		}
		for _, st := range []*Store{a, b} {
			waitFor(t, "end seen", func() bool {
				got, found, err := st.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: at + 10})
				return err == nil && found && got.Ended()
			})
		}
		close(stop)
		wg.Wait()
		time.Sleep(20 * time.Millisecond) // the last flushes
		for _, st := range []*Store{a, b} {
			for _, l := range []authz.Store{st, st.Confirmed()} {
				if lk := mustLoad(t, l, ctx, r); !lk.Session.Ended() || lk.Session.EndedAt != at {
					t.Fatalf("round %d: revived: %+v", round, lk.Session)
				}
			}
		}
	}
}

// TestEndReachesOtherReplicas: a replica that cached a live session sees
// another replica's end within MaxStale, the bound the near cache promises
// (typically within a millisecond or two: the log line says).
func TestEndReachesOtherReplicas(t *testing.T) {
	srv := redistest.Start(t)
	a := open(t, srv.URL(), Options{})
	b := open(t, srv.URL(), Options{})
	var worst time.Duration
	for range 10 {
		r := newSession("s")
		if err := a.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		if lk := mustLoad(t, b, ctx, r); !lk.SessionFound || lk.Session.Ended() {
			t.Fatalf("b: %+v", lk)
		}
		loadCached(t, b, r)
		start := time.Now()
		if _, _, err := a.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: start.UnixMilli(), KeepUntil: r.KeepUntil}); err != nil {
			t.Fatal(err)
		}
		for {
			lk := mustLoad(t, b, ctx, r)
			if lk.Session.Ended() && lk.Scope.EndedAt != 0 {
				break
			}
			if time.Since(start) > b.o.MaxStale {
				t.Fatalf("b still serves the session %v after a's end", time.Since(start))
			}
			time.Sleep(time.Millisecond)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("slowest end seen by the other replica after %v", worst)
}

// TestActivityIsConfirmed: a replica whose near cache lags another's
// activity reads Redis' last activity when asked to confirm.
func TestActivityIsConfirmed(t *testing.T) {
	srv := redistest.Start(t)
	a := open(t, srv.URL(), Options{FlushInterval: 10 * time.Millisecond})
	b := open(t, srv.URL(), Options{FlushInterval: 10 * time.Millisecond})
	r := newSession("")
	if err := a.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	loadCached(t, b, r)
	la := r.LastActivity + 60_000
	if _, _, err := a.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b confirms a's activity", func() bool {
		return mustLoad(t, b.Confirmed(), ctx, r).Session.LastActivity == la
	})
}

// TestOutage: Redis stops. Reads fail with ErrStoreUnavailable and Ready
// says so; the fallback decides on what the replica knows, never reviving a
// session that ended before; its ends reach Redis once it is back, and the
// store recovers by itself.
func TestOutage(t *testing.T) {
	srv := redistest.Start(t)
	o := Options{FlushInterval: 20 * time.Millisecond, MaxStale: 200 * time.Millisecond}
	a := open(t, srv.URL(), o)
	b := open(t, srv.URL(), o)
	live, endedBefore, unseen := newSession("l"), newSession("e"), newSession("u")
	for _, r := range []*authz.Session{live, endedBefore, unseen} {
		if err := a.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	loadCached(t, b, live)
	// Ended on a; b never loaded it, yet learns the end from the channel.
	if _, _, err := a.End(ctx, "app", endedBefore.ID, endedBefore.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: endedBefore.KeepUntil}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b hears the end", func() bool {
		lk, _ := b.Fallback().Load(ctx, "app", endedBefore.ID, endedBefore.Scope)
		return lk.SessionFound && lk.Session.Ended() && lk.Scope.EndedAt != 0
	})

	srv.Stop()
	_, err := b.Confirmed().Load(ctx, "app", live.ID, live.Scope)
	if !errors.Is(err, authz.ErrStoreUnavailable) {
		t.Fatalf("Load during the outage: %v", err)
	}
	waitFor(t, "Ready reports the outage", func() bool { return errors.Is(b.Ready(ctx), authz.ErrStoreUnavailable) })
	if _, err := b.Load(ctx, "app", live.ID, live.Scope); !errors.Is(err, authz.ErrStoreUnavailable) {
		t.Fatalf("Load from an untrusted near cache: %v", err)
	}

	fb := b.Fallback()
	if lk := mustLoad(t, fb, ctx, live); !lk.SessionFound || lk.Session.Ended() {
		t.Errorf("fallback lost the live session: %+v", lk)
	}
	if lk := mustLoad(t, fb, ctx, endedBefore); !lk.Session.Ended() || lk.Scope.EndedAt == 0 {
		t.Errorf("fallback revives a session ended before the outage: %+v", lk)
	}
	if lk := mustLoad(t, fb, ctx, unseen); lk.SessionFound {
		t.Errorf("fallback knows a session it never saw: %+v", lk)
	}
	if got, found, err := fb.Touch(ctx, "app", live.ID, authz.Touch{LastActivity: live.LastActivity + 1}); err != nil || !found || got.Ended() {
		t.Errorf("fallback Touch: %+v %v %v", got, found, err)
	}
	at := time.Now().UnixMilli()
	if _, ended, err := fb.End(ctx, "app", live.ID, live.Scope, authz.End{Cause: authz.CauseIdentityMismatch, At: at, KeepUntil: live.KeepUntil}); err != nil || !ended {
		t.Fatalf("fallback End: %v %v", ended, err)
	}
	if lk := mustLoad(t, fb, ctx, live); !lk.Session.Ended() {
		t.Errorf("fallback forgot its own end: %+v", lk)
	}
	if _, _, err := fb.Touch(ctx, "app", live.ID, authz.Touch{LastActivity: at + 1}); err != nil {
		t.Fatal(err)
	}

	srv.Restart()
	waitReady(t, b)
	waitReady(t, a)
	for _, st := range []*Store{a, b} {
		for _, l := range []authz.Store{st, st.Confirmed()} {
			lk := mustLoad(t, l, ctx, live)
			if !lk.Session.Ended() || lk.Session.EndedAt != at || lk.Session.Cause != authz.CauseIdentityMismatch || lk.Scope.EndedAt != at {
				t.Errorf("after the outage, the fallback's end is not in Redis: %+v", lk)
			}
			if lk := mustLoad(t, l, ctx, endedBefore); !lk.Session.Ended() {
				t.Errorf("after the outage: revived %+v", lk)
			}
		}
	}
}

// TestResyncAfterReconnect: a change the replica could not hear while its
// subscription was down is seen after it reconnects: the live tier is
// forgotten, not trusted.
func TestResyncAfterReconnect(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{MaxStale: 200 * time.Millisecond})
	r := newSession("")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	loadCached(t, s, r)
	// Kill the subscription connection only; then change the record behind
	// the store's back (as a replica whose message was lost would).
	rc := srv.Client()
	if err := rc.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	ended := *r
	ended.EndedAt, ended.Cause = time.Now().UnixMilli(), authz.CauseSignedOut
	b, _ := ended.AppendBinary(nil)
	if err := rc.Set(ctx, s.sessionKey("app", r.ID), b, 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change is seen", func() bool {
		lk, err := s.Load(ctx, "app", r.ID, r.Scope)
		return err == nil && lk.Session.Ended()
	})
}

// TestCluster: the same contract on a three-master Redis Cluster, where a
// session and its scope live in different slots, and ends reach a replica
// subscribed on another node.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cl := redistest.StartCluster(t, 3)
	a := open(t, cl.URL(), Options{FlushInterval: 10 * time.Millisecond})
	b := open(t, "redis+cluster://"+cl.Nodes[2].Addr(), Options{FlushInterval: 10 * time.Millisecond})
	slots := map[int64]bool{}
	for range 10 {
		r := newSession("c")
		if err := a.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		slot, err := a.c.(*redis.ClusterClient).ClusterKeySlot(ctx, a.sessionKey("app", r.ID)).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[slot/5462] = true
		if lk := mustLoad(t, b, ctx, r); !lk.SessionFound || lk.Scope.Current != r.ID {
			t.Fatalf("b: %+v", lk)
		}
		if _, _, err := b.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: r.LastActivity + 1}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "touch flushed", func() bool {
			return mustLoad(t, a.Confirmed(), ctx, r).Session.LastActivity == r.LastActivity+1
		})
		if got, ended, err := a.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: r.KeepUntil}); err != nil || !ended {
			raw, rerr := a.c.Get(ctx, a.sessionKey("app", r.ID)).Bytes()
			t.Fatalf("End: ended %v, err %v, returned %+v; in Redis: %q (%v)", ended, err, got, raw, rerr)
		}
		waitFor(t, "b sees the end", func() bool { lk := mustLoad(t, b, ctx, r); return lk.Session.Ended() })
	}
	if len(slots) < 2 {
		t.Errorf("sessions landed on %d of 3 nodes' slot ranges", len(slots))
	}
}

// loadCached loads r until s's near cache holds it (a fill is skipped when
// a change to its stripe arrives during the read).
func loadCached(t testing.TB, s *Store, r *authz.Session) {
	t.Helper()
	waitFor(t, "near cache holds the session", func() bool {
		mustLoad(t, s, ctx, r)
		var lk authz.Lookup
		return s.cached(s.sessionKey(r.Policy, r.ID), s.scopeKey(r.Policy, r.Scope), time.Now().UnixMilli(), &lk)
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCloseDoesNotWaitForTheChannel: Close returns promptly even when the
// subscriber is blocked reading the change channel with a long MaxStale: a
// cancelled context does not interrupt a blocking read in go-redis.
func TestCloseDoesNotWaitForTheChannel(t *testing.T) {
	srv := redistest.Start(t)
	s, err := Open(srv.URL(), Options{MaxStale: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	time.Sleep(100 * time.Millisecond) // the subscriber is inside ReceiveTimeout
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
}

// TestFlushLearnsMissedEnd: an end whose message this replica never heard
// (in Cluster mode a PUBLISH reaches the subscribed node over the cluster
// bus, which the heartbeat does not vouch for) must not stay hidden behind a
// near-cache entry that activity keeps rewriting: the flush's touch returns
// the ended record from Redis, and the near cache takes it.
func TestFlushLearnsMissedEnd(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{FlushInterval: 20 * time.Millisecond, MaxStale: 200 * time.Millisecond})
	r := newSession("")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	loadCached(t, s, r)
	ended := *r
	ended.EndedAt, ended.Cause = time.Now().UnixMilli(), authz.CauseSignedOut
	b, _ := ended.AppendBinary(nil)
	if err := srv.Client().Set(ctx, s.sessionKey("app", r.ID), b, 0).Err(); err != nil {
		t.Fatal(err)
	}
	la := r.LastActivity
	waitFor(t, "the end is seen", func() bool {
		la++
		got, found, err := s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la})
		return err == nil && found && got.Ended()
	})
	if lk := mustLoad(t, s, ctx, r); !lk.Session.Ended() {
		t.Errorf("Load revives the session: %+v", lk)
	}
}

// TestCloseWritesQueuedEnds: an end the fallback acknowledged during an
// outage is written to Redis by Close when Redis is back but the subscriber
// has not reconnected yet (a rolling restart right after an outage): the
// queue lives only in this process.
func TestCloseWritesQueuedEnds(t *testing.T) {
	srv := redistest.Start(t)
	o := Options{FlushInterval: 20 * time.Millisecond, MaxStale: 200 * time.Millisecond}
	a := open(t, srv.URL(), o)
	b, err := Open(srv.URL(), o)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, b)
	r := newSession("q")
	if err := a.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	loadCached(t, b, r)
	srv.Stop()
	waitFor(t, "b sees the outage", func() bool { return b.Ready(ctx) != nil })
	time.Sleep(2 * time.Second) // the subscriber backs off to its longest wait
	at := time.Now().UnixMilli()
	if _, ended, err := b.Fallback().End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: at, KeepUntil: r.KeepUntil}); err != nil || !ended {
		t.Fatalf("fallback End: %v %v", ended, err)
	}
	srv.Restart()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a)
	if lk := mustLoad(t, a.Confirmed(), ctx, r); !lk.Session.Ended() || lk.Scope.EndedAt != at {
		t.Errorf("the acknowledged end was lost at Close: %+v", lk)
	}
}

// TestCloseWritesPendingActivity: activity still pending at Close is written even
// when a flush cut short (by Close's own cancel of the background flush, or
// a passing failure) left the store marked down, which skips flushes while
// it runs: the conformance suite's restart lost a touch so, once in CI.
func TestCloseWritesPendingActivity(t *testing.T) {
	srv := redistest.Start(t)
	o := Options{FlushInterval: time.Hour} // no background flush: the test decides
	s := open(t, srv.URL(), o)
	r := newSession("")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	loadCached(t, s, r) // a touch of a cached session is pended, not written
	la := r.LastActivity + 500
	if _, found, err := s.Touch(ctx, "app", r.ID, authz.Touch{LastActivity: la}); err != nil || !found {
		t.Fatalf("Touch: %v %v", found, err)
	}
	s.down.Store(true) // as a background flush cut short by Close's cancel leaves it
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if lk := mustLoad(t, open(t, srv.URL(), o), ctx, r); lk.Session.LastActivity != la {
		t.Errorf("activity pending at Close was lost: last activity %d, want %d", lk.Session.LastActivity, la)
	}
}

// TestEndDespiteCorruptScope: a corrupt scope record fails the End (S9), but
// does not stop the session's own end: the fallback's queue drops an end
// that fails so, and the session must not stay live in Redis behind it,
// ready to be revived once an operator removes the damaged scope record.
func TestEndDespiteCorruptScope(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{})
	r := newSession("cs")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	rc := srv.Client()
	if err := rc.Set(ctx, s.scopeKey("app", r.Scope), "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: r.KeepUntil})
	if !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("End: %v", err)
	}
	b, err := rc.Get(ctx, s.sessionKey("app", r.ID)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var got authz.Session
	if err := got.UnmarshalBinary(b); err != nil || !got.Ended() {
		t.Errorf("session in Redis after the End: %+v %v", got, err)
	}
}
