package redis

import (
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestDataLossFloor: Redis loses its data (FLUSHALL here; a restart without
// persistence or a failover to a replica that lacked the writes alike). A
// replica that knew the ends answers reads with them anyway, writes them
// back, and, from its marker key, finds the loss and writes back every end
// it knows: a replica that never knew them refuses them too.
func TestDataLossFloor(t *testing.T) {
	srv := redistest.Start(t)
	o := Options{FlushInterval: 20 * time.Millisecond}
	a := open(t, srv.URL(), o)
	var ended []*authz.Session
	for i := range 10 {
		r := newSession("loss" + string(rune('a'+i)))
		if err := a.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		e := authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: r.KeepUntil}
		if _, _, err := a.End(ctx, "app", r.ID, r.Scope, e); err != nil {
			t.Fatal(err)
		}
		ended = append(ended, r)
	}
	if err := srv.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// A read past the near cache finds nothing in Redis; the replica's
	// knowledge is the floor.
	if lk := mustLoad(t, a.Confirmed(), ctx, ended[0]); !lk.Session.Ended() || lk.Scope.EndedAt == 0 {
		t.Errorf("after FLUSHALL, a confirmed read on the replica that knew the end: %+v", lk)
	}
	waitFor(t, "the loss found", func() bool { return a.DataLosses() == 1 })
	// Then every known end is written back (a session and a scope per end)
	// before another replica looks.
	waitFor(t, "the ends written back", func() bool {
		for _, r := range ended {
			if n, err := srv.Client().Exists(ctx, a.sessionKey("app", r.ID), a.scopeKey("app", r.Scope)).Result(); err != nil || n != 2 {
				return false
			}
		}
		return true
	})
	b := open(t, srv.URL(), o) // knows nothing of these ends
	for _, r := range ended {
		if lk := mustLoad(t, b.Confirmed(), ctx, r); !lk.Session.Ended() || lk.Session.Cause != authz.CauseSignedOut || lk.Scope.EndedAt == 0 {
			t.Errorf("after FLUSHALL, on a replica that never knew the end: %+v", lk)
		}
	}
	if a.Reasserted() < int64(2*len(ended)) {
		t.Errorf("ends written again: %d, want at least %d (sessions and scopes)", a.Reasserted(), 2*len(ended))
	}
}
