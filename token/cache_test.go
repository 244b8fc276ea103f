package token

import (
	"context"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

func TestCacheHitSkipsVerification(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	v := e.verifier(baseConfig(e.writeJWKS(d)))
	now := e.clock.Now()
	tok := mint(t, d, claims(now, nil))
	c1, err := verify(v, tok, now)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := verify(v, tok, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 || e.obs.hits.Load() != 1 || e.obs.misses.Load() != 1 {
		t.Fatalf("hits %d misses %d same claims %v", e.obs.hits.Load(), e.obs.misses.Load(), c1 == c2)
	}
	// A verifier rebuilt from the same config (a policy reload) shares the
	// entry; one with another audience list does not.
	if _, err := verify(e.verifier(baseConfig(e.writeJWKS(d))), tok, now); err != nil || e.obs.hits.Load() != 2 {
		t.Fatalf("reloaded verifier: err %v, hits %d", err, e.obs.hits.Load())
	}
	cfg := baseConfig(e.writeJWKS(d))
	cfg.Audiences = []string{"crm"}
	if _, err := verify(e.verifier(cfg), tok, now); err != nil || e.obs.misses.Load() != 2 {
		t.Fatalf("other config: err %v, misses %d", err, e.obs.misses.Load())
	}
}

func TestCacheHitRechecksTime(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.ES256)
	v := e.verifier(baseConfig(e.writeJWKS(d))) // skew 30s
	now := e.clock.Now()
	tok := mint(t, d, claims(now, map[string]any{"exp": now.Add(time.Minute).Unix()}))
	if _, err := verify(v, tok, now); err != nil {
		t.Fatal(err)
	}
	if _, err := verify(v, tok, now.Add(89*time.Second)); err != nil {
		t.Fatalf("within the skew: %v", err)
	}
	_, err := verify(v, tok, now.Add(90*time.Second))
	wantErr(t, err, authz.ReasonTokenExpired, "token expired")
	_, err = verify(v, tok, now.Add(-31*time.Second))
	wantErr(t, err, authz.ReasonInvalidToken, "not yet valid")
	if e.obs.misses.Load() != 1 {
		t.Fatalf("%d misses, want 1", e.obs.misses.Load())
	}
}

func TestFailureNotCached(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.EdDSA)
	v := e.verifier(baseConfig(e.writeJWKS(d)))
	now := e.clock.Now()
	tok := mint(t, d, claims(now, map[string]any{"nbf": now.Add(time.Hour).Unix(), "exp": now.Add(3 * time.Hour).Unix()}))
	_, err := verify(v, tok, now)
	wantErr(t, err, authz.ReasonInvalidToken, "not yet valid")
	if _, err := verify(v, tok, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if e.obs.hits.Load() != 0 || e.obs.misses.Load() != 2 {
		t.Fatalf("hits %d misses %d", e.obs.hits.Load(), e.obs.misses.Load())
	}
}

func TestCacheDiesWithKeyRotation(t *testing.T) {
	e := newEnv(t)
	a, b := newIDP(t, idp.RS256), newIDP(t, idp.RS256)
	e.writeJWKS(a)
	v := e.verifier(baseConfig(e.writeJWKS(a)))
	now := e.clock.Now()
	tok := mint(t, a, claims(now, nil))
	if _, err := verify(v, tok, now); err != nil {
		t.Fatal(err)
	}
	// A refresh that finds the same keys keeps the cache.
	e.clock.Advance(6 * time.Minute)
	e.p.refreshDue(context.Background())
	if _, err := verify(v, tok, e.clock.Now()); err != nil || e.obs.hits.Load() != 1 {
		t.Fatalf("unchanged keys: err %v hits %d", err, e.obs.hits.Load())
	}
	// The IdP revokes a: its tokens stop working at the next refresh.
	e.writeJWKS(b)
	e.clock.Advance(6 * time.Minute)
	e.p.refreshDue(context.Background())
	_, err := verify(v, tok, e.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "unknown key id")
	if e.obs.hits.Load() != 1 {
		t.Fatal("a token of a revoked key was served from the cache")
	}
	if _, err := verify(v, mint(t, b, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

// Entries are found by hash but only returned on an exact match, so a hash
// collision can never hand one token's claims to another.
func TestCacheExactMatch(t *testing.T) {
	c := newCache(cacheShards) // one entry per shard
	cl := &authz.Claims{Subject: "alice"}
	c.put(entry{hash: 7, token: "tok-a", fp: "fp", gen: 1, claims: cl, notAfter: 1e15})
	for _, tt := range []struct {
		name      string
		fp, token string
		gen       uint64
		hit       bool
	}{
		{"exact", "fp", "tok-a", 1, true},
		{"colliding token", "fp", "tok-b", 1, false},
		{"other verifier", "fp2", "tok-a", 1, false},
		{"other key generation", "fp", "tok-a", 2, false},
	} {
		if got, _, _, ok := c.get(7, tt.fp, tt.token, tt.gen); ok != tt.hit || (ok && got != cl) {
			t.Errorf("%s: hit %v, want %v", tt.name, ok, tt.hit)
		}
	}
	// A full shard evicts its oldest entry.
	c.put(entry{hash: 7 + cacheShards, token: "tok-c", fp: "fp", gen: 1, claims: cl})
	if _, _, _, ok := c.get(7, "fp", "tok-a", 1); ok {
		t.Error("full shard kept its oldest entry")
	}
	if _, _, _, ok := c.get(7+cacheShards, "fp", "tok-c", 1); !ok {
		t.Error("new entry missing")
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(1000)
	for i := range 10_000 {
		c.put(entry{hash: c.hash(string(rune(i))), token: string(rune(i))})
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].ring)
		if len(c.shards[i].idx) != len(c.shards[i].ring) {
			t.Fatalf("shard %d: index %d entries, ring %d", i, len(c.shards[i].idx), len(c.shards[i].ring))
		}
	}
	if n > 1000+cacheShards {
		t.Fatalf("%d entries, want about 1000", n)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	d, _ := idp.New(idp.RS256)
	p := NewProvider(Options{})
	path := b.TempDir() + "/jwks.json"
	if err := d.WriteJWKS(path); err != nil {
		b.Fatal(err)
	}
	v, err := p.Verifier(baseConfig(path))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	tok := mint(b, d, claims(now, nil))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	for _, alg := range []string{idp.RS256, idp.ES256, idp.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			d, _ := idp.New(alg)
			p := NewProvider(Options{})
			path := b.TempDir() + "/jwks.json"
			if err := d.WriteJWKS(path); err != nil {
				b.Fatal(err)
			}
			v, err := p.Verifier(baseConfig(path))
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			tok := mint(b, d, claims(now, nil))
			vv := v.(*verifier)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := vv.verify(context.Background(), tok, now.UnixMilli()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
