package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
)

// Redis can lose data: restarted without persistence (or with appendfsync
// everysec, the last second), flushed, failed over to a replica that lacked
// the latest writes, or evicting under a maxmemory policy other than
// noeviction. What this replica knows of ends (the near cache's ends tier,
// kept for EndsTTL) is then a floor on what Redis says: a read that finds
// less is answered with what the replica knows, and the end is written to
// Redis again, so that no replica revives it (S3).
//
// A marker key, set once and never expiring, tells this replica that Redis
// lost data even where no read shows it: gone or changed, it is counted
// (DataLosses), logged, and every end the replica knows is written again.

// floor raises what a Load read from Redis to what this replica knows (sk
// or ck "": not read).
func (s *Store) floor(ctx context.Context, sk, ck string, lk *authz.Lookup, now int64) {
	if sk != "" {
		if known, ok := get(s.near.ends, sk, now); ok && !known.isScope && known.session.Ended() &&
			(!lk.SessionFound || !lk.Session.Ended()) {
			s.reassert(ctx, sk, known, lk.SessionFound)
			if lk.SessionFound {
				lk.Session = authz.MergeSessions(lk.Session, known.session)
			} else {
				lk.Session, lk.SessionFound = known.session, true
			}
		}
	}
	if ck == "" {
		return
	}
	if known, ok := get(s.near.ends, ck, now); ok && known.isScope && known.scope.EndedAt > lk.Scope.EndedAt {
		s.reassert(ctx, ck, known, lk.ScopeFound)
		lk.Scope, lk.ScopeFound = authz.MergeScopes(known.scope, lk.Scope), true
	}
}

// reassert writes an end this replica knows back to Redis, which lacks it
// (inRedis says whether Redis has the record at all). Best effort: the next
// read that finds it missing tries again.
func (s *Store) reassert(ctx context.Context, k string, e entry, inRedis bool) {
	s.reasserted.Add(1)
	var err error
	switch {
	case e.isScope:
		_, err = s.scopeChange(ctx, k, e.scope.EndedAt, e.scope.KeepUntil, "")
	case inRedis:
		err = s.runSession(ctx, endScript, k, e.session.EndedAt, int64(e.session.Cause), e.session.KeepUntil, s.channel).Err()
	default:
		var b []byte
		if b, err = e.session.AppendBinary(nil); err == nil {
			err = s.c.Do(ctx, "SET", k, b, "NX", "PXAT", e.session.KeepUntil).Err()
			if errors.Is(err, redis.Nil) {
				err = nil // written meanwhile; a later read merges it
			}
		}
	}
	what := "session"
	if e.isScope {
		what = "scope"
	}
	if err != nil {
		s.log.Warn("redis store: Redis lacks an end this replica knows (data lost?); writing it again failed", "record", what, "err", err)
		return
	}
	s.log.Warn("redis store: Redis lacked an end this replica knows (data lost?); written again", "record", what)
}

// Reasserted counts the ends this replica found missing in Redis and wrote
// again.
func (s *Store) Reasserted() int64 { return s.reasserted.Load() }

// DataLosses counts the times this replica found Redis' marker key gone or
// changed: Redis lost data.
func (s *Store) DataLosses() int64 { return s.dataLosses.Load() }

// checkMarker sets the marker key if Redis has none, and compares it with
// the one this replica saw before: gone or changed, Redis lost data.
func (s *Store) checkMarker(ctx context.Context) error {
	k := s.o.Prefix + ":marker"
	ctx, cancel := s.bound(background(ctx))
	defer cancel()
	cur, err := s.c.Get(ctx, k).Result()
	if errors.Is(err, redis.Nil) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		fresh := hex.EncodeToString(b[:])
		if err := s.c.SetArgs(ctx, k, fresh, redis.SetArgs{Mode: "NX"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if cur, err = s.c.Get(ctx, k).Result(); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	old := s.marker.Swap(&cur)
	if old != nil && *old != cur {
		s.dataLosses.Add(1)
		s.log.Error("redis store: Redis lost data (its marker key is new): writing every end this replica knows again; " +
			"check Redis' persistence (appendonly yes, appendfsync always) and maxmemory-policy noeviction")
		s.reassertAll(ctx)
	}
	return nil
}

// reassertAll writes every end this replica knows to Redis again.
func (s *Store) reassertAll(ctx context.Context) {
	now := s.now()
	ctx = background(context.WithoutCancel(ctx))
	for it := s.near.ends.Iterator(); it.SetNext(); {
		v, err := it.Value()
		if err != nil {
			continue
		}
		e, err := decode(v.Value())
		if err != nil || e.keepUntil() < now || !e.ended() {
			continue
		}
		c, cancel := s.bound(ctx)
		switch {
		case e.isScope:
			_, err = s.scopeChange(c, v.Key(), e.scope.EndedAt, e.scope.KeepUntil, "")
		default:
			if b, err2 := e.session.AppendBinary(nil); err2 == nil {
				// Missing: the ended record; present: the end script.
				err = s.c.Do(c, "SET", v.Key(), b, "NX", "PXAT", e.session.KeepUntil).Err()
				if errors.Is(err, redis.Nil) {
					err = s.runSession(c, endScript, v.Key(), e.session.EndedAt, int64(e.session.Cause), e.session.KeepUntil, s.channel).Err()
				}
			}
		}
		cancel()
		if err == nil {
			s.reasserted.Add(1)
		}
	}
}
