package oidc

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/token"
)

// TestClaimsAsTokenComputesThem holds the one rule of SignedIn.Claims: they
// are what package token computes for the same JWT as an access token, so
// that a session opened by a sign-in and one opened by a bearer token of the
// same user bind to the same identity and S3 scope.
func TestClaimsAsTokenComputesThem(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.BindClaims = []string{"tid", "groups", "missing"}
	s := e.signIn(cfg)
	e.fp.setClaims(map[string]any{"iat": 1.5 + float64(e.clock.Now().Unix()), "nbf": e.clock.Now().Unix() - 10})
	b := newBrowser()
	code, state, _ := e.start(s, b, 0)
	si, err := s.Finish(context.Background(), b.request(callbackPath(code, state)))
	if err != nil {
		t.Fatal(err)
	}

	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, e.fp.key.JWKS(), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := token.NewProvider(token.Options{}).Verifier(token.Config{Issuer: e.fp.issuer(), Audiences: []string{"app"},
		JWKSFile: jwks, ClockSkew: 30 * time.Second, BindClaims: cfg.BindClaims})
	if err != nil {
		t.Fatal(err)
	}
	want, err := v.Verify(context.Background(), si.Grant.IDToken, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(si.Claims, want) {
		t.Errorf("sign-in claims\n got %+v\nwant %+v (package token)", si.Claims, want)
	}
}
