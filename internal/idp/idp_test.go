package idp

import (
	"bytes"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// The committed demo key of the README quickstart and its JWKS. Set
// SESSIONGATE_REGEN_DEMO_KEY=1 to write a fresh pair.
const (
	demoKeyPath  = "../../envoy/examples/demo-key.pem"
	demoJWKSPath = "../../envoy/examples/policies/keys/jwks.json"
)

func TestDemoKeyMatchesJWKS(t *testing.T) {
	if os.Getenv("SESSIONGATE_REGEN_DEMO_KEY") != "" {
		d, err := New(RS256)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{demoKeyPath, demoJWKSPath} {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(demoKeyPath, d.PrivatePEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteJWKS(demoJWKSPath); err != nil {
			t.Fatal(err)
		}
	}
	pemBytes, err := os.ReadFile(demoKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := FromPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(demoJWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	// Compared by content, not bytes, so a change in JSON layout is no drift.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(committed, &set); err != nil {
		t.Fatalf("%s: %v", demoJWKSPath, err)
	}
	if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].KeyID != d.KeyID() || set.Keys[0].Algorithm != d.Alg() ||
		!d.PublicKey().(interface{ Equal(crypto.PublicKey) bool }).Equal(set.Keys[0].Key) {
		t.Fatalf("%s does not hold the public key of %s (regenerate both with SESSIONGATE_REGEN_DEMO_KEY=1)", demoJWKSPath, demoKeyPath)
	}
}

// Tokens minted here must verify with an independent JOSE implementation.
func TestMintVerifiesWithGoJose(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			d, err := New(alg)
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(d.JWKS(), &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].KeyID != d.KeyID() || set.Keys[0].Algorithm != alg {
				t.Fatalf("JWKS = %s", d.JWKS())
			}
			tok, err := d.Mint(map[string]any{"sub": "alice", "url": "https://x/?a=1&b=2"})
			if err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			if jws.Signatures[0].Header.KeyID != d.KeyID() {
				t.Fatal("kid not set")
			}
			payload, err := jws.Verify(&set)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(payload), `"url":"https://x/?a=1&b=2"`) {
				t.Fatalf("payload %s", payload)
			}
			if _, err := Tamper(tok, map[string]any{"sub": "mallory"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		d, err := New(alg)
		if err != nil {
			t.Fatal(err)
		}
		back, err := FromPEM(d.PrivatePEM())
		if err != nil {
			t.Fatal(err)
		}
		if back.Alg() != alg || back.KeyID() != d.KeyID() || !bytes.Equal(back.JWKS(), d.JWKS()) {
			t.Fatalf("%s: PEM round trip changed the key", alg)
		}
	}
	if _, err := FromPEM([]byte("not pem")); err == nil {
		t.Fatal("FromPEM accepted garbage")
	}
	if _, err := New("HS256"); err == nil {
		t.Fatal("New accepted HS256")
	}
}

func TestBadTokensAreBad(t *testing.T) {
	d, err := New(RS256)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	json.Unmarshal(d.JWKS(), &set)
	all := []jose.SignatureAlgorithm{jose.RS256, jose.HS256}
	for name, mint := range map[string]func(map[string]any) (string, error){
		"none":   d.MintNone,
		"hs256":  d.MintHS256WithPublicKey,
		"forged": d.MintForged,
		"tampered": func(c map[string]any) (string, error) {
			tok, err := d.Mint(c)
			if err != nil {
				return "", err
			}
			return Tamper(tok, map[string]any{"sub": "mallory"})
		},
	} {
		tok, err := mint(map[string]any{"sub": "alice"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if jws, err := jose.ParseSignedCompact(tok, all); err == nil {
			if _, err := jws.Verify(&set); err == nil {
				t.Fatalf("%s token verifies", name)
			}
		}
	}
}
