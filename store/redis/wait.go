package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
)

// DefaultWaitTimeout is Options.WaitTimeout's default (the store URL's
// wait_timeout), or half the operation timeout when that is shorter.
const DefaultWaitTimeout = 100 * time.Millisecond

// WAIT and WAITAOF count the writes of the connection they are sent on, so
// an end that waits runs its scripts and the wait on one pinned connection,
// which the context carries to scripter.
type pinnedKey struct{}

// scripter is the connection a script runs on: the pinned one of an end
// that waits, else the pool.
func (s *Store) scripter(ctx context.Context) redis.Scripter {
	if c, ok := ctx.Value(pinnedKey{}).(*redis.Conn); ok {
		return c
	}
	return s.c
}

// endAndWait is End with Options.WaitReplicas (S20): the end is
// acknowledged only once that many replicas have it (WAIT), or, with
// WaitAOF, once the primary and that many replicas have fsynced it to
// their append-only files (WAITAOF).
func (s *Store) endAndWait(ctx context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	conn := s.c.(*redis.Client).Conn() // New checked the type
	defer conn.Close()
	r, ended, err := s.end(context.WithValue(ctx, pinnedKey{}, conn), policy, id, scope, e)
	if err != nil {
		return r, ended, err
	}
	wctx, cancel := s.bound(ctx)
	defer cancel()
	n, ms := s.o.WaitReplicas, s.o.WaitTimeout.Milliseconds()
	var got int64
	if s.o.WaitAOF {
		v, err := conn.Do(wctx, "WAITAOF", 1, n, ms).Int64Slice()
		if err != nil {
			return authz.Session{}, false, s.unavailable(wctx, "wait", err)
		}
		if len(v) != 2 || v[0] < 1 {
			return authz.Session{}, false, fmt.Errorf("%w: redis store: the end is not in the primary's append-only file", authz.ErrStoreUnavailable)
		}
		got = v[1]
	} else if got, err = conn.Do(wctx, "WAIT", n, ms).Int64(); err != nil {
		return authz.Session{}, false, s.unavailable(wctx, "wait", err)
	}
	if got < int64(n) {
		// In effect on the primary, but not acknowledged: a failover now
		// could lose it.
		return authz.Session{}, false, fmt.Errorf("%w: redis store: the end reached %d of %d replicas within %v", authz.ErrStoreUnavailable, got, n, s.o.WaitTimeout)
	}
	return r, ended, nil
}
