// Package idp is a tiny identity provider FOR TESTS AND LOCAL DEMOS ONLY:
// it holds one signing key, publishes it as a JWKS and mints tokens with any
// claims, including deliberately broken ones (alg none, HMAC keyed with the
// public key, a foreign signer, a tampered payload) for negative tests.
//
// Never use it in production: keys are kept in memory or in unencrypted PEM
// files, nothing is authenticated, and it will sign whatever it is given.
package idp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Algorithms idp can sign with.
const (
	RS256 = "RS256"
	ES256 = "ES256"
	EdDSA = "EdDSA"
)

// IDP is one signing key and its key id. It is safe for concurrent use.
type IDP struct {
	alg string
	key crypto.Signer
	kid string
}

// New generates a fresh key for alg: RS256 (the default for ""; RSA 2048),
// ES256 (P-256) or EdDSA (Ed25519).
func New(alg string) (*IDP, error) {
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case "", RS256:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("idp: unsupported algorithm %q (want RS256, ES256 or EdDSA)", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("idp: generate %s key: %w", alg, err)
	}
	return fromSigner(key)
}

// FromPEM loads a private key written by PrivatePEM (PKCS #8; PKCS #1 RSA
// and SEC 1 EC keys are accepted too). The algorithm follows the key type.
func FromPEM(b []byte) (*IDP, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("idp: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("idp: parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("idp: %T is not a signing key", key)
	}
	return fromSigner(signer)
}

func fromSigner(key crypto.Signer) (*IDP, error) {
	d := &IDP{key: key}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		d.alg = RS256
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("idp: only P-256 EC keys are supported")
		}
		d.alg = ES256
	case ed25519.PrivateKey:
		d.alg = EdDSA
	default:
		return nil, fmt.Errorf("idp: unsupported key type %T", key)
	}
	// The RFC 7638 thumbprint makes the kid a function of the key, so a key
	// loaded from PEM gets the kid of the JWKS written from it.
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("idp: thumbprint: %w", err)
	}
	d.kid = base64.RawURLEncoding.EncodeToString(tp)
	return d, nil
}

// Alg returns the JWS algorithm the IDP signs with.
func (d *IDP) Alg() string { return d.alg }

// KeyID returns the kid of the IDP's key: its RFC 7638 thumbprint.
func (d *IDP) KeyID() string { return d.kid }

// PublicKey returns the public half of the signing key.
func (d *IDP) PublicKey() crypto.PublicKey { return d.key.Public() }

// PrivatePEM returns the private key as an unencrypted PKCS #8 PEM block.
func (d *IDP) PrivatePEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(d.key)
	if err != nil {
		panic("idp: marshal a key we generated or parsed: " + err.Error()) // unreachable
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// JWKS returns a JWK Set holding the public key of d.
func (d *IDP) JWKS() []byte { return JWKSOf(d) }

// JWKSOf returns one JWK Set with the public keys of several IDPs, as an
// issuer publishes during a key rotation.
func JWKSOf(idps ...*IDP) []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, d := range idps {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: d.key.Public(), KeyID: d.kid, Algorithm: d.alg, Use: "sig"})
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		panic("idp: marshal public keys: " + err.Error()) // unreachable for our key types
	}
	return append(b, '\n')
}

// WriteJWKS writes JWKS() to path (0644: it holds public keys only).
func (d *IDP) WriteJWKS(path string) error {
	if err := os.WriteFile(path, d.JWKS(), 0o644); err != nil {
		return fmt.Errorf("idp: write JWKS: %w", err)
	}
	return nil
}

// Mint returns a compact JWS of claims signed by d, with header
// {"alg": d.Alg(), "kid": d.KeyID(), "typ": "JWT"}.
func (d *IDP) Mint(claims map[string]any) (string, error) {
	return d.MintWith(nil, claims)
}

// MintWith is Mint with header overrides: a value replaces the default of its
// name and a nil value removes it (e.g. {"kid": nil} for a token without
// kid). The signature is always d's own under d.Alg(), whatever "alg" says,
// which gives algorithm-mismatch tokens for tests.
func (d *IDP) MintWith(header, claims map[string]any) (string, error) {
	h := map[string]any{"alg": d.alg, "kid": d.kid, "typ": "JWT"}
	for k, v := range header {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	return d.signJWS(h, payload)
}

// MintRaw signs payload as it is, with the default header: for payloads that
// are not a claims object (bad JSON, deep nesting) in parser tests.
func (d *IDP) MintRaw(payload []byte) (string, error) {
	return d.signJWS(map[string]any{"alg": d.alg, "kid": d.kid, "typ": "JWT"}, payload)
}

func (d *IDP) signJWS(header map[string]any, payload []byte) (string, error) {
	input, err := signingInput(header, payload)
	if err != nil {
		return "", err
	}
	var sig []byte
	switch k := d.key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			return "", fmt.Errorf("idp: sign: %w", err)
		}
		// JWS wants r||s at fixed width (RFC 7518 §3.4), not ASN.1.
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	default:
		sum := sha256.Sum256([]byte(input))
		if sig, err = d.key.Sign(rand.Reader, sum[:], crypto.SHA256); err != nil {
			return "", fmt.Errorf("idp: sign: %w", err)
		}
	}
	return input + "." + b64(sig), nil
}

// MintNone returns an unsigned token with "alg": "none" (RFC 7519 §6), which
// every verifier must refuse.
func (d *IDP) MintNone(claims map[string]any) (string, error) {
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	input, err := signingInput(map[string]any{"alg": "none", "typ": "JWT"}, payload)
	return input + ".", err
}

// MintHS256WithPublicKey returns a token whose HS256 MAC is keyed with the
// PEM of d's public key: the classic RS/HS confusion attack, which succeeds
// against verifiers that let the token choose how to use the key.
func (d *IDP) MintHS256WithPublicKey(claims map[string]any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(d.key.Public())
	if err != nil {
		return "", fmt.Errorf("idp: marshal public key: %w", err)
	}
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	input, err := signingInput(map[string]any{"alg": "HS256", "kid": d.kid, "typ": "JWT"}, payload)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil)), nil
}

// MintForged returns a token carrying d's kid and algorithm but signed by a
// freshly generated foreign key.
func (d *IDP) MintForged(claims map[string]any) (string, error) {
	other, err := New(d.alg)
	if err != nil {
		return "", err
	}
	return other.MintWith(map[string]any{"kid": d.kid}, claims)
}

// Tamper replaces the payload of token with claims, keeping its header and
// signature, as an attacker editing a token would.
func Tamper(token string, claims map[string]any) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("idp: tamper: not a compact JWS")
	}
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	parts[1] = b64(payload)
	return strings.Join(parts, "."), nil
}

func marshal(claims map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep URLs in claims readable when decoded by hand
	if err := enc.Encode(claims); err != nil {
		return nil, fmt.Errorf("idp: claims: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func signingInput(header map[string]any, payload []byte) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("idp: header: %w", err)
	}
	return b64(h) + "." + b64(payload), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
