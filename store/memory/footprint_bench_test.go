package memory

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// BenchmarkFootprint begins n sessions shaped as the engine makes them (a
// 32-character id, a 36-character subject, a scope without sid): token-mode
// sessions, and sign-in sessions holding a sealed grant of realistic size
// (2,757 bytes: package oidc's BenchmarkSeal grant, a 1.2 KB access token, a
// 1 KB ID token, a 400-byte refresh token, three identity headers). With
// touches > 0 every session then records that much activity, as a session
// active for touches × activity_granularity does within the hot window. It
// reports, per session, where the memory goes:
//
//   - records/session: bigcache entries per session (session, scope, the
//     index by user and by scope);
//
//   - data-B/session: what those entries hold (bigcache's 18-byte header,
//     the key, the encoded record);
//
//   - queue-B/session: the bytes bigcache's queues have allocated for them
//     (data plus the room of their doubling growth);
//
//   - heap-B/session: the Go heap in use, queues and bigcache's hash
//     indexes included;
//
//   - rss-MB: the process's resident set.
//
//     go test -run '^$' -bench Footprint -benchtime 1x ./store/memory/
func BenchmarkFootprint(b *testing.B) {
	for _, tc := range []struct {
		kind              string
		n, grant, touches int
	}{
		{"token", 100_000, 0, 0}, {"token", 1_000_000, 0, 0}, {"token", 100_000, 0, 10},
		{"sign-in", 100_000, 2757, 0}, {"sign-in", 100_000, 2757, 10},
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
	base := heapInUse()
	s := newStore(b, Options{Clock: newClock()})
	var data int
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
		if i == 0 {
			data = recordBytes(b, r)
		}
	}
	for k := 1; k <= touches; k++ {
		for _, id := range ids {
			if _, _, err := s.Touch(ctx, "crm", id, authz.Touch{LastActivity: t0 + int64(k)*18_000}); err != nil {
				b.Fatal(err)
			}
		}
	}
	heap := heapInUse() - base
	hot, cold := s.Len()
	queues := s.hot.Capacity() + s.cold.Capacity()
	per := func(v uint64) float64 { return float64(v) / float64(n) }
	b.ReportMetric(float64(hot+cold)/float64(n), "records/session")
	b.ReportMetric(float64(data), "data-B/session")
	b.ReportMetric(per(uint64(queues)), "queue-B/session")
	b.ReportMetric(per(heap), "heap-B/session")
	b.ReportMetric(float64(rssBytes())/(1<<20), "rss-MB")
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
	return r
}

// recordBytes is what the entries of session r take in bigcache's queues:
// per entry its header (timestamp, hash, key length: 18 bytes), key and
// value, and the queue's length prefix (a varint, 2 bytes at these sizes).
func recordBytes(b *testing.B, r *authz.Session) int {
	sk, ck := keys(r.Policy, r.ID, r.Scope)
	keyed := []string{sk, ck}
	for _, d := range authz.IndexKeys(r) {
		keyed = append(keyed, indexKey(r.Policy, d))
	}
	total := 0
	for i, k := range keyed {
		total += 18 + 2 + len(k) + footprintValue(b, r, i)
	}
	return total
}

// footprintValue is the encoded size of entry i of r: its session record,
// scope record, or an index record of one entry.
func footprintValue(b *testing.B, r *authz.Session, i int) int {
	switch i {
	case 0:
		v, err := r.AppendKeyed(nil)
		if err != nil {
			b.Fatal(err)
		}
		return len(v)
	case 1:
		st := authz.ScopeState{Current: r.ID, KeepUntil: r.KeepUntil}
		v, err := st.AppendBinary(nil)
		if err != nil {
			b.Fatal(err)
		}
		return len(v)
	}
	return len(encodeIndex([]indexEntry{{id: r.ID, keepUntil: r.KeepUntil}}))
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
