package memory

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	"github.com/sessiongate/sessiongate/authz"
)

// A live session's sealed grant (a sign-in's tokens, 2–4 KB) is kept apart
// from its session record, under "g" policy NUL id: an 8-byte big-endian
// keep-until, the 8-byte grant-at, and the sealed grant. Activity rewrites
// the session record (bigcache appends a copy per write), and the grant
// changes only at sign-in and refresh, so that a sign-in session in use
// does not copy its tokens with every activity write. The record keeps the
// grant-at, which names the grant that belongs to it; the grant record
// lives in the tiers as session records do (written to hot, demoted to
// cold), is rewritten when the session's keep-until rises, and is deleted
// when the session ends (S15). Records written with the grant inside (older
// state files) are read as they are, and split when next written.
const grantTag = 'g'

const grantHeader = 16

// grantKeyOf is the grant key of session key k (same policy and id).
func grantKeyOf(k string) string { return string(grantTag) + k[1:] }

// needsGrant reports whether r, as read from its record, has a grant kept
// apart to attach.
func needsGrant(r *authz.Session) bool { return r.Grant == "" && r.GrantAt != 0 && !r.Ended() }

// putGrant stores r's grant under the grant key of session key k, in hot.
func (s *Store) putGrant(k string, r *authz.Session) error {
	gk := grantKeyOf(k)
	b := make([]byte, grantHeader, grantHeader+len(r.Grant))
	binary.BigEndian.PutUint64(b, uint64(r.KeepUntil))
	binary.BigEndian.PutUint64(b[8:], uint64(r.GrantAt))
	err := set(s.hot, gk, append(b, r.Grant...))
	s.grants.drop(gk) // the next Load caches the new one
	return err
}

// dropGrant deletes the grant of session key k from both tiers: hot first,
// so that no demotion can copy it to cold after the cold delete (a running
// demotion holds the hot shard's lock, which the hot delete waits for); and
// from the cache of grants in use.
func (s *Store) dropGrant(k string) {
	gk := grantKeyOf(k)
	s.hot.Delete(gk) // fails only if the key is not there
	s.cold.Delete(gk)
	s.grants.drop(gk)
}

// grantCache keeps the grants of the sign-in sessions in use, by grant key,
// so that their Loads do not copy a 2–4 KB sealed grant out of bigcache on
// every request (bigcache copies what it returns; the engine, which caches
// opened grants by session and grant-at, needs the bytes only to open one).
// An entry counts only for the grant-at it was read with. Bounded: at
// maxCachedGrants it forgets them all, and they are read again.
type grantCache struct {
	mu sync.Mutex
	m  map[string]storedGrant
}

const maxCachedGrants = 4096

func (c *grantCache) get(gk string) (storedGrant, bool) {
	c.mu.Lock()
	g, ok := c.m[gk]
	c.mu.Unlock()
	return g, ok
}

func (c *grantCache) put(gk string, g storedGrant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedGrants {
		c.m = make(map[string]storedGrant)
	}
	c.m[gk] = g
}

func (c *grantCache) drop(gk string) {
	c.mu.Lock()
	delete(c.m, gk)
	c.mu.Unlock()
}

// storedGrant is a grant record, decoded.
type storedGrant struct {
	keepUntil, at int64
	grant         string
}

// readGrant reads the grant record under grant key gk, hot first. Its grant
// shares the memory of the bytes bigcache returned (a copy made for this
// read, never written again). ok is false when there is none.
func (s *Store) readGrant(gk string) (g storedGrant, ok bool, err error) {
	b, err := get(s.hot, gk)
	if b == nil && err == nil {
		b, err = get(s.cold, gk)
	}
	if err != nil || b == nil {
		return g, false, err
	}
	if len(b) < grantHeader {
		return g, false, fmt.Errorf("memory store: grant record: %w", authz.ErrCorruptRecord)
	}
	g.keepUntil, g.at = int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))
	if rest := b[grantHeader:]; len(rest) > 0 {
		g.grant = unsafe.String(&rest[0], len(rest))
	}
	return g, true, nil
}

// grantUntil is the keep-until of a grant record.
func grantUntil(b []byte) (int64, bool) {
	if len(b) < grantHeader {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b)), true
}

// attachGrant gives r, read from the record under k with k's stripe held,
// its grant. None stored means none (a session begun with a grant-at and no
// grant). Written grant first, then record, under the stripe, the two agree
// on the grant-at; after a restart they may not (a snapshot is not taken at
// one instant): the grant record is then the session's grant, and its
// grant-at the session's.
func (s *Store) attachGrant(k string, r *authz.Session) error {
	g, ok, err := s.readGrant(grantKeyOf(k))
	if err != nil || !ok {
		return err
	}
	r.Grant, r.GrantAt = g.grant, g.at
	return nil
}

// restoreGrant merges grant g (its Grant, GrantAt and KeepUntil) of the
// session under k into the store, loading a state file: kept when the
// session is not known to have ended, and when no newer grant is there; a
// session restored later as ended drops it.
func (s *Store) restoreGrant(k string, g *authz.Session, now int64) error {
	if g.KeepUntil < now {
		return nil
	}
	r, found, _, err := s.record(k, now)
	if err != nil {
		return err
	}
	if found && r.Ended() {
		return nil
	}
	if old, ok, err := s.readGrant(grantKeyOf(k)); err != nil {
		return err
	} else if ok && old.at >= g.GrantAt {
		return nil
	}
	if found && r.KeepUntil > g.KeepUntil {
		g.KeepUntil = r.KeepUntil
	}
	return s.putGrant(k, g)
}

// loadSession is session for Load, which holds no stripe (gk is k's grant
// key): the grant is attached when its grant-at matches the record's; when
// it does not (a refresh or an end between the two reads), both are read
// again with the stripe held. Token sessions have no grant and never read
// one.
func (s *Store) loadSession(k, gk string, now int64, r *authz.Session) (bool, error) {
	found, _, err := s.readRecord(k, now, r)
	if err != nil || !found || !needsGrant(r) {
		return found, err
	}
	if g, ok := s.grants.get(gk); ok && g.at == r.GrantAt {
		r.Grant = g.grant
		return true, nil
	}
	if g, ok, err := s.readGrant(gk); err != nil {
		*r = authz.Session{}
		return false, err
	} else if ok && g.at == r.GrantAt {
		s.cacheGrant(k, gk, now, g)
		r.Grant = g.grant
		return true, nil
	}
	return s.lockedSession(k, now, r)
}

// cacheGrant keeps grant g of the session under k in the cache of grants in
// use, unless the session has ended or changed its grant meanwhile: an end
// (retire, S15) writes the ended record before it drops the grant and the
// cache entry, so either that drop comes after this put, or the record read
// here after it is the ended one.
func (s *Store) cacheGrant(k, gk string, now int64, g storedGrant) {
	s.grants.put(gk, g)
	var r authz.Session
	if found, _, err := s.readRecord(k, now, &r); err != nil || !found || r.Ended() || r.GrantAt != g.at {
		s.grants.drop(gk)
	}
}

// lockedSession is session into *r with k's stripe taken.
func (s *Store) lockedSession(k string, now int64, r *authz.Session) (found bool, err error) {
	st := &s.stripes[s.stripeOf(k)]
	st.Lock()
	defer st.Unlock()
	*r, found, _, err = s.session(k, now)
	return found, err
}

// keepGrant makes the grant of the session under k, if any, keep until at
// least keepUntil, as its session does (a restored record may keep longer
// than the grant restored before it).
func (s *Store) keepGrant(k string, keepUntil int64) error {
	g, ok, err := s.readGrant(grantKeyOf(k))
	if err != nil || !ok || g.keepUntil >= keepUntil {
		return err
	}
	return s.putGrant(k, &authz.Session{KeepUntil: keepUntil, GrantAt: g.at, Grant: g.grant})
}
