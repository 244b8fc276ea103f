package redis

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// crashStore stops s as kill -9 would, as far as the files go: no final
// reconcile, no flush; only the lock is released (a process's locks die
// with it).
func crashStore(s *Store) {
	s.cancel()
	s.wg.Wait()
	s.queueFile.close()
	s.c.Close()
	s.near.close()
}

// TestQueueFileSurvivesACrash: ends the fallback decided during an outage
// are in the queue file when they are answered. A replica that crashes
// before Redis returns reads them at its next start: its fallback refuses
// their sessions at once, it is not ready (nor reads Redis) until Redis has
// them, and then every replica refuses them.
func TestQueueFileSurvivesACrash(t *testing.T) {
	srv := redistest.Start(t)
	qf := filepath.Join(t.TempDir(), "queue")
	o := Options{FlushInterval: 20 * time.Millisecond, MaxStale: 200 * time.Millisecond, QueueFile: qf}
	s, err := Open(srv.URL(), o)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	var rs []*authz.Session
	for i := range 5 {
		r := newSession("qf" + string(rune('a'+i)))
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	srv.Stop()
	waitFor(t, "the outage seen", func() bool { return s.Ready(ctx) != nil })
	at := time.Now().UnixMilli()
	for _, r := range rs {
		if _, ended, err := s.Fallback().End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseIdentityMismatch, At: at, KeepUntil: r.KeepUntil}); err != nil || !ended {
			t.Fatalf("fallback End: %v %v", ended, err)
		}
	}
	crashStore(s)

	s, err = Open(srv.URL(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(ctx); err == nil {
		t.Error("ready with ends not yet in Redis")
	}
	for _, r := range rs {
		lk, err := s.Fallback().Load(ctx, "app", r.ID, r.Scope)
		if err != nil || lk.Scope.EndedAt != at {
			t.Errorf("after the restart, Redis still down, the fallback knows %+v %v: want the scope ended at %d", lk, err, at)
		}
	}
	srv.Restart()
	waitReady(t, s)
	other := open(t, srv.URL(), Options{})
	for _, r := range rs {
		if lk := mustLoad(t, other.Confirmed(), ctx, r); !lk.Session.Ended() || lk.Session.Cause != authz.CauseIdentityMismatch || lk.Scope.EndedAt != at {
			t.Errorf("in Redis once it is back: %+v, want ended at %d", lk, at)
		}
	}
	if fi, err := os.Stat(qf); err != nil || fi.Size() != int64(len(queueMagic)) {
		t.Errorf("queue file once its ends are in Redis: %v %v, want only its magic", fi, err)
	}
}

// TestQueueFileDamage: a crash tears at most the last end, which was never
// answered: the ends before it load. Anything else a crash cannot leave
// stops the start, with a message that says what is at stake.
func TestQueueFileDamage(t *testing.T) {
	dir := t.TempDir()
	ends := []queuedEnd{
		{policy: "app", id: "a", e: authz.End{Cause: authz.CauseSignedOut, At: 1, KeepUntil: 9}},
		{policy: "app", id: "", e: authz.End{Cause: authz.CauseIdle, At: 2, KeepUntil: 9}},
		{policy: "crm", id: "c", e: authz.End{Cause: authz.CauseIdentityMismatch, At: 3, KeepUntil: 9}},
	}
	file := []byte(queueMagic)
	var offsets []int
	for _, q := range ends {
		offsets = append(offsets, len(file))
		file = append(file, encodeQueued(q)...)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct {
		b    []byte
		want int // ends loaded; -1: refused
	}{
		"whole":               {file, 3},
		"torn last end":       {file[:len(file)-3], 2},
		"torn last header":    {file[:offsets[2]+5], 2},
		"zeros after the end": {append(append([]byte(nil), file[:offsets[2]]...), make([]byte, 40)...), 2},
		"empty":               {nil, -1},
		"half a magic":        {[]byte(queueMagic[:4]), -1},
		"damaged middle end":  {append(append(append([]byte(nil), file[:offsets[1]+10]...), 'X'), file[offsets[1]+11:]...), -1},
		"garbage":             {[]byte("hello, world, this is not a queue file"), -1},
	} {
		t.Run(name, func(t *testing.T) {
			p := write(strings.ReplaceAll(name, " ", "-"), tc.b)
			q, got, err := openQueueFile(p)
			if tc.want < 0 {
				if err == nil || !strings.Contains(err.Error(), "move it aside") {
					t.Fatalf("open: %v, want a refusal that says what to do", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer q.close()
			if len(got) != tc.want {
				t.Fatalf("loaded %d ends, want %d", len(got), tc.want)
			}
			for i := range got {
				if got[i] != ends[i] {
					t.Errorf("end %d: %+v, want %+v", i, got[i], ends[i])
				}
			}
			// Appends follow the last whole end.
			if err := q.append(ends[2]); err != nil {
				t.Fatal(err)
			}
			if again, _, err := readQueue(p); err != nil || len(again) != tc.want+1 {
				t.Errorf("after an append: %d ends, %v", len(again), err)
			}
		})
	}
}
