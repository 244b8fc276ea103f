package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/sessiongate/sessiongate/authz"
)

// fallback is the store a fail-open policy decides on while Redis is
// unreachable: everything this replica knows (ends it has seen, records it
// cached, its own decisions since), and nothing it does not. Its ends are
// queued for Redis; its sessions stay local and are forgotten once Redis is
// back (their users' next requests open sessions in Redis).
type fallback struct{ s *Store }

var _ authz.Store = fallback{}

func (f fallback) Ready(context.Context) error { return nil }

// Load answers from what this replica knows. A live session's activity is
// taken to reach at least the outage's start: this replica's copy does not
// follow other replicas' activity (the engine confirms with Redis before an
// idle end, which it cannot do now), so a copy's last activity is no
// evidence that the session idled. The fallback ends a session for
// inactivity only once idle_timeout has passed since the later of the two.
func (f fallback) Load(_ context.Context, policy, id string, scope authz.Digest) (authz.Lookup, error) {
	now := f.s.now()
	var lk authz.Lookup
	if id != "" {
		if e, ok := f.s.near.lookupAll(f.s.sessionKey(policy, id), now); ok && !e.isScope {
			lk.Session, lk.SessionFound = e.session, true
			if !lk.Session.Ended() {
				lk.Session.Advance(authz.Touch{LastActivity: f.s.heardAt.Load()})
			}
		}
	}
	if scope == (authz.Digest{}) {
		return lk, nil
	}
	if e, ok := f.s.near.lookupAll(f.s.scopeKey(policy, scope), now); ok && e.isScope {
		lk.Scope, lk.ScopeFound = e.scope, true
	}
	return lk, nil
}

func (f fallback) Begin(_ context.Context, r *authz.Session) error {
	now := f.s.now()
	if err := f.s.near.putLocal(f.s.sessionKey(r.Policy, r.ID), entry{session: *r}, now); err != nil {
		return fmt.Errorf("%w: redis store fallback: %w", authz.ErrStoreUnavailable, err)
	}
	// merge keeps the scope's EndedAt and the larger KeepUntil.
	st := entry{scope: authz.ScopeState{Current: r.ID, KeepUntil: r.KeepUntil}, isScope: true}
	if err := f.s.near.putLocal(f.s.scopeKey(r.Policy, r.Scope), st, now); err != nil {
		return fmt.Errorf("%w: redis store fallback: %w", authz.ErrStoreUnavailable, err)
	}
	return nil
}

func (f fallback) Touch(_ context.Context, policy, id string, t authz.Touch) (authz.Session, bool, error) {
	r, ok, err := f.s.near.touchLocal(f.s.sessionKey(policy, id), t, f.s.now())
	if err != nil {
		return authz.Session{}, false, fmt.Errorf("%w: redis store fallback: %w", authz.ErrStoreUnavailable, err)
	}
	return r, ok, nil
}

// Claim refuses: a one-time claim made on one replica's copy would not be
// one-time across replicas, so what needs one waits for Redis (S9).
func (f fallback) Claim(context.Context, authz.Digest, int64) (bool, error) {
	return false, fmt.Errorf("%w: redis store fallback: claims need Redis", authz.ErrStoreUnavailable)
}

// End records the end locally, where the fallback and the ends tier keep
// it, and queues it for Redis. The queue is written before this replica
// reads Redis or trusts its near cache again, so no replica-local view and
// no later read can revive what ended here (S3).
func (f fallback) End(_ context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	if e.At <= 0 {
		return authz.Session{}, false, fmt.Errorf("redis store fallback: end at %d", e.At)
	}
	q := queuedEnd{policy: policy, id: id, scope: scope, e: e}
	if err := f.s.enqueue(q); err != nil {
		return authz.Session{}, false, err
	}
	r, ended, err := f.s.recordLocal(q)
	if err != nil {
		return authz.Session{}, false, fmt.Errorf("%w: redis store fallback: %w", authz.ErrStoreUnavailable, err)
	}
	return r, ended, nil
}

// recordLocal applies a queued end to what this replica knows, in the
// fallback's own tier (and the ends tier): the scope's end, and the
// session's when it is known here and live.
func (s *Store) recordLocal(q queuedEnd) (authz.Session, bool, error) {
	now := s.now()
	ck := s.scopeKey(q.policy, q.scope)
	st := entry{isScope: true}
	if old, ok := s.near.lookupAll(ck, now); ok && old.isScope {
		st.scope = old.scope
	}
	st.scope.Raise(q.e)
	if err := s.near.putLocal(ck, st, now); err != nil {
		return authz.Session{}, false, err
	}
	if q.id == "" {
		return authz.Session{}, false, nil
	}
	sk := s.sessionKey(q.policy, q.id)
	old, ok := s.near.lookupAll(sk, now)
	if !ok || old.isScope {
		// Unknown here (after a restart, the queue file's ends): the
		// scope's end refuses every token signed in before it, and the
		// session's cookie dies with its scope.
		return authz.Session{}, false, nil
	}
	if old.session.Ended() {
		return old.session, false, nil
	}
	r := old.session
	r.EndWith(q.e)
	if err := s.near.putLocal(sk, entry{session: r}, now); err != nil {
		return authz.Session{}, false, err
	}
	return r, true, nil
}

func (s *Store) enqueue(q queuedEnd) error {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	if len(s.queue) >= maxQueuedEnds {
		return fmt.Errorf("%w: redis store fallback: %d ends already wait for Redis", authz.ErrStoreUnavailable, len(s.queue))
	}
	if s.queueFile != nil {
		// Durable before it is answered: the replica may stop before
		// Redis returns.
		if err := s.queueFile.append(q); err != nil {
			return fmt.Errorf("%w: redis store fallback: %w", authz.ErrStoreUnavailable, err)
		}
	}
	s.queue = append(s.queue, q)
	s.queued.Add(1)
	return nil
}

// reconcile writes the fallback's queued ends to Redis, oldest first, and
// then forgets the fallback's local records. Until the queue is empty this
// replica neither reads Redis nor trusts its near cache (see trusted and
// Load), so the ends cannot be overtaken.
func (s *Store) reconcile(ctx context.Context) error {
	ctx = background(ctx)
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	for {
		s.queueMu.Lock()
		if len(s.queue) == 0 {
			s.queue = nil
			var err error
			if s.queueFile != nil {
				err = s.queueFile.clear() // every end in it is in Redis
			}
			s.queueMu.Unlock()
			if err != nil {
				s.log.Warn("redis store: queue file not emptied; its ends, already in Redis, will be written again", "err", err)
			}
			break
		}
		q := s.queue[0]
		s.queueMu.Unlock()
		_, _, err := s.End(ctx, q.policy, q.id, q.scope, q.e)
		if err != nil && !errors.Is(err, authz.ErrCorruptRecord) {
			return fmt.Errorf("writing the fallback's ends: %w", err)
		}
		s.queueMu.Lock()
		s.queue = s.queue[1:]
		s.queued.Add(-1)
		s.queueMu.Unlock()
	}
	if s.near.local.Len() > 0 {
		s.near.reset(s.near.local)
	}
	return nil
}
