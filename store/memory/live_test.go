package memory

import (
	"maps"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// putCold writes r straight into the cold tier, as a demotion would, so
// that the test does not wait for bigcache's wall clock.
func putCold(t *testing.T, s *Store, r *authz.Session) {
	t.Helper()
	var buf []byte
	if err := putSession(s.cold, sessionKey(r.Policy, r.ID), r, &buf); err != nil {
		t.Fatal(err)
	}
}

func TestEachLiveSession(t *testing.T) {
	clock := newClock()
	s := newStore(t, Options{Clock: clock})
	begin := func(id string) *authz.Session {
		r := newSession(id, authz.ScopeDigest("https://idp", id, ""))
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	begin("hot")
	ended := begin("ended")
	if _, ok, err := s.End(ctx, "crm", ended.ID, ended.Scope, authz.End{Cause: authz.CauseIdle, At: t0 + 1, KeepUntil: t0 + 8*hourMs}); !ok || err != nil {
		t.Fatalf("End: %v %v", ok, err)
	}
	expired := newSession("expired", alice)
	expired.KeepUntil = t0 + 500
	if err := s.Begin(ctx, expired); err != nil {
		t.Fatal(err)
	}
	// Demoted and never touched again: only in cold.
	cold := newSession("cold", bob)
	cold.Policy = "api"
	putCold(t, s, cold)
	// Demoted, then touched: a stale copy in cold, the current one in hot.
	both := newSession("both", bob)
	putCold(t, s, both)
	if err := s.Begin(ctx, both); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Touch(ctx, "crm", "both", authz.Touch{LastActivity: t0 + 700}); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Second) // past expired's KeepUntil

	got := map[string]authz.Session{}
	if err := s.EachLiveSession(func(r *authz.Session) {
		if _, dup := got[r.ID]; dup {
			t.Errorf("session %q visited twice", r.ID)
		}
		got[r.ID] = *r
	}); err != nil {
		t.Fatal(err)
	}
	if ids := slices.Sorted(maps.Keys(got)); !slices.Equal(ids, []string{"both", "cold", "hot"}) {
		t.Errorf("visited %q, want both, cold, hot", ids)
	}
	if got["both"].LastActivity != t0+700 {
		t.Errorf("both: visited LastActivity %d, want the hot copy's %d", got["both"].LastActivity, t0+700)
	}
	if got["cold"].Policy != "api" {
		t.Errorf("cold: policy %q, want api", got["cold"].Policy)
	}

	s.Close()
	if err := s.EachLiveSession(func(*authz.Session) {}); err == nil {
		t.Error("EachLiveSession on a closed store: no error")
	}
}

// BenchmarkEachLiveSession measures one scan of a million live sessions, as
// a metrics scrape does, and the garbage it leaves.
func BenchmarkEachLiveSession(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a million sessions")
	}
	const n = 1_000_000
	s := newStore(b, Options{Clock: newClock()})
	for i := range n {
		if err := s.Begin(ctx, benchSession(i)); err != nil {
			b.Fatal(err)
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	gcs := ms.NumGC
	b.ReportAllocs()
	for b.Loop() {
		count := 0
		if err := s.EachLiveSession(func(*authz.Session) { count++ }); err != nil || count != n {
			b.Fatal(count, err)
		}
	}
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.NumGC-gcs)/float64(b.N), "gc/op")
}
