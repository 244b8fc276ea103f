package memory

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// BenchmarkFootprint begins n sessions shaped as the engine makes them (a
// 32-character id, a 36-character subject, a scope without sid): token-mode
// sessions, and sign-in sessions holding a sealed grant of realistic size
// (2,206 bytes: package oidc's BenchmarkSeal grant, JWS access and ID
// tokens of 1.2 and 1 KB kept as their decoded segments, a 400-byte opaque
// refresh token, three identity headers; 2,757 in grant format 1). With
// touches > 0 every session then records that much activity, as a session
// active for touches × activity_granularity does within the hot window. It
// reports, per session, where the memory goes:
//
//   - records/session: bigcache entries per session (session and scope
//     record: the scope record indexes its one session, by scope and, as
//     the token had no sid, by user; and a sign-in session's grant);
//
//   - data-B/session: what the entries of both tiers hold (bigcache's
//     18-byte header and queue length prefix, the key, the encoded record;
//     live entries only: the dead copies that activity leaves in hot show in
//     queue-B);
//
//   - queue-B/session: the bytes bigcache's queues have allocated for them
//     (data plus the room of their doubling growth);
//
//   - heap-B/session: the Go heap in use, queues and bigcache's hash
//     indexes included;
//
//   - rss-MB: the process's resident set after a collection;
//
//   - rss-min-MB: the resident set once the free memory is returned to the
//     system (debug.FreeOSMemory): what the sessions need, without the
//     queue arrays that growth left behind and the runtime still holds
//     (how long it holds them depends on GOGC and GOMEMLIMIT).
//
//     go test -run '^$' -bench Footprint -benchtime 1x ./store/memory/
func BenchmarkFootprint(b *testing.B) {
	for _, tc := range []struct {
		kind              string
		n, grant, touches int
	}{
		{"token", 100_000, 0, 0}, {"token", 1_000_000, 0, 0}, {"token", 100_000, 0, 10},
		{"sign-in", 100_000, 2206, 0}, {"sign-in", 1_000_000, 2206, 0}, {"sign-in", 100_000, 2206, 10},
	} {
		b.Run(fmt.Sprintf("%s/sessions=%d/touches=%d", tc.kind, tc.n, tc.touches), func(b *testing.B) {
			if testing.Short() && tc.n > 100_000 {
				b.Skip("a million sessions take a while to set up")
			}
			for b.Loop() {
				footprint(b, tc.n, tc.grant, tc.touches)
			}
		})
	}
}

func footprint(b *testing.B, n, grant, touches int) {
	b.StopTimer()
	defer b.StartTimer()
	base := testutil.HeapInUse()
	s := newStore(b, Options{Clock: newClock()})
	sealed := make([]byte, grant)
	_, _ = rand.Read(sealed)
	ids := make([]string, n)
	for i := range n {
		r := footprintSession(i)
		if grant > 0 {
			r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, string(sealed), r.Created
		}
		if err := s.Begin(ctx, r); err != nil {
			b.Fatal(err)
		}
		ids[i] = r.ID
	}
	for k := 1; k <= touches; k++ {
		for _, id := range ids {
			if _, _, err := s.Touch(ctx, "crm", id, authz.Touch{LastActivity: t0 + int64(k)*18_000}); err != nil {
				b.Fatal(err)
			}
		}
	}
	heap := testutil.HeapInUse() - base
	data := entryBytes(s)
	hot, cold := s.Len()
	queues := s.hot.Capacity() + s.cold.Capacity()
	per := func(v uint64) float64 { return float64(v) / float64(n) }
	b.ReportMetric(float64(hot+cold)/float64(n), "records/session")
	b.ReportMetric(per(uint64(data)), "data-B/session")
	b.ReportMetric(per(uint64(queues)), "queue-B/session")
	b.ReportMetric(per(heap), "heap-B/session")
	b.ReportMetric(float64(testutil.RSS())/(1<<20), "rss-MB")
	debug.FreeOSMemory()
	b.ReportMetric(float64(testutil.RSS())/(1<<20), "rss-min-MB")
	runtime.KeepAlive(s)
}

// footprintSession is session i as the engine begins it for a token
// without sid: a random 24-byte id in base64url, a UUID-long subject.
func footprintSession(i int) *authz.Session {
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	sub := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
	r := newSession(base64.RawURLEncoding.EncodeToString(raw[:]), authz.ScopeDigest("https://idp", sub, ""))
	r.Subject, r.Identity = sub, authz.IdentityDigest("https://idp", sub, nil)
	r.UserScope = true // its scope is the user's: filed under it alone
	return r
}

// entryBytes is what the entries of both tiers take in bigcache's queues:
// per entry its header (timestamp, hash, key length: 18 bytes), key and
// value, and the queue's length prefix (a varint, 2 bytes at these sizes).
func entryBytes(s *Store) int {
	total := 0
	for _, c := range []*bigcache.BigCache{s.hot, s.cold} {
		for it := c.Iterator(); it.SetNext(); {
			if e, err := it.Value(); err == nil {
				total += 18 + 2 + len(e.Key()) + len(e.Value())
			}
		}
	}
	return total
}
