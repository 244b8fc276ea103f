package token

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	e := newEnv(t)
	a, b := newIDP(t, idp.RS256), newIDP(t, idp.ES256)
	path := e.writeJWKS(a)
	v := e.verifier(baseConfig(path)) // MinRefreshInterval 1m
	tokB := func() string { return mint(t, b, claims(e.clock.Now(), nil)) }

	_, err := verify(v, tokB(), e.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "unknown key id")
	e.writeJWKS(a, b) // the IdP publishes b
	e.clock.Advance(30 * time.Second)
	_, err = verify(v, tokB(), e.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "unknown key id") // too soon to refetch
	if n := e.obs.refreshOK.Load(); n != 1 {
		t.Fatalf("%d loads, want only the initial one", n)
	}
	e.clock.Advance(31 * time.Second)
	if _, err := verify(v, tokB(), e.clock.Now()); err != nil {
		t.Fatalf("after the refetch: %v", err)
	}
	if n := e.obs.refreshOK.Load(); n != 2 {
		t.Fatalf("%d loads, want 2", n)
	}
	// Random kids cannot make the gate hammer the IdP.
	for i := range 10 {
		tok, _ := a.MintWith(map[string]any{"kid": "k" + string(rune('a'+i))}, claims(e.clock.Now(), nil))
		_, err := verify(v, tok, e.clock.Now())
		wantErr(t, err, authz.ReasonInvalidToken, "unknown key id")
	}
	if n := e.obs.refreshOK.Load(); n != 2 {
		t.Fatalf("%d loads after unknown kids, want 2", n)
	}
}

// jwksServer serves whatever body/status the test sets and counts requests.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int
	hits   atomic.Int64
	gate   chan struct{} // when set, requests wait for it to close
	seen   chan struct{} // when set, told of each request
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status, gate, seen := s.body, s.status, s.gate, s.seen
		s.mu.Unlock()
		if seen != nil {
			seen <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func urlConfig(uri string) Config {
	cfg := baseConfig("")
	cfg.JWKSURI = uri + "/jwks?secret=x"
	return cfg
}

func TestJWKSURLKeepsLastGoodKeys(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.RS256)
	srv := newJWKSServer(t, a.JWKS())
	v := e.verifier(urlConfig(srv.URL)) // not fetched yet: the first token does
	sub := 0
	fresh := func() string { // a new token each time, so the cache proves nothing
		sub++
		return mint(t, a, claims(e.clock.Now(), map[string]any{"sub": "user" + string(rune('a'+sub))}))
	}
	if _, err := verify(v, fresh(), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	bigKey, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"}}})
	for _, tt := range []struct {
		name   string
		status int
		body   []byte
	}{
		{"server error", http.StatusInternalServerError, a.JWKS()},
		{"garbage", http.StatusOK, []byte("<html>oops</html>")},
		{"no keys", http.StatusOK, []byte(`{"keys":[]}`)},
		{"only a symmetric key", http.StatusOK, bigKey},
		{"larger than 1 MiB", http.StatusOK, []byte(`{"keys":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.set(tt.status, tt.body)
			failed := e.obs.refreshFailed.Load()
			e.clock.Advance(6 * time.Minute)
			e.p.refreshDue(context.Background())
			if e.obs.refreshFailed.Load() != failed+1 {
				t.Fatal("refresh did not fail")
			}
			if _, err := verify(v, fresh(), e.clock.Now()); err != nil {
				t.Fatalf("last good keys lost: %v", err)
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		srv.Close()
		e.clock.Advance(6 * time.Minute)
		e.p.refreshDue(context.Background())
		if _, err := verify(v, fresh(), e.clock.Now()); err != nil {
			t.Fatalf("last good keys lost: %v", err)
		}
	})
	logs := e.logs.String()
	if !strings.Contains(logs, "keeping the last good keys") {
		t.Fatalf("no warning logged:\n%s", logs)
	}
	if strings.Contains(logs, "secret=x") || strings.Contains(logs, "eyJ") {
		t.Fatalf("logs leak a query string or a token:\n%s", logs)
	}
}

func TestConcurrentUnknownKidFetchesOnce(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.ES256)
	srv := newJWKSServer(t, a.JWKS())
	gate := make(chan struct{})
	srv.gate = gate
	v := e.verifier(urlConfig(srv.URL))
	tok := mint(t, a, claims(e.clock.Now(), nil))

	const n = 32
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := verify(v, tok, e.clock.Now())
			errs <- err
		}()
	}
	close(gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if h := srv.hits.Load(); h != 1 {
		t.Fatalf("%d fetches, want 1", h)
	}
}

func TestKeySetsAreShared(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.RS256)
	path := e.writeJWKS(a)
	cfg := baseConfig(path)
	v1 := e.verifier(cfg)
	cfg.Audiences = []string{"other"}
	cfg.RefreshInterval = time.Minute
	// A relative spelling of the same file is the same source.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Skip("no relative path to the temp dir")
	}
	cfg.JWKSFile = rel
	v2 := e.verifier(cfg)
	if v1.(*verifier).ks != v2.(*verifier).ks {
		t.Fatal("two verifiers of one file have separate key sets")
	}
	if n := e.obs.refreshOK.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
	if got := time.Duration(v1.(*verifier).ks.every.Load()); got != time.Minute {
		t.Fatalf("refresh interval %v, want the shortest asked for", got)
	}
}

func TestVerifierRejectsBadKeyFiles(t *testing.T) {
	dir := t.TempDir()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	priv := newIDP(t, idp.EdDSA)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	write := func(name string, v any) string {
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	for _, tt := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "nope.json"), "no such file"},
		{"not JSON", write("garbage.json", []byte("keys")), "JWKS"},
		{"RSA 1024", write("small.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &small.PublicKey, KeyID: "s"}}}), "no usable"},
		{"encryption key", write("enc.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv.PublicKey(), KeyID: "e", Use: "enc"}}}), "no usable"},
		{"private key", write("priv.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: edPriv, KeyID: "p"}}}), "no usable"},
		{"key alg HS256", write("hs.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv.PublicKey(), KeyID: "h", Algorithm: "HS256"}}}), "no usable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := e.p.Verifier(baseConfig(tt.path))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "jwks_file") {
				t.Fatalf("err = %v, want one about jwks_file with %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	e := newEnv(t)
	path := e.writeJWKS(newIDP(t, idp.RS256))
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, "issuer: required"},
		{"no audience", func(c *Config) { c.Audiences = nil }, "audiences"},
		{"no keys", func(c *Config) { c.JWKSFile = "" }, "one of jwks_file and jwks_uri"},
		{"both keys", func(c *Config) { c.JWKSURI = "https://idp/jwks" }, "exclusive"},
		{"relative URL", func(c *Config) { c.JWKSFile, c.JWKSURI = "", "/jwks" }, "jwks_uri"},
		{"HS256", func(c *Config) { c.Algorithms = []string{"RS256", "HS256"} }, `"HS256" is not an accepted`},
		{"none", func(c *Config) { c.Algorithms = []string{"none"} }, `"none" is not an accepted`},
		{"skew", func(c *Config) { c.ClockSkew = time.Hour }, "clock_skew"},
		{"negative size", func(c *Config) { c.MaxBytes = -1 }, "max_bytes"},
		{"empty bind claim", func(c *Config) { c.BindClaims = []string{""} }, "bind_claims"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(path)
			tt.edit(&cfg)
			if _, err := e.p.Verifier(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	// Every problem is reported at once.
	_, err := e.p.Verifier(Config{Algorithms: []string{"HS256"}})
	if err == nil || strings.Count(err.Error(), "\n") < 3 {
		t.Fatalf("err = %v, want all problems", err)
	}
}

// A JWK without "alg" lets the token pick any algorithm of the key's type;
// the signature then has to match that algorithm.
func TestKeyWithoutAlg(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	path := filepath.Join(e.dir, "noalg.json")
	os.WriteFile(path, must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: d.PublicKey(), KeyID: d.KeyID()}}})), 0o644)
	v := e.verifier(baseConfig(path))
	now := e.clock.Now()
	if _, err := verify(v, mint(t, d, claims(now, nil)), now); err != nil {
		t.Fatal(err)
	}
	tok, _ := d.MintWith(map[string]any{"alg": "PS256"}, claims(now, nil))
	_, err := verify(v, tok, now)
	wantErr(t, err, authz.ReasonInvalidToken, "bad signature")
}

func TestRunRefreshesUntilDone(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.ES256)
	srv := newJWKSServer(t, a.JWKS())
	srv.seen = make(chan struct{}, 1)
	v := e.verifier(urlConfig(srv.URL))
	if srv.hits.Load() != 0 {
		t.Fatal("a jwks_uri was fetched by Verifier")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.p.Run(ctx)
		close(done)
	}()
	<-srv.seen // Run's first round fetches a new URL right away
	cancel()
	<-done
	if _, err := verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if srv.hits.Load() != 1 {
		t.Fatalf("%d fetches, want 1", srv.hits.Load())
	}
}

// A key set that no verifier uses any more is forgotten, so Run stops
// fetching a source that policies no longer name.
func TestUnusedKeySetsAreDropped(t *testing.T) {
	e := newEnv(t)
	path := e.writeJWKS(newIDP(t, idp.RS256))
	if _, err := e.p.Verifier(baseConfig(path)); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if n := len(e.p.liveSets()); n != 0 {
		t.Fatalf("%d key sets still live", n)
	}
}
