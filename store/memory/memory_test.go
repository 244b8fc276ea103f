package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

const (
	t0     = int64(1_700_000_000_000) // Unix ms
	hourMs = int64(time.Hour / time.Millisecond)
)

// fakeClock is safe for concurrent use: bigcache's goroutines read it.
type fakeClock struct{ ms atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(t0)
	return c
}

func (c *fakeClock) Now() time.Time      { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func newStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	ctx   = context.Background()
	alice = authz.ScopeDigest("https://idp", "alice", "")
	bob   = authz.ScopeDigest("https://idp", "bob", "")
)

func newSession(id string, scope authz.Digest) *authz.Session {
	return &authz.Session{
		ID:           id,
		Policy:       "crm",
		Subject:      "alice",
		Identity:     authz.IdentityDigest("https://idp", "alice", nil),
		Scope:        scope,
		SignIn:       t0,
		Created:      t0,
		LastActivity: t0,
		KeepUntil:    t0 + 8*hourMs,
	}
}

func mustLoad(t *testing.T, s *Store, id string, scope authz.Digest) authz.Lookup {
	t.Helper()
	l, err := s.Load(ctx, "crm", id, scope)
	if err != nil {
		t.Fatalf("Load(%q): %v", id, err)
	}
	return l
}

func TestBeginLoad(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	want := newSession("s1", alice)
	if err := s.Begin(ctx, want); err != nil {
		t.Fatal(err)
	}
	l := mustLoad(t, s, "s1", alice)
	if !l.SessionFound || l.Session != *want {
		t.Errorf("session = %+v, %v; want %+v", l.Session, l.SessionFound, *want)
	}
	if wantScope := (authz.ScopeState{Current: "s1", KeepUntil: want.KeepUntil}); !l.ScopeFound || l.Scope != wantScope {
		t.Errorf("scope = %+v, %v; want %+v", l.Scope, l.ScopeFound, wantScope)
	}
	if l := mustLoad(t, s, "", alice); l.SessionFound || !l.ScopeFound {
		t.Errorf("Load without id = %+v", l)
	}
	if l := mustLoad(t, s, "nope", bob); l.SessionFound || l.ScopeFound {
		t.Errorf("Load of unknown = %+v", l)
	}
	if l, _ := s.Load(ctx, "other", "s1", alice); l.SessionFound || l.ScopeFound {
		t.Errorf("another policy sees %+v", l)
	}

	// A second session of the scope becomes current; KeepUntil only grows.
	next := newSession("s2", alice)
	next.KeepUntil = t0 + hourMs
	if err := s.Begin(ctx, next); err != nil {
		t.Fatal(err)
	}
	if l := mustLoad(t, s, "", alice); l.Scope.Current != "s2" || l.Scope.KeepUntil != want.KeepUntil {
		t.Errorf("scope after second Begin = %+v", l.Scope)
	}
	if hot, cold := s.Len(); hot != 2 || cold != 3 {
		t.Errorf("Len = %d, %d; want 2 sessions hot, 1 scope and 2 index records (user, scope) cold", hot, cold)
	}
}

func TestTouchMonotonic(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	if err := s.Begin(ctx, newSession("s1", alice)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		touch                       authz.Touch
		activity, signIn, keepUntil int64
	}{
		{authz.Touch{LastActivity: t0 + 10}, t0 + 10, t0, t0 + 8*hourMs},
		{authz.Touch{LastActivity: t0 + 5, SignIn: t0 - 1, KeepUntil: t0}, t0 + 10, t0, t0 + 8*hourMs},
		{authz.Touch{}, t0 + 10, t0, t0 + 8*hourMs},
		{authz.Touch{LastActivity: t0 + 20, SignIn: t0 + 1, KeepUntil: t0 + 9*hourMs}, t0 + 20, t0 + 1, t0 + 9*hourMs},
	} {
		r, found, err := s.Touch(ctx, "crm", "s1", tc.touch)
		if err != nil || !found {
			t.Fatalf("Touch(%+v) = %v, %v", tc.touch, found, err)
		}
		if r.LastActivity != tc.activity || r.SignIn != tc.signIn || r.KeepUntil != tc.keepUntil {
			t.Errorf("Touch(%+v) = %+v", tc.touch, r)
		}
		if l := mustLoad(t, s, "s1", alice); l.Session != r {
			t.Errorf("Load after Touch = %+v, Touch returned %+v", l.Session, r)
		}
	}
	if _, found, err := s.Touch(ctx, "crm", "nope", authz.Touch{LastActivity: t0}); found || err != nil {
		t.Errorf("Touch of absent session = %v, %v", found, err)
	}
}

func TestEndOnce(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	if err := s.Begin(ctx, newSession("s1", alice)); err != nil {
		t.Fatal(err)
	}
	end := authz.End{Cause: authz.CauseSignedOut, At: t0 + 100, KeepUntil: t0 + 24*hourMs}
	r, ended, err := s.End(ctx, "crm", "s1", alice, end)
	if err != nil || !ended {
		t.Fatalf("End = %v, %v", ended, err)
	}
	if r.EndedAt != end.At || r.Cause != end.Cause || r.KeepUntil != end.KeepUntil || r.ID != "s1" {
		t.Errorf("ended record = %+v", r)
	}
	if hot, cold := s.Len(); hot != 0 || cold != 3 { // and the scope and the user's index record (the scope record indexes its one session)
		t.Errorf("Len = %d, %d; want the ended session moved to cold", hot, cold)
	}

	again := authz.End{Cause: authz.CauseIdle, At: t0 + 200, KeepUntil: t0 + hourMs}
	r2, ended, err := s.End(ctx, "crm", "s1", alice, again)
	if err != nil || ended || r2 != r {
		t.Errorf("second End = %+v, %v, %v; want %+v, false", r2, ended, err, r)
	}
	if r3, found, err := s.Touch(ctx, "crm", "s1", authz.Touch{LastActivity: t0 + 300}); err != nil || !found || r3 != r {
		t.Errorf("Touch after End = %+v, %v, %v; want the ended record unchanged", r3, found, err)
	}
	l := mustLoad(t, s, "s1", alice)
	if l.Session != r {
		t.Errorf("Load after End = %+v", l.Session)
	}
	if want := (authz.ScopeState{EndedAt: t0 + 200, Current: "s1", KeepUntil: t0 + 24*hourMs}); l.Scope != want {
		t.Errorf("scope = %+v, want %+v", l.Scope, want)
	}
}

func TestEndWithoutLiveSessionRecordsScope(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	for _, id := range []string{"", "nope"} {
		r, ended, err := s.End(ctx, "crm", id, bob, authz.End{Cause: authz.CauseSignedOut, At: t0 + 50, KeepUntil: t0 + hourMs})
		if err != nil || ended || r != (authz.Session{}) {
			t.Errorf("End(%q) = %+v, %v, %v", id, r, ended, err)
		}
	}
	l := mustLoad(t, s, "", bob)
	if want := (authz.ScopeState{EndedAt: t0 + 50, KeepUntil: t0 + hourMs}); !l.ScopeFound || l.Scope != want {
		t.Errorf("scope = %+v, %v; want %+v", l.Scope, l.ScopeFound, want)
	}
	if _, _, err := s.End(ctx, "crm", "", bob, authz.End{Cause: authz.CauseIdle}); err == nil {
		t.Error("End at time 0 accepted: it would record a live session as ended at 0")
	}
}

// TestTouchNeverRevives races touches of a session, hot or cold, with its
// End: once End has returned, no Touch may report it live again (S3).
func TestTouchNeverRevives(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	for round := range 50 {
		id := fmt.Sprintf("r%d", round)
		if err := s.Begin(ctx, newSession(id, alice)); err != nil {
			t.Fatal(err)
		}
		if round%2 == 1 { // start from a cold record, as after a quiet spell
			s.hot.Delete(sessionKey("crm", id))
			if err := putSession(s.cold, sessionKey("crm", id), newSession(id, alice), new([]byte)); err != nil {
				t.Fatal(err)
			}
		}
		var endReturned atomic.Bool
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 200 {
					after := endReturned.Load()
					r, found, err := s.Touch(ctx, "crm", id, authz.Touch{LastActivity: t0 + int64(g*1000+i)})
					if err != nil || !found {
						t.Errorf("Touch = %v, %v", found, err)
						return
					}
					if after && !r.Ended() {
						t.Errorf("round %d: Touch after End returned a live session", round)
						return
					}
				}
			})
		}
		wg.Go(func() {
			if _, ended, err := s.End(ctx, "crm", id, alice, authz.End{Cause: authz.CauseIdle, At: t0 + 1, KeepUntil: t0 + hourMs}); err != nil || !ended {
				t.Errorf("End = %v, %v", ended, err)
			}
			endReturned.Store(true)
		})
		wg.Wait()
		if l := mustLoad(t, s, id, alice); !l.Session.Ended() {
			t.Fatalf("round %d: session live after End: %+v", round, l.Session)
		}
	}
}

func TestKeepUntilExpiry(t *testing.T) {
	clock := newClock()
	s := newStore(t, Options{Clock: clock})
	r := newSession("s1", alice)
	r.KeepUntil = t0 + 1000
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	clock.Add(1000 * time.Millisecond)
	if l := mustLoad(t, s, "s1", alice); !l.SessionFound || !l.ScopeFound {
		t.Fatalf("records hidden at KeepUntil itself: %+v", l)
	}
	clock.Add(time.Millisecond)
	if l := mustLoad(t, s, "s1", alice); l.SessionFound || l.ScopeFound {
		t.Errorf("records visible after KeepUntil: %+v", l)
	}
	if _, found, err := s.Touch(ctx, "crm", "s1", authz.Touch{LastActivity: t0 + 2000, KeepUntil: t0 + hourMs}); found || err != nil {
		t.Errorf("Touch revived a forgotten session: %v, %v", found, err)
	}
	// The scope starts afresh: the forgotten Current is not carried over.
	if _, ended, err := s.End(ctx, "crm", "s1", alice, authz.End{Cause: authz.CauseIdle, At: t0 + 2000, KeepUntil: t0 + hourMs}); ended || err != nil {
		t.Errorf("End of a forgotten session = %v, %v", ended, err)
	}
	if l := mustLoad(t, s, "s1", alice); l.SessionFound || l.Scope != (authz.ScopeState{EndedAt: t0 + 2000, KeepUntil: t0 + hourMs}) {
		t.Errorf("after End: %+v", l)
	}
}

func TestCorruptRecord(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	garbage := []byte{1, 2, 3}
	s.hot.Set(sessionKey("crm", "bad"), garbage)
	_, badScope := keys("crm", "", bob)
	s.cold.Set(badScope, garbage)

	_, err := s.Load(ctx, "crm", "bad", alice)
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, authz.ErrCorruptRecord) {
			t.Errorf("%s: err = %v, want ErrCorruptRecord", op, err)
		}
	}
	check("Load session", err)
	_, err = s.Load(ctx, "crm", "", bob)
	check("Load scope", err)
	_, _, err = s.Touch(ctx, "crm", "bad", authz.Touch{LastActivity: t0})
	check("Touch", err)
	_, _, err = s.End(ctx, "crm", "bad", alice, authz.End{At: t0})
	check("End session", err)
	_, _, err = s.End(ctx, "crm", "", bob, authz.End{At: t0})
	check("End scope", err)
	check("Begin", s.Begin(ctx, newSession("s1", bob)))
}

func TestNewValidates(t *testing.T) {
	for _, opts := range []Options{
		{Shards: 3},
		{Shards: -2},
		{HotWindow: 500 * time.Millisecond},
		{ColdWindow: -time.Hour},
	} {
		if s, err := New(opts); err == nil {
			s.Close()
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

func TestClose(t *testing.T) {
	s := newStore(t, Options{})
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Ready(ctx); !errors.Is(err, authz.ErrStoreUnavailable) {
		t.Errorf("Ready after Close = %v", err)
	}
	if _, err := s.Load(ctx, "crm", "s1", alice); !errors.Is(err, authz.ErrStoreUnavailable) {
		t.Errorf("Load after Close = %v", err)
	}
}

// waitFor polls cond until it holds. bigcache ages entries on its own wall
// clock in whole seconds, which tests cannot advance, hence the bounded wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func inCache(t *testing.T, get func(string) ([]byte, error), k string) bool {
	t.Helper()
	b, err := get(k)
	return err == nil && b != nil
}

func TestHotExpiryDemotesToCold(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for bigcache's wall clock")
	}
	t.Parallel()
	clock := newClock()
	s := newStore(t, Options{Clock: clock, HotWindow: time.Second, ColdWindow: time.Hour})
	kept, dropped := newSession("kept", alice), newSession("dropped", bob)
	dropped.KeepUntil = t0 + 1000
	for _, r := range []*authz.Session{kept, dropped} {
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	touched, _, err := s.Touch(ctx, "crm", "kept", authz.Touch{LastActivity: t0 + 500})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Second) // past dropped's KeepUntil
	waitFor(t, "hot is empty", func() bool { hot, _ := s.Len(); return hot == 0 })

	if !inCache(t, s.cold.Get, sessionKey("crm", "kept")) || inCache(t, s.cold.Get, sessionKey("crm", "dropped")) {
		t.Error("demotion kept the wrong records")
	}
	if l := mustLoad(t, s, "kept", alice); !l.SessionFound || l.Session != touched {
		t.Errorf("after demotion Load = %+v, want %+v", l.Session, touched)
	}
	// A Touch of the cold record writes the new version to hot.
	again, _, err := s.Touch(ctx, "crm", "kept", authz.Touch{LastActivity: t0 + 600})
	if err != nil || !inCache(t, s.hot.Get, sessionKey("crm", "kept")) {
		t.Fatalf("Touch of a cold record: %v", err)
	}
	if l := mustLoad(t, s, "kept", alice); l.Session != again {
		t.Errorf("Load = %+v, want the hot version %+v", l.Session, again)
	}
}

func TestColdRecordsOutliveColdWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for bigcache's wall clock")
	}
	t.Parallel()
	clock := newClock()
	s := newStore(t, Options{Clock: clock, HotWindow: time.Second, ColdWindow: 2 * time.Second})
	// Written first, so the control below is at least as young.
	if _, _, err := s.End(ctx, "crm", "", alice, authz.End{Cause: authz.CauseSignedOut, At: t0, KeepUntil: t0 + 24*hourMs}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.End(ctx, "crm", "", bob, authz.End{Cause: authz.CauseSignedOut, At: t0, KeepUntil: t0 + 1000}); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Second) // bob's record is no longer needed
	_, bobKey := keys("crm", "", bob)
	waitFor(t, "the control record ages out of cold", func() bool { return !inCache(t, s.cold.Get, bobKey) })
	if l := mustLoad(t, s, "", alice); !l.ScopeFound || l.Scope.EndedAt != t0 {
		t.Errorf("scope end lost after ColdWindow: %+v", l)
	}
}
