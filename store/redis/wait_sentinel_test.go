package redis

import (
	"strconv"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

const burst = 50

// beginAll begins n live sessions on s and waits until the replica has
// them, so that what a failover can lose is the ends alone.
func beginAll(t *testing.T, s *Store, g *redistest.Sentinel, n int) []*authz.Session {
	t.Helper()
	var out []*authz.Session
	for i := range n {
		r := newSession("burst-" + strconv.Itoa(i))
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	rc := g.Replicas[0].Client()
	waitFor(t, "the replica holds the sessions", func() bool {
		n, err := rc.Exists(ctx, s.sessionKey("app", out[len(out)-1].ID)).Result()
		return err == nil && n == 1
	})
	return out
}

// endAll signs every session out; it returns those whose end was
// acknowledged (End returned no error).
func endAll(s *Store, rs []*authz.Session) []*authz.Session {
	var acked []*authz.Session
	for _, r := range rs {
		if _, _, err := s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: r.KeepUntil}); err == nil {
			acked = append(acked, r)
		}
	}
	return acked
}

// failover closes the stores that saw the ends (a replica remembers the
// ends it saw and writes them back to a Redis that lost them; a restart of
// sessiongate during the failover forgets them, which is what is left to
// prove), kills the master at once, waits for the promotion and returns a
// fresh store on the new master.
func failover(t *testing.T, g *redistest.Sentinel, seen ...*Store) *Store {
	t.Helper()
	for _, s := range seen {
		s.Close()
	}
	old := g.Master.Addr()
	g.Master.Kill()
	if promoted := g.WaitFailover(t, old, time.Minute); promoted != g.Replicas[0].Addr() {
		t.Fatalf("promoted %s, want the replica", promoted)
	}
	return open(t, g.URL(), Options{FlushInterval: 10 * time.Millisecond})
}

// revived counts the acknowledged ends that the promoted master does not
// have: sessions live again.
func revived(t *testing.T, s *Store, acked []*authz.Session) int {
	t.Helper()
	n := 0
	for _, r := range acked {
		if lk := mustLoad(t, s.Confirmed(), ctx, r); lk.SessionFound && !lk.Session.Ended() {
			n++
		}
	}
	return n
}

// TestS20AcknowledgedEndsSurviveFailover: with wait_replicas=1, a burst of
// sign-outs, each acknowledged, then the master killed at once (SIGKILL,
// no time to replicate anything more) while sessiongate restarts: after the
// promotion of its replica every acknowledged end is there.
func TestS20AcknowledgedEndsSurviveFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a Sentinel failover")
	}
	g := redistest.StartSentinel(t, 1, 2)
	s := open(t, g.URL()+"?wait_replicas=1&timeout=5s&wait_timeout=2s", Options{FlushInterval: 10 * time.Millisecond})
	acked := endAll(s, beginAll(t, s, g, burst))
	if len(acked) != burst {
		t.Fatalf("%d of %d ends acknowledged with a healthy replica", len(acked), burst)
	}
	after := failover(t, g, s)
	if n := revived(t, after, acked); n != 0 {
		t.Fatalf("%d acknowledged ends lost in the failover", n)
	}
}

// TestS20WithoutWaitEndsCanBeLost documents what the option is for. The
// replica is cut off from the master (it cannot authenticate to resync);
// without wait_replicas every sign-out is acknowledged all the same, and
// after a failover during which sessiongate restarted (no replica of it
// remembers them to write them back) they are gone: the sessions are live
// again. With wait_replicas, none of them is acknowledged.
func TestS20WithoutWaitEndsCanBeLost(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a Sentinel failover")
	}
	g := redistest.StartSentinel(t, 1, 2)
	plain := open(t, g.URL()+"?timeout=2s", Options{FlushInterval: 10 * time.Millisecond})
	waiting := open(t, g.URL()+"?wait_replicas=1&timeout=2s&wait_timeout=100ms", Options{FlushInterval: 10 * time.Millisecond})
	// A few for the waiting store: each waits out wait_timeout, and a
	// replica cut off for long (10 × down-after) is not promoted.
	rs := beginAll(t, plain, g, burst+3)
	rc, mc := g.Replicas[0].Client(), g.Master.Client()
	if err := rc.ConfigSet(ctx, "masterauth", "not-the-password").Err(); err != nil {
		t.Fatal(err)
	}
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replica is cut off", func() bool {
		n, err := mc.Info(ctx, "replication").Result()
		return err == nil && !containsLine(n, "slave0:")
	})
	if acked := endAll(waiting, rs[burst:]); len(acked) != 0 {
		t.Errorf("wait_replicas acknowledged %d ends no replica has", len(acked))
	}
	acked := endAll(plain, rs[:burst])
	if len(acked) != burst {
		t.Fatalf("%d of %d ends acknowledged without waiting", len(acked), burst)
	}
	if err := rc.ConfigSet(ctx, "masterauth", "").Err(); err != nil {
		t.Fatal(err)
	}
	after := failover(t, g, plain, waiting)
	n := revived(t, after, acked)
	t.Logf("without wait_replicas, %d of %d acknowledged ends were lost in the failover", n, len(acked))
	if n == 0 {
		t.Error("no acknowledged end was lost although the replica never had them: the test no longer shows the loss")
	}
}

func containsLine(s, prefix string) bool {
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] != '\n' {
			j++
		}
		if len(s[i:j]) >= len(prefix) && s[i:i+len(prefix)] == prefix {
			return true
		}
		i = j + 1
	}
	return false
}
