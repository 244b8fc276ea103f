package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/token"
)

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys")
	os.WriteFile(good, []byte("# new\n"+strings.Repeat("11", 32)+"\n# old\n"+strings.Repeat("22", 32)+"\n"), 0o600)
	if _, err := loadKeys(good); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte(strings.Repeat("33", 31)+"\n"), 0o600)
	_, err := loadKeys(bad)
	if err == nil || !strings.Contains(err.Error(), "line 1") || strings.Contains(err.Error(), "3333") {
		t.Errorf("bad key file: %v", err)
	}
	if _, err := loadKeys(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "--session-key-file") {
		t.Errorf("missing key file: %v", err)
	}
	if k, err := loadKeys(""); err != nil || k == nil {
		t.Errorf("no key file: %v", err)
	}
}

func TestSignInFactory(t *testing.T) {
	rp, err := oidc.New(oidc.Options{Keys: oidc.RandomKeyRing()})
	if err != nil {
		t.Fatal(err)
	}
	tokens := token.NewProvider(token.Options{})
	oc := policy.OIDCConfig{Issuer: "https://idp.example.com", ClientID: "app", Scopes: []string{"openid"},
		CallbackPath: "/_sessiongate/callback", Token: policy.TokenConfig{Issuer: "https://idp.example.com",
			Audiences: []string{"app"}, ClockSkew: time.Second}}

	// A shared store without --session-key-file: refused, whatever the policy.
	if _, _, err := signInFactory(rp, tokens, true, false)("app", oc); !errors.Is(err, errNeedKeyFile) {
		t.Errorf("shared store without keys: %v", err)
	}
	si, v, err := signInFactory(rp, tokens, true, true)("app", oc)
	if err != nil || si == nil || v == nil {
		t.Fatalf("shared store with keys: %v", err)
	}
	// Keys named by the policy's token section build a token verifier now.
	oc.Token.JWKSURI = "ftp://keys.example.com"
	if _, _, err := signInFactory(rp, tokens, false, false)("app", oc); err == nil {
		t.Error("a bad jwks_uri was accepted")
	}
}
