package memory

import (
	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
)

// EachLiveSession calls fn once for every session record that has not ended
// and whose KeepUntil has not passed: the metrics scrape counts active
// sessions with it. fn must not keep the pointer, which is reused.
//
// A session that died only with its S3 scope (another session of the same
// sign-in ended) has no end in its own record and is visited: checking each
// session's scope record would triple the scan's cost for a case that is
// rare, as the engine ends the sessions it can name.
//
// It visits every record, taking each bigcache shard's lock for one entry at
// a time and never a stripe, so requests keep flowing while it runs; its cost
// grows with the number of records (see BenchmarkEachLiveSession), which is
// why it serves occasional scans, not the request path. A session is visited
// once even when a stale copy of it sits in cold: hot is walked first, and a
// cold record is skipped when hot holds the key. The scan is not a snapshot:
// a record demoted from hot to cold while it runs may be visited twice, and
// one written meanwhile may be missed.
func (s *Store) EachLiveSession(fn func(*authz.Session)) error {
	if err := s.usable(); err != nil {
		return err
	}
	now := s.now()
	var r authz.Session
	walk := func(c *bigcache.BigCache, skipIfHot bool) {
		for it := c.Iterator(); it.SetNext(); {
			e, err := it.Value()
			if err != nil {
				continue
			}
			k := e.Key()
			if k == "" || k[0] != sessionTag {
				continue
			}
			// A record that does not decode is reported by Load (S9); a
			// count has nothing better to do than leave it out.
			if unmarshalSession(&r, k, e.Value()) != nil || r.Ended() || r.KeepUntil < now {
				continue
			}
			if skipIfHot {
				if b, err := get(s.hot, k); b != nil || err != nil {
					continue
				}
			}
			fn(&r)
		}
	}
	walk(s.hot, false)
	walk(s.cold, true)
	return s.usable()
}
