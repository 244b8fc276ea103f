package redis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestHungRedis: a Redis that holds its connections open and answers
// nothing (SIGSTOP). An operation answers before the caller's deadline,
// without marking Redis down for it (the caller's hurry says nothing about
// Redis); one that runs out of the store's own timeout marks Redis down, so
// that the next fails at once, and readiness says why; Redis answering
// again clears it. MaxStale is long here so that the heartbeat does not
// notice first.
func TestHungRedis(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{MaxStale: 8 * time.Second, Timeout: DefaultTimeout})
	r := newSession("sid-hung")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	cs := s.Confirmed() // past the near cache
	srv.Pause()

	// The operation stops short of the caller's deadline, by a margin left
	// for the answer.
	c, cancel := context.WithTimeout(ctx, DefaultTimeout/2)
	callerDeadline, _ := c.Deadline()
	bc, bcancel := s.bound(c)
	if d, _ := bc.Deadline(); !d.Before(callerDeadline) {
		t.Errorf("an operation's deadline %v is not before the caller's %v", d, callerDeadline)
	}
	bcancel()
	_, err := cs.Load(c, r.Policy, r.ID, r.Scope)
	cancel()
	if !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "no answer before the request's deadline") {
		t.Fatalf("Load with a deadline shorter than the timeout: %v, want store unavailable, short of the deadline", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after a caller's deadline: %v, want ready (nothing is known of Redis yet)", err)
	}

	_, err = cs.Load(ctx, r.Policy, r.ID, r.Scope)
	if !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "did not answer within 250ms") {
		t.Fatalf("Load without a deadline: %v, want store unavailable after the 250ms timeout", err)
	}
	if err := s.Ready(ctx); err == nil || !strings.Contains(err.Error(), "did not answer within 250ms") {
		t.Fatalf("Ready after a timeout: %v, want not ready, saying Redis timed out", err)
	}
	// Marked down: the next operations fail without waiting for Redis.
	c, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = cs.Load(c, r.Policy, r.ID, r.Scope)
	if !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "Redis unreachable") {
		t.Fatalf("Load while marked down: %v, want an immediate store unavailable", err)
	}
	srv.Resume()
	waitReady(t, s)
	if lk := mustLoad(t, cs, ctx, r); !lk.SessionFound {
		t.Fatalf("after Resume: %+v", lk)
	}
}

// TestHungRedisHeartbeat: with the default MaxStale, the change channel's
// heartbeat notices a hung Redis within MaxStale/4 + Timeout, and marks it
// down before any request has had to wait for it.
func TestHungRedisHeartbeat(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{Timeout: DefaultTimeout})
	srv.Pause()
	waitFor(t, "not ready", func() bool { return s.Ready(ctx) != nil })
	if err := s.Ready(ctx); !strings.Contains(err.Error(), "has not answered the change channel's heartbeat") {
		t.Fatalf("Ready: %v, want the heartbeat's silence", err)
	}
	c, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := s.Confirmed().Load(c, "app", "", authz.Digest{}); !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "Redis unreachable") {
		t.Fatalf("Load: %v, want an immediate store unavailable", err)
	}
	srv.Resume()
	waitReady(t, s)
}
