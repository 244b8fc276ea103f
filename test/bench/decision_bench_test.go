package bench

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/internal/testutil"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

// BenchmarkDecision is engine.Check with the real parts: the hot path (a
// cached token and a live session), a first-seen token (RS256 verification
// and a new session), and denials.
func BenchmarkDecision(b *testing.B) {
	ctx := context.Background()
	b.Run("live-session", func(b *testing.B) {
		g := newGate(b, nil, 0)
		r := envoy.ToRequest(g.signIn(b, "alice"))
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if d := g.engine.Check(ctx, &r); !d.Allow || d.User == "" {
				b.Fatalf("%+v", d)
			}
		}
	})
	b.Run("new-session", func(b *testing.B) {
		// Every token is first seen by a fresh gate: the pool is replayed
		// against a new gate (new verifier cache, new store), set up with
		// the timer stopped, whenever it runs out.
		fx, err := fixture.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		toks, err := fx.Tokens("user-", 512, time.Now().Add(-time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		reqs := make([]authz.Request, len(toks))
		for i, t := range toks {
			reqs[i] = envoy.ToRequest(fixture.Request(appPath, t, "", false))
		}
		var g *gate
		i := len(reqs)
		b.ReportAllocs() // no cpu-ns/op: it would count the setups
		for b.Loop() {
			if i == len(reqs) {
				b.StopTimer()
				g, i = newGate(b, fx, 0), 0
				b.StartTimer()
			}
			if d := g.engine.Check(ctx, &reqs[i]); !d.Allow || len(d.SetCookie) != 1 {
				b.Fatalf("%+v", d)
			}
			i++
		}
	})
	for _, browser := range []bool{true, false} {
		name := map[bool]string{true: "deny-302-browser", false: "deny-401-api"}[browser]
		b.Run(name, func(b *testing.B) {
			g := newGate(b, nil, 0)
			r := envoy.ToRequest(fixture.Request(appPath, "", "", browser))
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if d := g.engine.Check(ctx, &r); d.Allow {
					b.Fatalf("%+v", d)
				}
			}
		})
	}
}

// BenchmarkService is envoy.Service.Check, the gRPC handler in protobuf
// messages, short of the transport: ToRequest, engine.Check and ToResponse.
// (The server decodes and encodes wire bytes instead: envoy's
// BenchmarkDecodeRequest and BenchmarkEncodeAnswer.)
func BenchmarkService(b *testing.B) {
	for _, c := range serviceCases(b) {
		b.Run(c.name, func(b *testing.B) {
			check := c.service(b)
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				check()
			}
		})
	}
}

// serviceCase is a request of BenchmarkService and BenchmarkStack.
type serviceCase struct {
	name string
	req  func(g *gate) *authv3.CheckRequest
}

func serviceCases(b *testing.B) []serviceCase {
	return []serviceCase{
		{"live-session", func(g *gate) *authv3.CheckRequest { return g.signIn(b, "alice") }},
		{"api-client", func(g *gate) *authv3.CheckRequest { return g.apiClient(b, "alice") }},
		{"oidc-session", func(g *gate) *authv3.CheckRequest { return g.signedIn(b) }},
		{"deny-302-browser", func(*gate) *authv3.CheckRequest { return fixture.Request(appPath, "", "", true) }},
	}
}

// service returns a function that runs c's request through the gRPC
// service of a new gate.
func (c serviceCase) service(b *testing.B) func() {
	g := newGate(b, nil, 0)
	s := envoy.NewService(g.engine)
	req := c.req(g)
	return func() {
		if _, err := s.Check(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessions is the hot decision among many live sessions in the
// embedded store, and what they cost: heap, RSS, the wall time of a full
// collection and the stop-the-world pauses of the collections during the
// loop and five forced ones. Decisions
// cycle through 1,000 signed-in users (real tokens, cached) while the other
// sessions are records put straight into the store: minting a million RS256
// tokens would take a quarter of an hour. The decision must not slow down,
// and GC pauses must not grow, with the count.
func BenchmarkSessions(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			if testing.Short() && n > 10_000 {
				b.Skip("a million sessions take a while to set up")
			}
			benchmarkSessions(b, n)
		})
	}
}

func benchmarkSessions(b *testing.B, n int) {
	const users = 1000
	ctx := context.Background()
	g := newGate(b, nil, 0)
	base := testutil.HeapInUse()
	fill(b, g, n-users)
	reqs := make([]authz.Request, users)
	for i := range reqs {
		reqs[i] = envoy.ToRequest(g.signIn(b, fmt.Sprint("user-", i)))
	}
	heap := testutil.HeapInUse() - base
	gcWall := fullGC()
	pauses := newPauseWatch()
	b.ReportAllocs()
	stop := reportCPU(b)
	i := 0
	for b.Loop() {
		if d := g.engine.Check(ctx, &reqs[i%users]); !d.Allow {
			b.Fatalf("%+v", d)
		}
		i++
	}
	stop()
	// The loop may not fill the heap enough to collect (a large heap
	// collects rarely): a few forced collections make sure pauses are seen.
	for range 5 {
		runtime.GC()
	}
	p50, max := pauses.since()
	hot, cold := g.store.Len()
	b.ReportMetric(float64(hot+cold), "records")
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
	b.ReportMetric(float64(testutil.RSS())/(1<<20), "rss-MB")
	b.ReportMetric(float64(gcWall.Microseconds())/1000, "full-gc-ms")
	b.ReportMetric(float64(p50.Microseconds()), "gc-pause-p50-µs")
	b.ReportMetric(float64(max.Microseconds()), "gc-pause-max-µs")
}

// fill puts n live sessions of n users into the store, shaped as the engine
// makes them (24-byte random id as base64url, identity and scope digests).
func fill(b *testing.B, g *gate, n int) {
	now := time.Now().UnixMilli()
	ctx := context.Background()
	for i := range n {
		sub := fmt.Sprint("filler-", i)
		s := authz.Session{
			ID: fmt.Sprintf("%032d", i), Policy: fixture.Policy, Subject: sub,
			Identity: authz.IdentityDigest(fixture.Issuer, sub, nil), Scope: authz.ScopeDigest(fixture.Issuer, sub, ""),
			SignIn: now, Created: now, LastActivity: now, KeepUntil: now + (9 * time.Hour).Milliseconds(),
			UserScope: true, // as the engine begins a token without sid
		}
		if err := g.store.Begin(ctx, &s); err != nil {
			b.Fatal(err)
		}
	}
}
