// Package memory owns the embedded session store: one replica's session
// records and S3 scope states, kept in process memory in two bigcache tiers
// whose indexes hold no pointers, so that a million sessions cost the garbage
// collector next to nothing. It implements authz.Store.
package memory

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
)

// Options configures New; zero fields take the defaults shown.
type Options struct {
	// Clock decides whether a record's KeepUntil has passed (wall clock).
	Clock interface{ Now() time.Time }
	// HotWindow is how long after its last write a record stays in the
	// rewritable hot tier (10m). Whole seconds, at least one.
	HotWindow time.Duration
	// ColdWindow is how long the cold tier holds a write before the store
	// must rewrite it to keep it (7 days): the span of dead copies it keeps.
	// Whole seconds, at least one.
	ColdWindow time.Duration
	// Shards is the number of bigcache shards per tier, a power of two (256).
	Shards int

	// StateFile, when set, keeps the store across restarts (see state.go):
	// every End is journaled and fsynced before it returns, and a snapshot
	// of every record is written at Close and loaded by New.
	StateFile string
	// JournalLimit is the journal size in bytes that triggers a snapshot
	// (64 MiB).
	JournalLimit int64
	// SnapshotInterval is how often a snapshot is written anyway (5m), which
	// bounds the sessions and activity a crash can lose. Negative: never.
	SnapshotInterval time.Duration
	// ActivityInterval is how often the records that Begin and Touch changed
	// are journaled (1s): a crash loses at most this much activity and so
	// many new sessions. Negative: never (a crash loses everything since the
	// last snapshot).
	ActivityInterval time.Duration
	// Logger receives the state file's background failures (discard).
	Logger *slog.Logger

	openFile openFunc // tests inject file failures; default os.OpenFile
}

// Store is the embedded authz.Store.
//
// Why two tiers: bigcache never updates in place. Each Set appends a copy and
// the space of the old one is reclaimed only when it ages out of LifeWindow.
// Session records are rewritten on activity, while ends must be kept until
// every token they cover has expired (KeepUntil), days perhaps; one cache
// with a long LifeWindow would hoard dead copies of busy records. So records
// being rewritten live in hot (LifeWindow = HotWindow); when bigcache expires
// one there, it is demoted to cold (LifeWindow = ColdWindow) unless its
// KeepUntil has passed. Ends and scope records, which rarely change, go to
// cold directly; a Touch of a cold record writes the new version to hot.
// Reads look in hot, then cold: hot is always the newer.
//
// HardMaxCacheSize is never set: at the bound bigcache silently evicts the
// oldest entries, which would forget ends we promised to keep (S3).
type Store struct {
	clock     interface{ Now() time.Time }
	seed      maphash.Seed
	hot, cold *bigcache.BigCache
	coldLife  uint64 // cold LifeWindow in bigcache's unit, seconds
	stripes   [stripeCount]stripe
	grants    grantCache // grants of the sign-in sessions in use
	closed    atomic.Bool
	done      chan struct{}
	state     *state // nil without a state file
}

var _ authz.Store = (*Store)(nil)

// stripeCount stripes serialize the read-modify-writes of keys with the same
// stripe; enough that unrelated sessions rarely wait for each other.
const stripeCount = 1024

type stripe struct {
	sync.Mutex
	buf []byte // encode buffer, used only while the stripe is held
}

// Key tags: session records under "s" policy NUL id, scope records under
// "c" policy NUL digest, claims under "k" digest. Policy names are file
// stems, which hold no NUL, so no two (policy, id) pairs share a key.
const (
	sessionTag = 's'
	scopeTag   = 'c'
	claimTag   = 'k'
)

// New returns a store and starts its background upkeep; Close stops it.
func New(opts Options) (*Store, error) {
	if opts.Clock == nil {
		opts.Clock = authz.SystemClock{}
	}
	if opts.HotWindow == 0 {
		opts.HotWindow = 10 * time.Minute
	}
	if opts.ColdWindow == 0 {
		opts.ColdWindow = 7 * 24 * time.Hour
	}
	if opts.Shards == 0 {
		opts.Shards = 256
	}
	if opts.JournalLimit == 0 {
		opts.JournalLimit = 64 << 20
	}
	if opts.SnapshotInterval == 0 {
		opts.SnapshotInterval = 5 * time.Minute
	}
	if opts.ActivityInterval == 0 {
		opts.ActivityInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// bigcache counts ages in whole seconds.
	if opts.HotWindow < time.Second || opts.ColdWindow < time.Second {
		return nil, fmt.Errorf("memory store: windows must be at least 1s (hot %v, cold %v)", opts.HotWindow, opts.ColdWindow)
	}
	if opts.Shards < 0 || opts.Shards&(opts.Shards-1) != 0 {
		return nil, fmt.Errorf("memory store: shards must be a power of two, not %d", opts.Shards)
	}
	s := &Store{
		clock:    opts.Clock,
		seed:     maphash.MakeSeed(),
		coldLife: uint64(opts.ColdWindow / time.Second),
		done:     make(chan struct{}),
	}
	config := func(life time.Duration) bigcache.Config {
		return bigcache.Config{
			Shards:       opts.Shards,
			LifeWindow:   life,
			CleanWindow:  max(life/10, time.Second),
			MaxEntrySize: 256,
			Hasher:       seededHash{s.seed},
		}
	}
	var err error
	if s.cold, err = bigcache.New(context.Background(), config(opts.ColdWindow)); err != nil {
		return nil, fmt.Errorf("memory store: %w", err)
	}
	hot := config(opts.HotWindow)
	hot.OnRemoveWithReason = s.demote
	if s.hot, err = bigcache.New(context.Background(), hot.OnRemoveFilterSet(bigcache.Expired)); err != nil {
		s.cold.Close()
		return nil, fmt.Errorf("memory store: %w", err)
	}
	if opts.StateFile != "" {
		if s.state, err = s.openState(opts); err != nil {
			s.hot.Close()
			s.cold.Close()
			return nil, err
		}
	}
	go s.refreshLoop(opts.ColdWindow / 4)
	return s, nil
}

// Close stops the background upkeep and writes the state file's final
// snapshot; later calls fail with authz.ErrStoreUnavailable.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	var err error
	if s.state != nil {
		err = s.state.close()
	}
	return errors.Join(err, s.hot.Close(), s.cold.Close())
}

// Len reports the number of records in each tier, including records whose
// KeepUntil has passed but which bigcache has not yet aged out.
func (s *Store) Len() (hot, cold int) { return s.hot.Len(), s.cold.Len() }

// Ready implements authz.Store: not while the state file cannot be written,
// when ends (sign-outs, timeouts) are answered 503 (StateFileErr).
func (s *Store) Ready(context.Context) error {
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.StateFileErr(); err != nil {
		return fmt.Errorf("%w: %w", authz.ErrStoreUnavailable, err)
	}
	return nil
}

// StateFileErr reports why the state file cannot be written now: nil while
// it can, and without a state file.
func (s *Store) StateFileErr() error {
	if s.state == nil {
		return nil
	}
	return s.state.Err()
}

// Load implements authz.Store with two bigcache reads for a hot session.
//
// Its results are named and assigned in place: a copy of the lookup in this
// frame would deepen every check's stack (authz.Engine says why that costs).
func (s *Store) Load(_ context.Context, policy, id string, scope authz.Digest) (l authz.Lookup, err error) {
	if err := s.usable(); err != nil {
		return authz.Lookup{}, err
	}
	now := s.now()
	sk, ck, gk := loadKeys(policy, id, scope)
	if id != "" {
		if l.SessionFound, err = s.loadSession(sk, gk, now, &l.Session); err != nil {
			return authz.Lookup{}, err
		}
	}
	if scope == (authz.Digest{}) {
		return l, nil
	}
	if l.Scope, l.ScopeFound, err = s.scope(ck, now); err != nil {
		return authz.Lookup{}, err
	}
	return l, nil
}

// Begin implements authz.Store.
func (s *Store) Begin(_ context.Context, r *authz.Session) error {
	if err := s.usable(); err != nil {
		return err
	}
	// The index first (authz.SessionIndex says why). By scope (the second
	// of authz.IndexKeys, r.Scope), the scope record's current session is
	// indexed (see index.go): one record fewer per session in the common
	// case of one session per scope, and none at all for a session filed
	// under its scope alone (UserScope).
	if ik := authz.IndexKeys(r); ik[0] != r.Scope {
		if err := s.indexAdd(indexKey(r.Policy, ik[0]), []indexEntry{{id: r.ID, keepUntil: r.KeepUntil}}); err != nil {
			return err
		}
	}
	sk, ck := keys(r.Policy, r.ID, r.Scope)
	i, j := s.lockPair(sk, ck)
	defer s.unlockPair(i, j)
	now := s.now()
	st, found, err := s.scope(ck, now)
	if err != nil {
		return err
	}
	if found && st.Current != "" && st.Current != r.ID {
		// r displaces the scope's current session: the index record of
		// the scope takes it over (its stripe is ck's, held).
		if err := s.indexAddLocked(indexKeyOfScope(ck), []indexEntry{{id: st.Current, keepUntil: st.KeepUntil}}, now); err != nil {
			return err
		}
	}
	st.Begin(r.ID, r.KeepUntil)
	buf := &s.stripes[i].buf
	if r.Grant != "" && !r.Ended() {
		if err := s.putGrant(sk, r); err != nil {
			return err
		}
	}
	if err := putSession(s.hot, sk, r, buf); err != nil {
		return err
	}
	if err := s.putScope(ck, &st, buf); err != nil {
		return err
	}
	if s.state != nil {
		keys := []string{sk, ck, grantKeyOf(sk)}
		for _, d := range authz.IndexKeys(r) {
			keys = append(keys, indexKey(r.Policy, d))
		}
		s.state.noteActivity(keys...)
	}
	return nil
}

// Touch implements authz.Store.
func (s *Store) Touch(_ context.Context, policy, id string, t authz.Touch) (authz.Session, bool, error) {
	if err := s.usable(); err != nil {
		return authz.Session{}, false, err
	}
	r, found, raised, err := s.touch(policy, id, t)
	if err == nil && raised {
		// The index keeps the session as long as its record (no stripe held).
		err = s.index(&r, r.KeepUntil)
	}
	if err == nil && found && !r.Ended() && s.state != nil {
		s.state.noteActivity(sessionKey(policy, id))
	}
	return r, found, err
}

// touch is Touch with the session's stripe held; raised says whether its
// KeepUntil grew.
func (s *Store) touch(policy, id string, t authz.Touch) (authz.Session, bool, bool, error) {
	k := sessionKey(policy, id)
	st := &s.stripes[s.stripeOf(k)]
	st.Lock()
	defer st.Unlock()
	r, found, _, err := s.session(k, s.now())
	if err != nil || !found || r.Ended() {
		return r, found, false, err
	}
	keep, grantAt := r.KeepUntil, r.GrantAt
	if !r.Advance(t) { // nothing advanced: spare hot a dead copy
		return r, true, false, nil
	}
	// The grant is written only when it changed or must be kept longer:
	// activity alone rewrites the record without it.
	if r.Grant != "" && (r.GrantAt != grantAt || r.KeepUntil > keep) {
		if err := s.putGrant(k, &r); err != nil {
			return authz.Session{}, false, false, err
		}
		if s.state != nil {
			s.state.noteActivity(grantKeyOf(k))
		}
	}
	if err := putSession(s.hot, k, &r, &st.buf); err != nil {
		return authz.Session{}, false, false, err
	}
	return r, true, r.KeepUntil > keep, nil
}

// End implements authz.Store.
func (s *Store) End(_ context.Context, policy, id string, scope authz.Digest, e authz.End) (authz.Session, bool, error) {
	if err := s.usable(); err != nil {
		return authz.Session{}, false, err
	}
	if e.At <= 0 { // EndedAt 0 means live: such an end would end nothing
		return authz.Session{}, false, fmt.Errorf("memory store: end at %d", e.At)
	}
	sk, ck := keys(policy, id, scope)
	i, j := s.lockPair(sk, ck)
	defer s.unlockPair(i, j)
	now := s.now()
	buf := &s.stripes[i].buf
	var r authz.Session
	ended, found := false, false
	if id != "" {
		var inHot bool
		var err error
		if r, found, inHot, err = s.session(sk, now); err != nil {
			return authz.Session{}, false, err
		}
		if found && r.EndWith(e) {
			if err := s.retire(sk, &r, inHot, buf); err != nil {
				return authz.Session{}, false, err
			}
			ended = true
		}
	}
	st, _, err := s.scope(ck, now)
	if err != nil {
		return authz.Session{}, false, err
	}
	st.Raise(e)
	if err := s.putScope(ck, &st, buf); err != nil {
		return authz.Session{}, false, err
	}
	if s.state != nil {
		// Memory first: if the journal fails, this process still refuses
		// the session, and the end is reported as not done (the engine
		// denies with store_unavailable); the next snapshot makes it durable.
		if err := s.state.journalEnd(sk, &r, found, ck, &st); err != nil {
			return authz.Session{}, false, err
		}
	}
	return r, ended, nil
}

// Claim implements authz.Store. Claims live in cold, under their key's
// stripe; the state file's snapshots keep them (they are not journaled: a
// crash forgets the claims made since the last snapshot, which expire within
// minutes anyway).
func (s *Store) Claim(_ context.Context, key authz.Digest, keepUntil int64) (bool, error) {
	if err := s.usable(); err != nil {
		return false, err
	}
	k := claimKey(key)
	st := &s.stripes[s.stripeOf(k)]
	st.Lock()
	defer st.Unlock()
	b, err := get(s.cold, k)
	if err != nil {
		return false, err
	}
	if until, ok := claimUntil(b); ok && until >= s.now() {
		return false, nil
	} else if b != nil && !ok {
		return false, fmt.Errorf("memory store: claim record: %w", authz.ErrCorruptRecord)
	}
	st.buf = binary.BigEndian.AppendUint64(st.buf[:0], uint64(keepUntil))
	return true, set(s.cold, k, st.buf)
}

// retire moves a just-ended session to cold, with its stripe held. If the
// live copy is hot, the ended one overwrites it there first: otherwise
// bigcache could expire the live copy and demote it over our cold write,
// reviving the session (S3). Now a demotion can only copy the ended record,
// and a reader finds the record in one tier or the other at every moment.
func (s *Store) retire(k string, r *authz.Session, inHot bool, buf *[]byte) error {
	b, err := r.AppendKeyed((*buf)[:0])
	if err != nil {
		return fmt.Errorf("memory store: %w", err)
	}
	*buf = b
	if inHot {
		if err := set(s.hot, k, b); err != nil {
			return err
		}
	}
	if err := set(s.cold, k, b); err != nil {
		return err
	}
	if inHot {
		s.hot.Delete(k) // only fails if the key is already gone
	}
	s.dropGrant(k) // the tokens go with the session (S15)
	return nil
}

// demote runs when bigcache expires a hot record, under that hot shard's
// lock, so it touches only cold: taking a stripe here would invert the
// stripe-then-shard order of the other methods and could deadlock.
func (s *Store) demote(key string, entry []byte, _ bigcache.RemoveReason) {
	if keep, ok := keepUntil(key, entry); ok && keep < s.now() {
		return
	}
	s.cold.Set(key, entry) // Set fails only beyond HardMaxCacheSize, unset
}

// refreshLoop keeps cold records that are still needed from ageing out:
// bigcache drops an entry ColdWindow after its last write whatever its
// KeepUntil, and cold has no further tier (writing to cold from its own
// expiry callback would deadlock on the shard lock). Every quarter window it
// rewrites records older than half of one, so each is rewritten before it
// expires. It ticks on the wall clock because bigcache ages entries by it.
func (s *Store) refreshLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.refresh(uint64(now.Unix()))
		}
	}
}

// refresh rewrites the cold records written before now-ColdWindow/2 (in
// bigcache seconds) whose KeepUntil has not passed.
func (s *Store) refresh(now uint64) {
	for it := s.cold.Iterator(); it.SetNext(); {
		e, err := it.Value()
		if err != nil || e.Timestamp()+s.coldLife/2 > now {
			continue
		}
		k, v := e.Key(), e.Value()
		if keep, ok := keepUntil(k, v); ok && keep < s.now() {
			continue
		}
		st := &s.stripes[s.stripeOf(k)]
		st.Lock()
		// With the stripe held nothing can put k in hot; once a hot read
		// misses, any demotion of k has completed. A hot copy is newer and
		// will be demoted over the cold one, which must not be rewritten
		// after that demotion.
		if b, err := get(s.hot, k); b == nil && err == nil {
			if b, _ := get(s.cold, k); bytes.Equal(b, v) {
				s.cold.Set(k, b)
			}
		}
		st.Unlock()
	}
}

// session reads the session under k, hot first, its grant attached (see
// grant.go), with k's stripe held (or nothing else running: the state
// file's load); inHot says where it was found. A record whose KeepUntil has
// passed is absent.
func (s *Store) session(k string, now int64) (r authz.Session, found, inHot bool, err error) {
	if r, found, inHot, err = s.record(k, now); err != nil || !found || !needsGrant(&r) {
		return r, found, inHot, err
	}
	if err := s.attachGrant(k, &r); err != nil {
		return authz.Session{}, false, false, err
	}
	return r, true, inHot, nil
}

// record reads the session record under k, hot first, as it is stored:
// without its grant when that is kept apart.
func (s *Store) record(k string, now int64) (r authz.Session, found, inHot bool, err error) {
	found, inHot, err = s.readRecord(k, now, &r)
	return r, found, inHot, err
}

// readRecord is record into *r, which is zero unless found: Load reads
// into its result, with no copy of the record on the stack.
func (s *Store) readRecord(k string, now int64, r *authz.Session) (found, inHot bool, err error) {
	b, err := get(s.hot, k)
	if inHot = b != nil; !inHot && err == nil {
		b, err = get(s.cold, k)
	}
	if b == nil {
		*r = authz.Session{}
		return false, false, err
	}
	// b is bigcache's copy of the record, read for this call alone: the
	// record's strings may share it (no second copy).
	policy, id := splitSessionKey(k)
	if err := r.UnmarshalKeyedOwned(b, policy, id); err != nil {
		*r = authz.Session{}
		return false, false, fmt.Errorf("memory store: session record: %w", err)
	}
	if r.KeepUntil < now {
		*r = authz.Session{}
		return false, inHot, nil
	}
	return true, inHot, nil
}

// scope reads the scope record under k. A record whose KeepUntil has passed
// is absent.
func (s *Store) scope(k string, now int64) (st authz.ScopeState, found bool, err error) {
	b, err := get(s.cold, k)
	if b == nil {
		return st, false, err
	}
	if err := st.UnmarshalOwned(b); err != nil { // b: as in session
		return authz.ScopeState{}, false, fmt.Errorf("memory store: scope record: %w", err)
	}
	if st.KeepUntil < now {
		return authz.ScopeState{}, false, nil
	}
	return st, true, nil
}

func (s *Store) now() int64 { return s.clock.Now().UnixMilli() }

func (s *Store) usable() error {
	if s.closed.Load() {
		return fmt.Errorf("%w: memory store closed", authz.ErrStoreUnavailable)
	}
	return nil
}

// stripeOf leaves the key's tag out, so that the scope record and the
// index record of one digest share a stripe (scopeIndexed).
func (s *Store) stripeOf(k string) uint64 { return maphash.String(s.seed, k[1:]) % stripeCount }

// lockPair takes the stripes of a and b in index order, so that operations
// needing two stripes never wait for each other in a cycle.
func (s *Store) lockPair(a, b string) (i, j uint64) {
	i, j = s.stripeOf(a), s.stripeOf(b)
	if i > j {
		i, j = j, i
	}
	s.stripes[i].Lock()
	if j != i {
		s.stripes[j].Lock()
	}
	return i, j
}

func (s *Store) unlockPair(i, j uint64) {
	if j != i {
		s.stripes[j].Unlock()
	}
	s.stripes[i].Unlock()
}

// seededHash hashes keys for bigcache with a per-store random seed. bigcache
// indexes entries by the 64-bit hash alone and a Set replaces any entry with
// the same hash, so keys chosen to collide under a fixed hash could make it
// forget another session's end.
type seededHash struct{ seed maphash.Seed }

func (h seededHash) Sum64(s string) uint64 { return maphash.String(h.seed, s) }

func sessionKey(policy, id string) string {
	var a [128]byte
	return string(appendSessionKey(a[:0], policy, id))
}

// splitSessionKey returns the policy and the id that session key k names
// (policy names hold no NUL; ids may).
func splitSessionKey(k string) (policy, id string) {
	if i := strings.IndexByte(k, 0); i > 0 {
		return k[1:i], k[i+1:]
	}
	return "", ""
}

// unmarshalSession decodes the session record b stored under key k: the
// store writes the keyed format (authz.Session.AppendKeyed), which leaves
// the policy and the id to the key; older state files hold older formats.
func unmarshalSession(r *authz.Session, k string, b []byte) error {
	policy, id := splitSessionKey(k)
	return r.UnmarshalKeyed(b, policy, id)
}

// keys returns the session and scope keys in one allocation.
func keys(policy, id string, scope authz.Digest) (session, scopeKey string) {
	session, scopeKey, _ = loadKeys(policy, id, scope)
	return session, scopeKey
}

// loadKeys returns the session, scope and grant keys in one allocation.
// (Out of line: its buffer would otherwise sit in Load's frame below every
// read.)
//
//go:noinline
func loadKeys(policy, id string, scope authz.Digest) (session, scopeKey, grant string) {
	var a [192]byte
	b := appendSessionKey(a[:0], policy, id)
	n := len(b)
	b = append(b, grantTag)
	b = append(b, policy...)
	b = append(b, 0)
	b = append(b, id...)
	m := len(b)
	b = append(b, scopeTag)
	b = append(b, policy...)
	b = append(b, 0)
	k := string(append(b, scope[:]...))
	return k[:n], k[m:], k[n:m]
}

func appendSessionKey(b []byte, policy, id string) []byte {
	b = append(b, sessionTag)
	b = append(b, policy...)
	b = append(b, 0)
	return append(b, id...)
}

// keepUntil decodes the KeepUntil of the record under key. ok is false for
// a record that does not decode: it is kept, so that reads report it (S9)
// instead of finding nothing.
func keepUntil(key string, b []byte) (t int64, ok bool) {
	switch key[0] {
	case sessionTag:
		var r authz.Session
		if unmarshalSession(&r, key, b) == nil {
			return r.KeepUntil, true
		}
	case scopeTag:
		var st authz.ScopeState
		if st.UnmarshalBinary(b) == nil {
			return st.KeepUntil, true
		}
	case claimTag:
		return claimUntil(b)
	case grantTag:
		return grantUntil(b)
	case indexTag:
		return indexUntil(b)
	}
	return 0, false
}

// A claim record is its keep-until, a big-endian int64.
func claimUntil(b []byte) (int64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b)), true
}

func claimKey(key authz.Digest) string {
	var a [1 + len(key)]byte
	a[0] = claimTag
	copy(a[1:], key[:])
	return string(a[:])
}

// get reads k from c; a miss is (nil, nil). The bytes are a copy of the
// record, the caller's alone (bigcache copies on read).
func get(c *bigcache.BigCache, k string) ([]byte, error) {
	b, err := c.Get(k)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, bigcache.ErrEntryNotFound):
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: %w", authz.ErrStoreUnavailable, err)
	}
}

// putSession encodes r, without its grant (kept apart, putGrant), into
// *buf and stores it under k in c. (Taking an interface instead of two
// functions would move every record to the heap.)
func putSession(c *bigcache.BigCache, k string, r *authz.Session, buf *[]byte) error {
	rec := *r
	rec.Grant = ""
	b, err := rec.AppendKeyed((*buf)[:0])
	if err != nil {
		return fmt.Errorf("memory store: %w", err)
	}
	*buf = b
	return set(c, k, b)
}

// putScope encodes st into *buf and stores it under k in cold.
func (s *Store) putScope(k string, st *authz.ScopeState, buf *[]byte) error {
	b, err := st.AppendBinary((*buf)[:0])
	if err != nil {
		return fmt.Errorf("memory store: %w", err)
	}
	*buf = b
	return set(s.cold, k, b)
}

func set(c *bigcache.BigCache, k string, b []byte) error {
	if err := c.Set(k, b); err != nil {
		return fmt.Errorf("%w: %w", authz.ErrStoreUnavailable, err)
	}
	return nil
}
