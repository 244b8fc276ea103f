package token

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// fuzzKey is a fixed Ed25519 key, so that the tokens in testdata/fuzz stay
// validly signed from one run to the next (Ed25519 signs deterministically),
// and the clock stands still at t0Unix.
func fuzzKey(f *testing.F) (*idp.IDP, authz.Verifier, time.Time) {
	f.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	d, err := idp.FromPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, d.JWKS(), 0o644); err != nil {
		f.Fatal(err)
	}
	now := time.Unix(t0Unix, 0)
	p := NewProvider(Options{Clock: testutil.NewClock(now)})
	v, err := p.Verifier(baseConfig(path))
	if err != nil {
		f.Fatal(err)
	}
	return d, v, now
}

// FuzzVerify: no string, however malformed, makes Verify panic, and every
// token it accepts verifies with the trusted key on its own (go-jose with
// nothing but that key) and names the subject it signed.
func FuzzVerify(f *testing.F) {
	d, v, now := fuzzKey(f)
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(context.Background(), raw, now)
		if err != nil {
			wantTokenError(t, err)
			return
		}
		jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.EdDSA})
		if err != nil {
			t.Fatalf("accepted a token go-jose cannot parse: %v", err)
		}
		payload, err := jws.Verify(d.PublicKey())
		if err != nil {
			t.Fatalf("accepted a token the trusted key did not sign: %v", err)
		}
		var m struct{ Sub string }
		if json.Unmarshal(payload, &m) != nil || m.Sub != c.Subject || c.Subject == "" {
			t.Fatalf("accepted subject %q; the signed payload says %q", c.Subject, m.Sub)
		}
	})
}

// FuzzVerifyClaims signs arbitrary payloads with the trusted key, so that
// the claim checks are what is fuzzed: whatever Verify accepts has the
// policy's issuer and an audience of it, a subject, and is within its time
// bounds (exp, nbf, iat, with the configured skew) at the clock's now.
func FuzzVerifyClaims(f *testing.F) {
	d, v, now := fuzzKey(f)
	cfg := baseConfig("")
	nowMs, skewMs := float64(now.UnixMilli()), float64(cfg.ClockSkew.Milliseconds())
	f.Fuzz(func(t *testing.T, payload []byte) {
		raw, err := d.MintRaw(payload)
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(context.Background(), raw, now)
		if err != nil {
			wantTokenError(t, err)
			return
		}
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("accepted claims that are not a JSON object: %v", err)
		}
		if m["iss"] != cfg.Issuer || c.Issuer != cfg.Issuer {
			t.Fatalf("accepted iss %v", m["iss"])
		}
		if !audienceOK(m["aud"], cfg.Audiences) {
			t.Fatalf("accepted aud %v", m["aud"])
		}
		if sub, _ := m["sub"].(string); sub == "" || sub != c.Subject {
			t.Fatalf("accepted sub %v as %q", m["sub"], c.Subject)
		}
		if c.IssuedAt == 0 && c.AuthTime == 0 || c.IssuedAt != 0 && c.Expiry-c.IssuedAt > DefaultMaxLifetime.Milliseconds() {
			t.Fatalf("accepted iat %d, auth_time %d, exp %d: no session end could be kept long enough", c.IssuedAt, c.AuthTime, c.Expiry)
		}
		if !authz.IsHeaderValue(c.Subject) {
			t.Fatalf("accepted sub %q, which no header carries unchanged", c.Subject)
		}
		exp, ok := seconds(m["exp"])
		if !ok || exp*1000+skewMs+1 <= nowMs {
			t.Fatalf("accepted exp %v at %v", m["exp"], now)
		}
		if nbf, ok := seconds(m["nbf"]); ok && nbf*1000-skewMs-1 > nowMs {
			t.Fatalf("accepted nbf %v at %v", m["nbf"], now)
		}
		if iat, ok := seconds(m["iat"]); ok && iat*1000-skewMs-1 > nowMs {
			t.Fatalf("accepted iat %v at %v", m["iat"], now)
		}
	})
}

func wantTokenError(t *testing.T, err error) {
	t.Helper()
	var te *authz.TokenError
	if !errors.As(err, &te) || (te.Reason != authz.ReasonInvalidToken && te.Reason != authz.ReasonTokenExpired) {
		t.Fatalf("error %v is not an invalid_token or token_expired TokenError", err)
	}
}

func audienceOK(aud any, want []string) bool {
	switch a := aud.(type) {
	case string:
		return slices.Contains(want, a)
	case []any:
		hit := false
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return false
			}
			hit = hit || slices.Contains(want, s)
		}
		return hit
	}
	return false
}

func seconds(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil
}
