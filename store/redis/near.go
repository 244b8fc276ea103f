package redis

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
)

// nearCache is one replica's copy of records it has read from or written to
// Redis, and of every change other replicas published. It lives in bigcache,
// whose index holds no pointers, in three tiers:
//
//   - live holds recent session and scope records as Redis has them
//     (LifeWindow NearCacheTTL). Touches rewrite records, and bigcache keeps
//     each old copy until it ages out, so this window stays short. A live
//     sign-in session's sealed grant is kept apart (grants): bigcache
//     copies an entry on every read, and a grant is twenty times the rest
//     of its record, needed only when the engine's cache of opened grants
//     misses; its record in the tier holds GrantAt and no grant.
//   - ends holds ended sessions and ended scopes (LifeWindow EndsTTL). They
//     are written about once each, so they can be kept long: they are what
//     the fallback needs to refuse ended sessions during an outage (S3).
//   - local holds what the fallback decided while Redis was unreachable
//     (LifeWindow EndsTTL). Only the fallback reads it, so sessions that
//     exist nowhere but here are never served as Redis' own; it is dropped
//     once Redis is back and the fallback's ends are written there.
//
// Records from Redis reads are "filled" only if no change to a key of their
// stripe arrived since the read began (the stripe's generation), so a change
// published while a read was in flight can never be overwritten by the older
// record the read returns. Every read-modify-write of an entry holds its
// key's stripe.
type nearCache struct {
	live, ends, local *bigcache.BigCache
	seed              maphash.Seed
	stripes           [stripes]sync.Mutex
	gens              [stripes]atomic.Uint64 // bumped before every change to the stripe
	buf               [stripes][]byte        // encode buffers, used only with their stripe held
	grants            [stripes]grantShard    // live sign-in sessions' grants, by key's stripe
	liveTTL           int64                  // ms: how long a grant outlives its last write
}

// grantShard holds the sealed grants of the live tier's sign-in sessions of
// one stripe. Its lock is taken last (never held while taking another), so
// that reads need not hold the stripe.
type grantShard struct {
	mu    sync.Mutex
	m     map[string]nearGrant
	sweep int64 // when expired grants are next dropped (Unix ms)
}

// nearGrant is the grant of a session record of the live tier: its GrantAt
// (a record names the grant it goes with) and when it is forgotten, as the
// live tier forgets the record (a record without its grant is a miss).
type nearGrant struct {
	at, until int64
	grant     string
}

const stripes = 256

func newNearCache(liveTTL, endsTTL time.Duration) (*nearCache, error) {
	n := &nearCache{seed: maphash.MakeSeed(), liveTTL: liveTTL.Milliseconds()}
	config := func(life time.Duration) bigcache.Config {
		return bigcache.Config{
			Shards: 64, LifeWindow: life, CleanWindow: max(life/10, time.Second),
			MaxEntrySize: 256, Hasher: seededHash{n.seed},
		}
	}
	var err error
	if n.live, err = bigcache.New(context.Background(), config(liveTTL)); err != nil {
		return nil, err
	}
	if n.ends, err = bigcache.New(context.Background(), config(endsTTL)); err != nil {
		n.live.Close()
		return nil, err
	}
	if n.local, err = bigcache.New(context.Background(), config(endsTTL)); err != nil {
		n.live.Close()
		n.ends.Close()
		return nil, err
	}
	return n, nil
}

func (n *nearCache) close() error {
	return errors.Join(n.live.Close(), n.ends.Close(), n.local.Close())
}

// seededHash hashes keys for bigcache with a per-process seed: bigcache
// indexes entries by hash alone, so fixed-hash collisions chosen by a client
// could evict other entries (harmless here, a miss, but pointless).
type seededHash struct{ seed maphash.Seed }

func (h seededHash) Sum64(s string) uint64 { return maphash.String(h.seed, s) }

func (n *nearCache) stripe(k string) int { return int(maphash.String(n.seed, k) % stripes) }

func (n *nearCache) lock(k string) int {
	i := n.stripe(k)
	n.stripes[i].Lock()
	return i
}

// gen is the generation of k's stripe, taken before a read of k from Redis.
func (n *nearCache) gen(k string) uint64 { return n.gens[n.stripe(k)].Load() }

// entry is a decoded cache entry: a session or a scope record.
type entry struct {
	session authz.Session
	scope   authz.ScopeState
	isScope bool
}

func (e *entry) ended() bool {
	if e.isScope {
		return e.scope.EndedAt != 0
	}
	return e.session.Ended()
}

func (e *entry) keepUntil() int64 {
	if e.isScope {
		return e.scope.KeepUntil
	}
	return e.session.KeepUntil
}

func decode(b []byte) (entry, error) {
	var e entry
	switch authz.KindOf(b) {
	case authz.KindScope:
		e.isScope = true
		return e, e.scope.UnmarshalBinary(b)
	case authz.KindSession:
		return e, e.session.UnmarshalBinary(b)
	}
	return e, authz.ErrCorruptRecord
}

func (e *entry) appendBinary(b []byte) ([]byte, error) {
	if e.isScope {
		return e.scope.AppendBinary(b)
	}
	return e.session.AppendBinary(b)
}

// merge folds the newer knowledge nw into old by authz's rules
// (MergeSessions, MergeScopes): an ended session stays ended (S3), times
// only grow, a scope's current session is the newer one's.
func merge(old, nw entry) entry {
	if old.isScope != nw.isScope {
		return nw
	}
	if old.isScope {
		nw.scope = authz.MergeScopes(old.scope, nw.scope)
		return nw
	}
	nw.session = authz.MergeSessions(old.session, nw.session)
	return nw
}

// get reads k from c; a miss, a record past its KeepUntil and a record that
// does not decode are all absent (Redis is the record; the cache only spares
// round trips).
func get(c *bigcache.BigCache, k string, now int64) (entry, bool) {
	b, err := c.Get(k)
	if err != nil {
		return entry{}, false
	}
	e, err := decode(b)
	if err != nil || e.keepUntil() < now {
		return entry{}, false
	}
	return e, true
}

// lookupSession decodes the session record under k in the live tier
// (Redis' records as last known) into *r: get and decode, without a copy
// of the entry on the stack of every Load.
func (n *nearCache) lookupSession(k string, now int64, r *authz.Session) bool {
	b, err := n.live.Get(k)
	if err != nil || authz.KindOf(b) != authz.KindSession {
		return false
	}
	// b is bigcache's copy of the record, read for this call alone: the
	// record's strings may share it.
	return r.UnmarshalOwned(b) == nil && r.KeepUntil >= now && n.withGrant(k, r, now)
}

// apart reports whether the live tier keeps r's grant apart from r: a live
// session with a grant (an ended one has none, S15).
func apart(r *authz.Session) bool { return r.GrantAt != 0 && !r.Ended() }

// withGrant sets the grant of r, a record of the live tier under k, from
// the grants kept apart. It reports false when r needs one that is not
// there (forgotten, or replaced since r was read): the record is a miss.
func (n *nearCache) withGrant(k string, r *authz.Session, now int64) bool {
	if r.Grant != "" || !apart(r) {
		return true
	}
	g := &n.grants[n.stripe(k)]
	g.mu.Lock()
	ng, ok := g.m[k]
	g.mu.Unlock()
	if !ok || ng.at != r.GrantAt || ng.until < now {
		return false
	}
	r.Grant = ng.grant
	return true
}

// keepGrant keeps r's grant apart for k, unless a newer one is kept, and
// drops k's grant once r has ended.
func (n *nearCache) keepGrant(k string, r *authz.Session, now int64) {
	g := &n.grants[n.stripe(k)]
	g.mu.Lock()
	defer g.mu.Unlock()
	if !apart(r) || r.Grant == "" {
		if r.Ended() {
			delete(g.m, k)
		}
		return
	}
	if g.m == nil {
		g.m = make(map[string]nearGrant)
	}
	if now >= g.sweep {
		for gk, ng := range g.m {
			if ng.until < now {
				delete(g.m, gk)
			}
		}
		g.sweep = now + n.liveTTL
	}
	if old, ok := g.m[k]; ok && old.at > r.GrantAt && old.until >= now {
		return
	}
	g.m[k] = nearGrant{at: r.GrantAt, until: now + n.liveTTL, grant: r.Grant}
}

// forgetGrants drops every grant kept apart (with every stripe held).
func (n *nearCache) forgetGrants() {
	for i := range n.grants {
		g := &n.grants[i]
		g.mu.Lock()
		g.m, g.sweep = nil, 0
		g.mu.Unlock()
	}
}

// getLive is get of the live tier, with a session's grant set.
func (n *nearCache) getLive(k string, now int64) (entry, bool) {
	e, ok := get(n.live, k, now)
	if !ok || e.isScope || n.withGrant(k, &e.session, now) {
		return e, ok
	}
	return entry{}, false
}

// lookupScope is lookupSession for the scope record under k.
func (n *nearCache) lookupScope(k string, now int64, st *authz.ScopeState) bool {
	b, err := n.live.Get(k)
	if err != nil || authz.KindOf(b) != authz.KindScope {
		return false
	}
	return st.UnmarshalOwned(b) == nil && st.KeepUntil >= now
}

// lookupAll returns everything this replica knows of k, for the fallback:
// the ends tier, overlaid by the live tier, overlaid by the fallback's own.
func (n *nearCache) lookupAll(k string, now int64) (entry, bool) {
	var e entry
	found := false
	for _, c := range [...]*bigcache.BigCache{n.ends, n.live, n.local} {
		d, ok := get(c, k, now)
		if c == n.live {
			d, ok = n.getLive(k, now)
		}
		if ok {
			if found {
				d = merge(e, d)
			}
			e, found = d, true
		}
	}
	return e, found
}

// put merges e into k's entry in tier c, and into the ends tier when it
// records an end, with k's stripe i held.
func (n *nearCache) put(i int, c *bigcache.BigCache, k string, e entry, now int64) error {
	for _, c := range [...]*bigcache.BigCache{c, n.ends} {
		if c == n.ends && !e.ended() {
			return nil
		}
		grant, grantAt := e.session.Grant, e.session.GrantAt
		if old, ok := get(c, k, now); ok {
			e = merge(old, e)
		}
		rec := e
		if c == n.live && !e.isScope {
			// The tier's records hold no grant (its old record had none):
			// the grant the merged record names is kept apart.
			if e.session.Grant == "" && e.session.GrantAt == grantAt {
				e.session.Grant = grant
			}
			n.keepGrant(k, &e.session, now)
			rec.session.Grant = ""
		}
		b, err := rec.appendBinary(n.buf[i][:0])
		if err != nil {
			return err
		}
		n.buf[i] = b
		if err := c.Set(k, b); err != nil {
			return fmt.Errorf("near cache: %w", err)
		}
	}
	return nil
}

// apply records a change: published by a replica, returned by a script, or
// made locally by the fallback.
func (n *nearCache) apply(k string, e entry, now int64) error {
	i := n.lock(k)
	n.gens[i].Add(1)
	defer n.stripes[i].Unlock()
	return n.put(i, n.live, k, e, now)
}

// putLocal records a decision of the fallback.
func (n *nearCache) putLocal(k string, e entry, now int64) error {
	i := n.lock(k)
	defer n.stripes[i].Unlock()
	return n.put(i, n.local, k, e, now)
}

// fill caches a record read from Redis when the read began at generation
// gen, unless a change has been applied since.
func (n *nearCache) fill(gen uint64, k string, e entry, now int64) {
	i := n.lock(k)
	defer n.stripes[i].Unlock()
	if n.gens[i].Load() == gen {
		_ = n.put(i, n.live, k, e, now) // a cache that cannot hold it just misses
	}
}

// touch applies t to the cached live session k. ok is false when k is not
// cached; an ended session is returned unchanged.
func (n *nearCache) touch(k string, t authz.Touch, now int64) (s authz.Session, ok bool) {
	i := n.lock(k)
	defer n.stripes[i].Unlock()
	e, ok := n.getLive(k, now)
	if !ok || e.isScope {
		return authz.Session{}, false
	}
	if e.session.Ended() {
		return e.session, true
	}
	if e.session.Advance(t) {
		if err := n.put(i, n.live, k, e, now); err != nil {
			return authz.Session{}, false
		}
	}
	return e.session, true
}

// reset forgets tier c, with every stripe held so that no fill that began
// before it lands after it. The ends tier is never reset: ends stay ends.
func (n *nearCache) reset(c *bigcache.BigCache) {
	for i := range n.stripes {
		n.stripes[i].Lock()
		n.gens[i].Add(1)
	}
	_ = c.Reset()
	if c == n.live {
		n.forgetGrants()
	}
	for i := range n.stripes {
		n.stripes[i].Unlock()
	}
}

// touchLocal applies t, for the fallback, to what this replica knows of
// session k, and records the result in the local tier. ok is false when k is
// unknown; an ended session is returned unchanged.
func (n *nearCache) touchLocal(k string, t authz.Touch, now int64) (s authz.Session, ok bool, err error) {
	i := n.lock(k)
	defer n.stripes[i].Unlock()
	e, ok := n.lookupAll(k, now)
	if !ok || e.isScope {
		return authz.Session{}, false, nil
	}
	if e.session.Ended() {
		return e.session, true, nil
	}
	e.session.Advance(t)
	return e.session, true, n.put(i, n.local, k, e, now)
}
