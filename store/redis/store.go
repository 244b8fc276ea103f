// Package redis owns the shared session store: sessions and S3 scope
// ends kept in Redis or Valkey (standalone, Sentinel or Cluster) so that
// every replica sees the same sessions, with a near cache in each replica
// that answers most reads and coalesces activity writes. It implements
// authz.Store and authz.FallbackStore.
//
// Consistency, in short (docs/scale-out.md has the long form):
//   - Redis is the record. Every read-modify-write is one Lua script on one
//     key; nothing an ended session's record says can be undone (S3).
//   - Ends and scope changes are published on a channel by the script that
//     writes them; every replica applies them to its near cache. The near
//     cache answers reads only while this replica's subscription is known
//     to be current: a heartbeat on the subscription connection must have
//     been answered within MaxStale. Otherwise reads go to Redis.
//   - Activity (Touch) is applied to the near cache at once and written to
//     Redis every FlushInterval in one pipeline. Other replicas' caches do
//     not follow activity; the engine re-reads Redis (Confirmed)
//     before it ends a session for a timeout.
//   - While Redis is unreachable, Fallback decides on the near cache; ends
//     recorded there are queued and written before this replica trusts its
//     near cache or reads Redis again.
package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
)

// Options configures New; zero fields take the defaults shown.
type Options struct {
	// Prefix starts every key and the change channel ("sessiongate"), so
	// that deployments sharing a Redis do not share sessions.
	Prefix string
	// FlushInterval is how often coalesced activity is written to Redis
	// (1s). A replica that crashes loses at most this much activity, and
	// a session may time out up to this much (plus the policy's activity
	// granularity) early, never late.
	FlushInterval time.Duration
	// Timeout bounds one store operation (DefaultTimeout): a Redis that
	// does not answer within it is marked down, so that the requests after
	// it fail at once (503, or the fallback) instead of each waiting. Keep
	// it below Envoy's ext_authz timeout. A request's own deadline bounds
	// operations too, less a margin in which the answer still gets out.
	Timeout time.Duration
	// MaxStale bounds how far the near cache may lag Redis' ends (1s): if
	// the subscription's heartbeat (sent every MaxStale/4) has not been
	// answered for this long, reads go to Redis.
	MaxStale time.Duration
	// NearCacheTTL is how long a record stays in the near cache after it
	// was last written there (1m). Whole seconds.
	NearCacheTTL time.Duration
	// EndsTTL is how long the near cache remembers an end for the fallback
	// (24h): set it above the longest absolute_timeout. Whole seconds.
	EndsTTL time.Duration
	// QueueFile, when set, is a local file that keeps the ends the fallback
	// decides during an outage until Redis has them (see queueFile): each is
	// fsynced before it is answered, and a replica that stops or crashes
	// before Redis returns writes them at its next start, before it trusts
	// anything again. Without it they live in memory only, and are lost
	// with the process (their sessions live again in Redis).
	QueueFile string
	// WaitReplicas, when set, makes End return only once that many
	// replicas have its writes (WAIT; WAITAOF with WaitAOF: the primary's
	// and the replicas' append-only files have them fsynced), so that an
	// acknowledged end survives a failover (S20). An end that does not get
	// there within WaitTimeout (DefaultWaitTimeout) fails: it took effect on
	// the primary, but is not acknowledged (the sign-out answers
	// store_unavailable and may be repeated). Standalone and Sentinel only.
	WaitReplicas int
	WaitTimeout  time.Duration
	WaitAOF      bool
	// Clock decides whether a cached record's KeepUntil has passed.
	Clock authz.Clock
	// Logger receives state changes (Redis lost, Redis back); never a
	// session id or a token.
	Logger *slog.Logger
}

// Store is the Redis-backed authz.Store with a near cache.
type Store struct {
	c       redis.UniversalClient
	o       Options
	channel string
	near    *nearCache
	log     *slog.Logger

	// epoch anchors mono: trust is measured on the monotonic clock, so that
	// a step of the wall clock (NTP) can neither extend nor cut it.
	epoch time.Time
	// trustedSince is the send time (mono) of the newest answered
	// heartbeat while the near cache may answer reads; 0 when it may not.
	trustedSince atomic.Int64
	lastErr      atomic.Pointer[string] // why the store is not ready
	// heardAt is when Redis last answered the subscription (Unix ms): the
	// start of an outage, for the fallback's idle decisions.
	heardAt atomic.Int64
	// What Redis lost (floor.go): its marker key as last seen, the times it
	// was gone or changed, and the ends written to Redis again.
	marker     atomic.Pointer[string]
	dataLosses atomic.Int64
	reasserted atomic.Int64
	// down is set by a failed command and cleared when the subscription
	// hears from Redis again: meanwhile commands fail at once instead of
	// each waiting out dial timeouts that Envoy's check timeout would not.
	down atomic.Bool

	pendingMu sync.Mutex
	pending   map[string]authz.Touch // coalesced activity, by session key

	queueMu     sync.Mutex
	queue       []queuedEnd // ends decided by the fallback, oldest first
	queueFile   *queueFile  // nil without Options.QueueFile
	queued      atomic.Int64
	reconcileMu sync.Mutex // one reconcile at a time

	closeOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var (
	_ authz.Store         = (*Store)(nil)
	_ authz.FallbackStore = (*Store)(nil)
)

type queuedEnd struct {
	policy, id string
	scope      authz.Digest
	e          authz.End
}

// maxQueuedEnds bounds the ends kept for Redis during an outage (about 200
// bytes each). Past it the fallback refuses to end more sessions, which
// denies those requests (S9) rather than forget an end (S3).
const maxQueuedEnds = 1 << 20

// New returns a store on c and starts its subscriber and flusher; Close
// stops them and closes c.
func New(c redis.UniversalClient, o Options) (*Store, error) {
	if o.Prefix == "" {
		o.Prefix = "sessiongate"
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = time.Second
	}
	if o.MaxStale == 0 {
		o.MaxStale = time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.NearCacheTTL == 0 {
		o.NearCacheTTL = time.Minute
	}
	if o.EndsTTL == 0 {
		o.EndsTTL = 24 * time.Hour
	}
	if o.Clock == nil {
		o.Clock = authz.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FlushInterval < 0 || o.MaxStale < 4*time.Millisecond || o.Timeout < 0 {
		return nil, fmt.Errorf("redis store: flush interval %v must be positive and max stale %v at least 4ms", o.FlushInterval, o.MaxStale)
	}
	if o.WaitReplicas > 0 {
		if o.WaitTimeout == 0 {
			o.WaitTimeout = min(DefaultWaitTimeout, o.Timeout/2)
		}
		if _, ok := c.(*redis.Client); !ok {
			return nil, errors.New("redis store: waiting for replicas needs a standalone or Sentinel client")
		}
		if o.WaitTimeout >= o.Timeout {
			return nil, fmt.Errorf("redis store: wait_timeout %v must be below the operation timeout %v", o.WaitTimeout, o.Timeout)
		}
	}
	if o.NearCacheTTL < time.Second || o.EndsTTL < time.Second {
		return nil, fmt.Errorf("redis store: near cache TTL %v and ends TTL %v must be at least 1s", o.NearCacheTTL, o.EndsTTL)
	}
	near, err := newNearCache(o.NearCacheTTL, o.EndsTTL)
	if err != nil {
		return nil, fmt.Errorf("redis store: near cache: %w", err)
	}
	s := &Store{c: c, o: o, channel: o.Prefix + ":changes", near: near, log: o.Logger, pending: map[string]authz.Touch{}, epoch: time.Now()}
	if o.QueueFile != "" {
		qf, ends, err := openQueueFile(o.QueueFile)
		if err != nil {
			near.close()
			return nil, err
		}
		s.queueFile = qf
		// Decided before the last stop, never written to Redis: queued
		// again, and known to the fallback, before anything is served.
		for _, q := range ends {
			s.queue = append(s.queue, q)
			s.queued.Add(1)
			if _, _, err := s.recordLocal(q); err != nil {
				qf.close()
				near.close()
				return nil, fmt.Errorf("redis store: queue file: %w", err)
			}
		}
		if len(ends) > 0 {
			s.log.Warn("redis store: ends decided during an outage, not yet in Redis, read from the queue file; they are written before anything else", "ends", len(ends))
		}
	}
	s.setErr("connecting")
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.subscribeLoop(ctx) }()
	go func() { defer s.wg.Done(); s.flushLoop(ctx) }()
	return s, nil
}

// Open parses a store URL (see ParseURL) and returns a store on it. Options
// given in the URL override those in o.
func Open(rawURL string, o Options) (*Store, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := cfg.NewClient()
	if err != nil {
		return nil, err
	}
	o.Prefix = cfg.Prefix
	if cfg.FlushInterval != 0 {
		o.FlushInterval = cfg.FlushInterval
	}
	if cfg.MaxStale != 0 {
		o.MaxStale = cfg.MaxStale
	}
	if cfg.Timeout != 0 {
		o.Timeout = cfg.Timeout
	}
	if cfg.WaitReplicas != 0 {
		o.WaitReplicas, o.WaitTimeout, o.WaitAOF = cfg.WaitReplicas, cfg.WaitTimeout, cfg.WaitAOF
	}
	s, err := New(c, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the background work, writes the ends the fallback queued and
// the activity not yet flushed (bounded by a few seconds), and closes the
// client.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if s.queued.Load() > 0 {
			// Ends the fallback acknowledged live only in this process: a
			// last try, even if Redis came back after the subscriber last
			// looked (down is only a hint that spares waits), or they are
			// lost and their sessions live again in Redis (S3).
			s.down.Store(false)
			if err := s.reconcile(ctx); err != nil {
				if s.queueFile != nil {
					s.log.Warn("redis store: ends recorded during the outage are not in Redis yet; the queue file keeps them for the next start", "ends", s.queued.Load(), "err", err)
				} else {
					s.log.Error("redis store: ends recorded during the outage were not written to Redis and are lost (no queue file)", "ends", s.queued.Load(), "err", err)
				}
			}
		}
		// A last try for the activity still pending, as for the ends above:
		// a background flush cut short by the cancel (or a passing failure)
		// may have set down, which only spares waits while the store runs.
		s.down.Store(false)
		s.flush(ctx)
		err = errors.Join(s.c.Close(), s.near.close())
		if s.queueFile != nil {
			err = errors.Join(err, s.queueFile.close())
		}
	})
	return err
}

// Ready implements authz.Store: the subscription is current, Redis has not
// timed out since it last answered, and no end recorded during an outage is
// still waiting for Redis.
func (s *Store) Ready(context.Context) error {
	if s.trusted() && !s.down.Load() {
		return nil
	}
	return fmt.Errorf("%w: redis store: %s", authz.ErrStoreUnavailable, *s.lastErr.Load())
}

// StateFileErr reports why the queue file (Options.QueueFile) cannot be
// written now: nil while it can, and without one.
func (s *Store) StateFileErr() error {
	if s.queueFile == nil {
		return nil
	}
	return s.queueFile.err()
}

// Fallback implements authz.FallbackStore.
func (s *Store) Fallback() authz.Store { return fallback{s} }

func (s *Store) setErr(msg string) { s.lastErr.Store(&msg) }

// trusted reports whether the near cache may answer reads.
func (s *Store) trusted() bool {
	since := s.trustedSince.Load()
	return since != 0 && time.Duration(s.mono()-since) <= s.o.MaxStale && s.queued.Load() == 0
}

// mono is the monotonic time since the store was made, in ns, never 0.
func (s *Store) mono() int64 { return int64(time.Since(s.epoch)) + 1 }

func (s *Store) now() int64 { return s.o.Clock.Now().UnixMilli() }

// Keys: policy names are file stems and hold no "/"; ids are base64url and
// digests hex, so no two records share a key. No hash tags: every script
// touches one key, so Cluster mode spreads records over all slots.
func (s *Store) sessionKey(policy, id string) string {
	return s.o.Prefix + ":s:" + policy + "/" + id
}

func (s *Store) scopeKey(policy string, d authz.Digest) string {
	return s.o.Prefix + ":c:" + policy + "/" + hex.EncodeToString(d[:])
}

// loadKeys returns sessionKey(policy, id) and scopeKey(policy, scope), each
// "" where a Load skips it (an empty id, the zero scope), in one allocation
// (three for the two alone). Out of line: its buffer would otherwise sit in
// load's frame under every read.
//
//go:noinline
func (s *Store) loadKeys(policy, id string, scope authz.Digest) (sk, ck string) {
	var a [192]byte
	b := a[:0]
	if id != "" {
		b = append(append(append(append(b, s.o.Prefix...), ":s:"...), policy...), '/')
		b = append(b, id...)
	}
	n := len(b)
	if scope != (authz.Digest{}) {
		b = append(append(append(append(b, s.o.Prefix...), ":c:"...), policy...), '/')
		b = hex.AppendEncode(b, scope[:])
	}
	k := string(b)
	return k[:n], k[n:]
}

// DefaultTimeout is Options.Timeout's default (the store URL's timeout):
// well below the 2 s ext_authz timeout of the shipped Envoy
// configurations, so that a hung Redis costs one request 250 ms and a 503
// (or a fallback decision), not a timeout at Envoy.
const DefaultTimeout = 250 * time.Millisecond

var (
	// errTimedOut is the cause of an operation's own deadline (Timeout).
	errTimedOut = errors.New("Redis did not answer within the timeout")
	// errCallerDeadline is the cause of the deadline set just before the
	// caller's, so that the answer reaches it in time.
	errCallerDeadline = errors.New("the request's deadline is near")
)

// bound bounds one store operation by Timeout, and by the caller's deadline
// less a margin (a tenth of what is left, 2–50 ms) in which the engine still
// answers: store_unavailable, or a decision on the fallback. Work no request
// waits for (background) gets at least a second: a Redis that just came
// back may need a dial and a script load first.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	budget := s.o.Timeout
	if ctx.Value(backgroundKey{}) != nil {
		budget = max(budget, time.Second)
	}
	d, cause := time.Now().Add(budget), errTimedOut
	if cd, ok := ctx.Deadline(); ok {
		margin := min(max(time.Until(cd)/10, 2*time.Millisecond), 50*time.Millisecond)
		if m := cd.Add(-margin); m.Before(d) {
			d, cause = m, errCallerDeadline
		}
	}
	ctx, cancel := context.WithDeadlineCause(ctx, d, cause)
	return context.WithValue(ctx, boundKey{}, cause), cancel
}

type (
	boundKey      struct{} // the cause bound gave the deadline
	backgroundKey struct{} // marks work no request waits for
)

// background marks ctx as work no request waits for (see bound).
func background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// unavailable wraps a failure to reach Redis, and marks Redis down, unless
// the caller gave up or is about to (Envoy's timeout, a cancelled request):
// that says nothing about Redis, and must not fail everyone else's
// requests. An operation that ran out of its own Timeout does mark it down:
// a hung Redis (stopped, overloaded, a frozen host) holds connections open
// and answers nothing, and each request would otherwise wait it out.
func (s *Store) unavailable(ctx context.Context, op string, err error) error {
	cause := error(nil)
	if ctx.Err() != nil {
		cause = context.Cause(ctx)
	}
	if cause != errTimedOut && cause != errCallerDeadline {
		// Past the deadline bound set, whose timer has not run yet, or
		// ran after the caller's own (a busy machine): the cause bound
		// chose for it.
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			cause, _ = ctx.Value(boundKey{}).(error)
		}
	}
	switch {
	case cause == errTimedOut:
		msg := fmt.Sprintf("redis store: %s: Redis did not answer within %v (the store URL's timeout)", op, s.o.Timeout)
		s.setErr(msg)
		s.down.Store(true)
		return fmt.Errorf("%w: %s", authz.ErrStoreUnavailable, msg)
	case cause == errCallerDeadline:
		return fmt.Errorf("%w: redis store: %s: no answer before the request's deadline", authz.ErrStoreUnavailable, op)
	}
	wrapped := fmt.Errorf("%w: redis store: %s: %w", authz.ErrStoreUnavailable, op, err)
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		s.setErr(wrapped.Error())
		s.down.Store(true)
	}
	return wrapped
}

// isDown fails a command at once while Redis is known to be down.
func (s *Store) isDown(op string) error {
	if s.down.Load() {
		return fmt.Errorf("%w: redis store: %s: Redis unreachable (%s)", authz.ErrStoreUnavailable, op, *s.lastErr.Load())
	}
	return nil
}

// scriptError maps a script's failure: a corrupt record is not an outage
// (fail-open must not apply to it, S9); anything else is.
func (s *Store) scriptError(ctx context.Context, op string, err error) error {
	if isCorrupt(err) {
		return fmt.Errorf("redis store: %s: %w", op, authz.ErrCorruptRecord)
	}
	return s.unavailable(ctx, op, err)
}

// isCorrupt and isOldFormat read a script's error reply ("ERR " errPrefix
// what).
func isCorrupt(err error) bool   { return scriptSaid(err, errCorrupt) }
func isOldFormat(err error) bool { return scriptSaid(err, errOldFormat) }

func scriptSaid(err error, what string) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasSuffix(re.Error(), errPrefix+what)
}

// upgrade rewrites the session record under k in the current format, when
// a script refused an older one: decoded and re-encoded by authz, in a
// transaction that fails if anything changed the record meanwhile.
func (s *Store) upgrade(ctx context.Context, k string) error {
	for range 3 {
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			b, err := tx.Get(ctx, k).Bytes()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			if err != nil {
				return err
			}
			var r authz.Session
			if err := r.UnmarshalBinary(b); err != nil {
				return fmt.Errorf("redis store: upgrade: %w", err)
			}
			nb, err := r.AppendBinary(nil)
			if err != nil {
				return fmt.Errorf("redis store: upgrade: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Do(ctx, "SET", k, nb, "PXAT", r.KeepUntil)
				return nil
			})
			return err
		}, k)
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil && !errors.Is(err, authz.ErrCorruptRecord) {
				return s.unavailable(ctx, "upgrade", err)
			}
			return err
		}
	}
	return s.unavailable(ctx, "upgrade", redis.TxFailedErr)
}

// runSession runs a session script on k, upgrading a record of an older
// format first when the script asks for it.
func (s *Store) runSession(ctx context.Context, script *redis.Script, k string, args ...any) *redis.Cmd {
	cmd := script.Run(ctx, s.scripter(ctx), []string{k}, args...)
	if err := cmd.Err(); err != nil && isOldFormat(err) {
		if uerr := s.upgrade(ctx, k); uerr != nil {
			return cmd
		}
		cmd = script.Run(ctx, s.scripter(ctx), []string{k}, args...)
	}
	return cmd
}

// Load implements authz.Store: from the near cache when it is trusted and
// holds every record asked (a Load of a session alone, with the zero scope,
// needs only the session's), else with one pipelined round trip to Redis.
//
// Its results are named and filled in place, down to the near cache's
// decoding, and the round trip is a function of its own: the lookup is a
// few hundred bytes, and a copy of it in each frame of the path deepens
// every check's stack (authz.Engine.Check says why that costs).
func (s *Store) Load(ctx context.Context, policy, id string, scope authz.Digest) (lk authz.Lookup, err error) {
	err = s.load(ctx, policy, id, scope, false, &lk)
	return
}

// Confirmed implements authz.FallbackStore: the store whose Loads read
// Redis itself, never the near cache.
func (s *Store) Confirmed() authz.Store { return confirmed{s} }

type confirmed struct{ *Store }

func (c confirmed) Load(ctx context.Context, policy, id string, scope authz.Digest) (lk authz.Lookup, err error) {
	err = c.load(ctx, policy, id, scope, true, &lk)
	return
}

// load sets *lk (the zero Lookup on error).
func (s *Store) load(ctx context.Context, policy, id string, scope authz.Digest, confirm bool, lk *authz.Lookup) error {
	sk, ck := s.loadKeys(policy, id, scope)
	now := s.now()
	if !confirm && s.trusted() && s.cached(sk, ck, now, lk) {
		return nil
	}
	return s.fetchInto(ctx, sk, ck, now, lk)
}

// fetchInto sets *lk to fetch's Lookup. (Out of line: the copy stays off
// the stack of a Load that the near cache answers.)
//
//go:noinline
func (s *Store) fetchInto(ctx context.Context, sk, ck string, now int64, lk *authz.Lookup) (err error) {
	*lk, err = s.fetch(ctx, sk, ck, now)
	return err
}

// fetch reads session key sk and scope key ck (each skipped when "") from
// Redis in one pipelined round trip.
func (s *Store) fetch(ctx context.Context, sk, ck string, now int64) (authz.Lookup, error) {
	if s.queued.Load() != 0 {
		return authz.Lookup{}, fmt.Errorf("%w: redis store: ends recorded during the outage are not written yet", authz.ErrStoreUnavailable)
	}
	if err := s.isDown("load"); err != nil {
		return authz.Lookup{}, err
	}
	if sk == "" && ck == "" {
		return authz.Lookup{}, nil // nothing asked
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var sgen uint64
	if sk != "" {
		sgen = s.near.gen(sk)
	}
	var cgen uint64
	if ck != "" {
		cgen = s.near.gen(ck)
	}
	var sc, cc *redis.StringCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if sk != "" {
			sc = p.Get(ctx, sk)
		}
		if ck != "" {
			cc = p.Get(ctx, ck)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return authz.Lookup{}, s.unavailable(ctx, "load", err)
	}
	var lk authz.Lookup
	if sc != nil {
		e, found, err := s.decodeReply(ctx, sc, false)
		if err != nil {
			return authz.Lookup{}, err
		}
		if found {
			s.overlayPending(sk, &e.session)
			s.near.fill(sgen, sk, e, now)
			lk.Session, lk.SessionFound = e.session, true
		}
	}
	if cc != nil {
		e, found, err := s.decodeReply(ctx, cc, true)
		if err != nil {
			return authz.Lookup{}, err
		}
		if found {
			s.near.fill(cgen, ck, e, now)
			lk.Scope, lk.ScopeFound = e.scope, true
		}
	}
	s.floor(ctx, sk, ck, &lk, now)
	return lk, nil
}

// decodeReply decodes a GET of a scope or a session record. Errors never
// name the key: a session key holds the session id, the cookie's value.
func (s *Store) decodeReply(ctx context.Context, cmd *redis.StringCmd, scope bool) (entry, bool, error) {
	b, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return entry{}, false, nil
	}
	if err != nil {
		return entry{}, false, s.unavailable(ctx, "load", err)
	}
	e, err := decode(b)
	if err == nil && e.isScope != scope {
		err = authz.ErrCorruptRecord
	}
	if err != nil {
		what := "session"
		if scope {
			what = "scope"
		}
		return entry{}, false, fmt.Errorf("redis store: load: %s record: %w", what, err)
	}
	return e, true, nil
}

// cached answers a Load from the live tier when it holds everything asked.
func (s *Store) cached(sk, ck string, now int64, lk *authz.Lookup) bool {
	*lk = authz.Lookup{}
	if sk != "" {
		if !s.near.lookupSession(sk, now, &lk.Session) {
			return false
		}
		lk.SessionFound = true
	}
	if ck == "" {
		return true
	}
	if !s.near.lookupScope(ck, now, &lk.Scope) {
		*lk = authz.Lookup{}
		return false
	}
	lk.ScopeFound = true
	return true
}

// overlayPending applies activity not yet flushed to a record read from
// Redis, so that a read never moves last_activity backwards.
func (s *Store) overlayPending(k string, r *authz.Session) {
	s.pendingMu.Lock()
	p, ok := s.pending[k]
	s.pendingMu.Unlock()
	if ok {
		r.Advance(p)
	}
}

// Begin implements authz.Store: the session record, then its scope's
// current session. A failure between the two leaves a record nothing points
// to, which expires at its KeepUntil.
func (s *Store) Begin(ctx context.Context, r *authz.Session) error {
	b, err := r.AppendBinary(nil)
	if err != nil {
		return fmt.Errorf("redis store: begin: %w", err)
	}
	if err := s.isDown("begin"); err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// The index first (authz.SessionIndex says why).
	if err := s.index(ctx, r, r.KeepUntil); err != nil {
		return err
	}
	sk, ck := s.sessionKey(r.Policy, r.ID), s.scopeKey(r.Policy, r.Scope)
	if err := s.c.Do(ctx, "SET", sk, b, "PXAT", r.KeepUntil).Err(); err != nil {
		return s.unavailable(ctx, "begin", err)
	}
	st, err := s.scopeChange(ctx, ck, 0, r.KeepUntil, r.ID)
	if err != nil {
		return err
	}
	now := s.now()
	_ = s.near.apply(sk, entry{session: *r}, now)
	_ = s.near.apply(ck, entry{scope: st, isScope: true}, now)
	return nil
}

func (s *Store) scopeChange(ctx context.Context, ck string, endedAt, keepUntil int64, current string) (authz.ScopeState, error) {
	b, err := scopeScript.Run(ctx, s.scripter(ctx), []string{ck}, endedAt, keepUntil, current, s.channel).Text()
	if err != nil {
		return authz.ScopeState{}, s.scriptError(ctx, "scope", err)
	}
	var st authz.ScopeState
	if err := st.UnmarshalBinary([]byte(b)); err != nil {
		return authz.ScopeState{}, fmt.Errorf("redis store: scope record: %w", err)
	}
	return st, nil
}

// Touch implements authz.Store. With a trusted near cache holding the
// session, it is applied there and queued for the next flush: no round
// trip. Otherwise, and always for a new grant (which must not be lost), it
// runs in Redis at once.
func (s *Store) Touch(ctx context.Context, policy, id string, t authz.Touch) (authz.Session, bool, error) {
	k := s.sessionKey(policy, id)
	now := s.now()
	if t.Grant == "" && s.trusted() {
		if r, ok := s.near.touch(k, t, now); ok {
			if !r.Ended() {
				s.pend(k, t)
				if t.KeepUntil != 0 {
					// Rare (a newer sign-in or a longer-lived token): the
					// index keeps the session as long as its record.
					return r, true, s.indexTouched(ctx, &r)
				}
			}
			return r, true, nil
		}
	}
	if err := s.isDown("touch"); err != nil {
		return authz.Session{}, false, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	gen := s.near.gen(k)
	res, err := s.runSession(ctx, touchScript, k, t.LastActivity, t.SignIn, t.KeepUntil, t.GrantAt, t.Grant, s.channel).Text()
	if errors.Is(err, redis.Nil) {
		return authz.Session{}, false, nil
	}
	if err != nil {
		return authz.Session{}, false, s.scriptError(ctx, "touch", err)
	}
	var r authz.Session
	if err := r.UnmarshalBinary([]byte(res)); err != nil {
		return authz.Session{}, false, fmt.Errorf("redis store: touch: %w", err)
	}
	s.near.fill(gen, k, entry{session: r}, now)
	if t.KeepUntil != 0 && !r.Ended() {
		return r, true, s.indexTouched(ctx, &r)
	}
	return r, true, nil
}

func (s *Store) pend(k string, t authz.Touch) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if old, ok := s.pending[k]; ok {
		t = authz.MergeTouches(old, t)
	}
	s.pending[k] = t
}

// End implements authz.Store in two atomic steps, each a script on one key
// (in Cluster mode the session and its scope live in different slots): the
// scope's EndedAt first, then the session. Between them no interleaving
// revives anything: a reader that sees the session still live also sees the
// scope's end and refuses every token signed in before it (S3); a Touch in
// between is an activity that preceded the end and cannot undo it. The
// other order would leave a window where the ended session's cookie-less
// clients, finding no live current session, could open a new one with a
// token the end should refuse.
func (s *Store) End(ctx context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	if s.o.WaitReplicas == 0 {
		return s.end(ctx, policy, id, scope, e)
	}
	return s.endAndWait(ctx, policy, id, scope, e)
}

func (s *Store) end(ctx context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	if e.At <= 0 {
		return authz.Session{}, false, fmt.Errorf("redis store: end at %d", e.At)
	}
	if err := s.isDown("end"); err != nil {
		return authz.Session{}, false, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ck := s.scopeKey(policy, scope)
	st, scopeErr := s.scopeChange(ctx, ck, e.At, e.KeepUntil, "")
	now := s.now()
	switch {
	case scopeErr == nil:
		_ = s.near.apply(ck, entry{scope: st, isScope: true}, now)
	case id == "" || !errors.Is(scopeErr, authz.ErrCorruptRecord):
		return authz.Session{}, false, scopeErr
	}
	// A corrupt scope record refuses every token of its scope (S9), so the
	// window the order above guards against cannot open; the session is
	// still ended, and the End still fails: reconcile drops ends that fail
	// so, which must not leave the session live behind the damage (S3).
	if id == "" {
		return authz.Session{}, false, nil
	}
	sk := s.sessionKey(policy, id)
	vals, err := s.runSession(ctx, endScript, sk, e.At, int64(e.Cause), e.KeepUntil, s.channel).Slice()
	if err != nil {
		return authz.Session{}, false, s.scriptError(ctx, "end", err)
	}
	if len(vals) < 2 {
		return authz.Session{}, false, scopeErr
	}
	rec, _ := vals[1].(string)
	var r authz.Session
	if err := r.UnmarshalBinary([]byte(rec)); err != nil {
		return authz.Session{}, false, fmt.Errorf("redis store: end: %w", err)
	}
	_ = s.near.apply(sk, entry{session: r}, now)
	if scopeErr != nil {
		return authz.Session{}, false, scopeErr
	}
	ended, _ := vals[0].(int64)
	return r, ended == 1, nil
}

// Claim implements authz.Store with SET NX PXAT: atomic on the key's node,
// and so across every replica.
func (s *Store) Claim(ctx context.Context, key authz.Digest, keepUntil int64) (bool, error) {
	if err := s.isDown("claim"); err != nil {
		return false, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err := s.c.Do(ctx, "SET", s.o.Prefix+":k:"+hex.EncodeToString(key[:]), "1", "NX", "PXAT", keepUntil).Err()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, redis.Nil):
		return false, nil
	}
	return false, s.unavailable(ctx, "claim", err)
}

// flushLoop writes coalesced activity every FlushInterval.
func (s *Store) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.o.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flush(ctx)
			// After a passing failure the subscription may never have
			// broken: reconcile here too, or the queue would wait forever.
			// Only while subscribed, which shows Redis is reachable: the
			// fallback's sessions must outlive a real outage.
			if s.trustedSince.Load() != 0 {
				if err := s.checkMarker(ctx); err != nil {
					s.log.Debug("redis store: marker", "err", err)
				}
			}
			if s.trustedSince.Load() != 0 && (s.queued.Load() > 0 || s.near.local.Len() > 0) {
				if err := s.reconcile(ctx); err != nil {
					s.log.Debug("redis store: reconcile", "err", err)
				}
			}
		}
	}
}

// flush writes the pending touches in one pipeline (one round trip per
// Redis node). Touches that fail for want of Redis stay pending, merged with
// newer ones; the scripts refuse to revive anything that ended meanwhile.
func (s *Store) flush(ctx context.Context) {
	s.pendingMu.Lock()
	batch := s.pending
	if len(batch) == 0 || s.down.Load() {
		s.pendingMu.Unlock()
		return
	}
	s.pending = make(map[string]authz.Touch, len(batch))
	s.pendingMu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, max(s.o.FlushInterval, time.Second))
	defer cancel()
	keys := make([]string, 0, len(batch))
	cmds := make([]*redis.Cmd, 0, len(batch))
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, t := range batch {
			keys = append(keys, k)
			cmds = append(cmds, touchScript.EvalSha(ctx, p, []string{k}, t.LastActivity, t.SignIn, t.KeepUntil, 0, "", s.channel))
		}
		return nil
	})
	failed := 0
	for i, cmd := range cmds {
		res, err := cmd.Text()
		if err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") || isOldFormat(err)) {
			// A node that restarted or never ran the script, or a record
			// of an older format: once more, on its own.
			t := batch[keys[i]]
			res, err = s.runSession(ctx, touchScript, keys[i], t.LastActivity, t.SignIn, t.KeepUntil, 0, "", s.channel).Text()
		}
		if err == nil {
			s.learnEnd(keys[i], res)
			continue
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		if isCorrupt(err) {
			continue // nothing to retry; the next read reports it
		}
		failed++
		s.pend(keys[i], batch[keys[i]])
	}
	if failed > 0 {
		s.down.Store(true)
		s.log.Debug("redis store: activity not written; retrying", "sessions", failed)
	}
}

// learnEnd applies a session record that a flushed touch returned, when it
// has ended, to the near cache. The change channel normally brings ends
// sooner, but the heartbeat vouches only for the node this replica listens
// to (in Cluster mode another node's PUBLISH crosses the cluster bus): a
// lost message must not leave a live copy that activity keeps rewriting,
// and so fresh, for as long as the session is used (S3).
func (s *Store) learnEnd(k, rec string) {
	var r authz.Session
	if r.UnmarshalBinary([]byte(rec)) != nil || !r.Ended() {
		return
	}
	if err := s.near.apply(k, entry{session: r}, s.now()); err != nil {
		s.near.reset(s.near.live)
	}
}
