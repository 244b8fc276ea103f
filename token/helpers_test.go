package token

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

const testIssuer = "https://idp.example.com/realms/crm"

// t0Unix is where the tests' clock starts (2030-01-02), so that nothing
// depends on the wall clock.
const t0Unix = 1_893_553_445

type fakeClock = testutil.Clock

type countObserver struct {
	hits, misses, refreshOK, refreshFailed atomic.Int64
}

func (o *countObserver) CacheHit()  { o.hits.Add(1) }
func (o *countObserver) CacheMiss() { o.misses.Add(1) }
func (o *countObserver) KeysRefreshed(_ string, ok bool) {
	if ok {
		o.refreshOK.Add(1)
	} else {
		o.refreshFailed.Add(1)
	}
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer = testutil.SyncBuffer

type env struct {
	t     *testing.T
	clock *fakeClock
	obs   *countObserver
	logs  *syncBuffer
	p     *Provider
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clock: testutil.NewClock(time.Unix(t0Unix, 0)), obs: &countObserver{}, logs: &syncBuffer{}, dir: t.TempDir()}
	e.p = NewProvider(Options{
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:    e.clock,
		Observer: e.obs,
	})
	return e
}

func newIDP(t *testing.T, alg string) *idp.IDP {
	t.Helper()
	d, err := idp.New(alg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// writeJWKS (re)writes the env's key file with the keys of idps.
func (e *env) writeJWKS(idps ...*idp.IDP) string {
	e.t.Helper()
	path := filepath.Join(e.dir, "jwks.json")
	if err := os.WriteFile(path, idp.JWKSOf(idps...), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func baseConfig(jwksFile string) Config {
	return Config{
		Issuer:             testIssuer,
		Audiences:          []string{"crm", "crm-api"},
		JWKSFile:           jwksFile,
		ClockSkew:          30 * time.Second,
		BindClaims:         []string{"tid"},
		RefreshInterval:    5 * time.Minute,
		MinRefreshInterval: time.Minute,
	}
}

func (e *env) verifier(cfg Config) authz.Verifier {
	e.t.Helper()
	v, err := e.p.Verifier(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// claims returns valid claims around now, with overrides; a nil override
// deletes the claim.
func claims(now time.Time, over map[string]any) map[string]any {
	c := map[string]any{
		"iss":       testIssuer,
		"aud":       "crm",
		"sub":       "alice",
		"sid":       "s-1",
		"tid":       "tenant-1",
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"auth_time": now.Add(-time.Minute).Unix(),
		"exp":       now.Add(time.Hour).Unix(),
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func mint(t testing.TB, d *idp.IDP, c map[string]any) string {
	t.Helper()
	tok, err := d.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wantErr checks err against a reason and detail ("" accepts any detail).
func wantErr(t *testing.T, err error, reason authz.Reason, detail string) {
	t.Helper()
	var te *authz.TokenError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *authz.TokenError %s %q", err, reason, detail)
	}
	if te.Reason != reason || (detail != "" && te.Detail != detail) {
		t.Fatalf("err = %s %q, want %s %q", te.Reason, te.Detail, reason, detail)
	}
}

func verify(v authz.Verifier, tok string, now time.Time) (*authz.Claims, error) {
	return v.Verify(context.Background(), tok, now)
}
