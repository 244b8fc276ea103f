package memory

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// benchID returns a session id shaped like a real one: 22 base64url chars.
func benchID(i int) string { return fmt.Sprintf("%022d", i) }

func benchSession(i int) *authz.Session {
	r := newSession(benchID(i), authz.ScopeDigest("https://idp", fmt.Sprint("user", i), ""))
	r.Subject = fmt.Sprint("user", i)
	return r
}

func BenchmarkLoad(b *testing.B) {
	s := newStore(b, Options{Clock: newClock()})
	r := benchSession(1)
	if err := s.Begin(ctx, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if l, err := s.Load(ctx, "crm", r.ID, r.Scope); err != nil || !l.SessionFound || !l.ScopeFound {
			b.Fatal(l, err)
		}
	}
}

// BenchmarkLoadSignedIn is Load of a sign-in session, whose grant (2,757
// bytes, a realistic sealed grant) is read with it.
func BenchmarkLoadSignedIn(b *testing.B) {
	s := newStore(b, Options{Clock: newClock()})
	r := benchSession(1)
	r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, string(make([]byte, 2757)), r.Created
	if err := s.Begin(ctx, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if l, err := s.Load(ctx, "crm", r.ID, r.Scope); err != nil || len(l.Session.Grant) != 2757 {
			b.Fatal(l, err)
		}
	}
}

// BenchmarkTouch advances the session on every call, so every call writes.
func BenchmarkTouch(b *testing.B) {
	s := newStore(b, Options{Clock: newClock()})
	r := benchSession(1)
	if err := s.Begin(ctx, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	at := t0
	for b.Loop() {
		at++
		if _, found, err := s.Touch(ctx, "crm", r.ID, authz.Touch{LastActivity: at}); err != nil || !found {
			b.Fatal(found, err)
		}
	}
}

// BenchmarkLoadWithMillionSessions fills the store with a million sessions
// (and their scopes) and reports the heap they take, the time of a full
// garbage collection, which must not grow with the count, and Load's cost
// among them.
func BenchmarkLoadWithMillionSessions(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a million sessions")
	}
	const n = 1_000_000
	s := newStore(b, Options{Clock: newClock()})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	scopes := make([]authz.Digest, n)
	for i := range n {
		r := benchSession(i)
		scopes[i] = r.Scope
		if err := s.Begin(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	start := time.Now()
	runtime.GC()
	gc := time.Since(start)
	runtime.ReadMemStats(&after)

	ids := make([]string, 4096) // prebuilt, so the loop measures Load alone
	for i := range ids {
		ids[i] = benchID(i * (n / len(ids)))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := i % len(ids)
		if l, err := s.Load(ctx, "crm", ids[j], scopes[j*(n/len(ids))]); err != nil || !l.SessionFound || !l.ScopeFound {
			b.Fatal(l, err)
		}
		i++
	}
	// After the loop: b.Loop's first call resets reported metrics.
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB")
	b.ReportMetric(float64(gc.Microseconds())/1000, "gc-ms")
}
