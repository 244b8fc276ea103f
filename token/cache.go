package token

import (
	"hash/maphash"
	"strings"
	"sync"

	"github.com/sessiongate/sessiongate/authz"
)

const cacheShards = 64 // a power of two: the shard is the hash's low bits

// entry is one verified token. The hash only finds it: a hit requires the
// exact token and verifier fingerprint, so a collision is merely a miss.
type entry struct {
	hash      uint64
	token     string
	fp        string
	gen       uint64 // generation of the keys that verified it
	notBefore int64  // Unix ms, skew applied
	notAfter  int64
	claims    *authz.Claims
}

// cache is the verified-token cache shared by a Provider's verifiers:
// bounded, sharded, and evicting the oldest entry of a full shard.
type cache struct {
	seed     maphash.Seed // per provider, so hashes are not predictable
	perShard int
	shards   [cacheShards]shard
}

type shard struct {
	mu   sync.RWMutex
	idx  map[uint64]int // hash → position in ring
	ring []entry        // grows to perShard, then wraps
	next int            // oldest position once full
}

func newCache(size int) *cache {
	c := &cache{seed: maphash.MakeSeed(), perShard: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].idx = make(map[uint64]int)
	}
	return c
}

func (c *cache) hash(token string) uint64 { return maphash.String(c.seed, token) }

// get returns the claims cached for (fp, token) if they were verified with
// the keys of generation gen. It does not allocate.
func (c *cache) get(h uint64, fp, token string, gen uint64) (cl *authz.Claims, notBefore, notAfter int64, ok bool) {
	s := &c.shards[h&(cacheShards-1)]
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, found := s.idx[h]
	if !found {
		return nil, 0, 0, false
	}
	e := &s.ring[i]
	if e.gen != gen || e.token != token || e.fp != fp {
		return nil, 0, 0, false
	}
	return e.claims, e.notBefore, e.notAfter, true
}

func (c *cache) put(e entry) {
	// The token may be a slice of its whole request (envoy's decoder keeps
	// a request's strings in one buffer): the cache keeps its own copy.
	e.token = strings.Clone(e.token)
	s := &c.shards[e.hash&(cacheShards-1)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, found := s.idx[e.hash]; found {
		s.ring[i] = e // same hash: the newer token wins the slot
		return
	}
	if len(s.ring) < c.perShard {
		s.idx[e.hash] = len(s.ring)
		s.ring = append(s.ring, e)
		return
	}
	delete(s.idx, s.ring[s.next].hash)
	s.ring[s.next] = e
	s.idx[e.hash] = s.next
	s.next = (s.next + 1) % c.perShard
}
