package memory

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
)

// The index of sessions by user and by scope (authz.SessionIndex) is one
// record per key in cold, under "i" policy NUL digest: entries of an 8-byte
// big-endian keep-until, a 2-byte id length and the id. A record keeps
// until its latest entry does; entries past their keep-until are dropped
// when it is next written, and at most authz.MaxIndexed are kept.
//
// By scope, the scope record (under "c" policy NUL digest) indexes its
// current session itself, until its own keep-until: Begin writes the index
// record of a scope only when a session displaces another as the scope's
// current one, and files the displaced one there. Most scopes hold one
// session, which costs no index record. The two records of a digest share
// a stripe (stripeOf), under which Begin changes both and Indexed reads
// both, so that a session is always in one or the other.
const indexTag = 'i'

var _ authz.SessionIndex = (*Store)(nil)

type indexEntry struct {
	id        string
	keepUntil int64
}

func indexKey(policy string, d authz.Digest) string {
	b := make([]byte, 0, 2+len(policy)+len(d))
	b = append(b, indexTag)
	b = append(b, policy...)
	b = append(b, 0)
	return string(append(b, d[:]...))
}

// decodeIndex reads an index record; ok is false for bytes that are not one.
func decodeIndex(b []byte) (out []indexEntry, ok bool) {
	for len(b) > 0 {
		if len(b) < 10 {
			return nil, false
		}
		ku := int64(binary.BigEndian.Uint64(b))
		n := int(binary.BigEndian.Uint16(b[8:]))
		if len(b) < 10+n {
			return nil, false
		}
		out = append(out, indexEntry{id: string(b[10 : 10+n]), keepUntil: ku})
		b = b[10+n:]
	}
	return out, true
}

func encodeIndex(list []indexEntry) []byte {
	var b []byte
	for _, e := range list {
		b = binary.BigEndian.AppendUint64(b, uint64(e.keepUntil))
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.id)))
		b = append(b, e.id...)
	}
	return b
}

// indexUntil is the keep-until of an index record: its latest entry's.
func indexUntil(b []byte) (int64, bool) {
	list, ok := decodeIndex(b)
	if !ok {
		return 0, false
	}
	var ku int64
	for _, e := range list {
		ku = max(ku, e.keepUntil)
	}
	return ku, true
}

// mergeIndex joins entries into list: an id keeps the later keep-until;
// entries past now are dropped, and past authz.MaxIndexed those that expire
// first.
func mergeIndex(list, add []indexEntry, now int64) []indexEntry {
	for _, a := range add {
		if i := slices.IndexFunc(list, func(e indexEntry) bool { return e.id == a.id }); i >= 0 {
			list[i].keepUntil = max(list[i].keepUntil, a.keepUntil)
		} else {
			list = append(list, a)
		}
	}
	list = slices.DeleteFunc(list, func(e indexEntry) bool { return e.keepUntil < now })
	if len(list) > authz.MaxIndexed {
		slices.SortFunc(list, func(a, b indexEntry) int { return int(min(max(b.keepUntil-a.keepUntil, -1), 1)) })
		list = list[:authz.MaxIndexed]
	}
	return list
}

// index files session r under its index keys until keepUntil. Callers hold
// no stripe: it takes each key's stripe in turn, one at a time.
func (s *Store) index(r *authz.Session, keepUntil int64) error {
	ik := authz.IndexKeys(r)
	for i, d := range ik {
		if i > 0 && d == ik[0] {
			continue // filed under its scope alone
		}
		k := indexKey(r.Policy, d)
		if err := s.indexAdd(k, []indexEntry{{id: r.ID, keepUntil: keepUntil}}); err != nil {
			return err
		}
	}
	return nil
}

// indexKeyOfScope is the index key of the digest that scope key ck names.
func indexKeyOfScope(ck string) string { return string(indexTag) + ck[1:] }

func (s *Store) indexAdd(k string, add []indexEntry) error {
	st := &s.stripes[s.stripeOf(k)]
	st.Lock()
	defer st.Unlock()
	return s.indexAddLocked(k, add, s.now())
}

// indexAddLocked is indexAdd with k's stripe held.
func (s *Store) indexAddLocked(k string, add []indexEntry, now int64) error {
	b, err := get(s.cold, k)
	if err != nil {
		return err
	}
	list, ok := decodeIndex(b)
	if !ok {
		return fmt.Errorf("memory store: index record: %w", authz.ErrCorruptRecord)
	}
	return set(s.cold, k, encodeIndex(mergeIndex(list, add, now)))
}

// Indexed implements authz.SessionIndex.
func (s *Store) Indexed(_ context.Context, policy string, key authz.Digest) ([]authz.Session, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	list, err := s.indexed(policy, key)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []authz.Session
	for _, e := range list {
		if e.keepUntil < now {
			continue
		}
		k := sessionKey(policy, e.id)
		st := &s.stripes[s.stripeOf(k)]
		st.Lock()
		r, found, _, err := s.session(k, now)
		st.Unlock()
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, r)
		}
	}
	return out, nil
}

// indexed returns the entries indexed under key: its index record's and,
// when key names a scope, the scope record's current session.
func (s *Store) indexed(policy string, key authz.Digest) ([]indexEntry, error) {
	k := indexKey(policy, key)
	ck := scopeKeyOfIndex(k)
	st := &s.stripes[s.stripeOf(k)]
	st.Lock()
	b, err := get(s.cold, k)
	var sc authz.ScopeState
	found := false
	if err == nil {
		sc, found, err = s.scope(ck, s.now())
	}
	st.Unlock()
	if err != nil {
		return nil, err
	}
	list, ok := decodeIndex(b)
	if !ok {
		return nil, fmt.Errorf("memory store: index record: %w", authz.ErrCorruptRecord)
	}
	if found && sc.Current != "" && !slices.ContainsFunc(list, func(e indexEntry) bool { return e.id == sc.Current }) {
		list = append(list, indexEntry{id: sc.Current, keepUntil: sc.KeepUntil})
	}
	return list, nil
}

// scopeKeyOfIndex is the scope key of the digest that index key k names.
func scopeKeyOfIndex(k string) string { return string(scopeTag) + k[1:] }

// Sessions implements authz.SessionIndex: it walks hot, then cold, and
// reads each session found under its stripe (hot holds the newer copy).
func (s *Store) Sessions(_ context.Context, policy string, fn func(authz.Session) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	prefix := string(appendSessionKey(nil, policy, ""))
	if policy == "" {
		prefix = string([]byte{sessionTag})
	}
	seen := map[string]bool{}
	now := s.now()
	for _, c := range []*bigcache.BigCache{s.hot, s.cold} {
		for it := c.Iterator(); it.SetNext(); {
			e, err := it.Value()
			if err != nil {
				continue
			}
			k := e.Key()
			if len(k) < len(prefix) || k[:len(prefix)] != prefix || seen[k] {
				continue
			}
			seen[k] = true
			st := &s.stripes[s.stripeOf(k)]
			st.Lock()
			r, found, _, err := s.session(k, now)
			st.Unlock()
			if err != nil {
				return err
			}
			if found {
				if err := fn(r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
