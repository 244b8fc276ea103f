package oidc

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// private_key_jwt (OpenID Connect Core §9, RFC 7523): the client proves
// itself at the token endpoint with a short JWT signed by its private key,
// whose public key the provider holds. No shared secret exists.

// assertionTTL is the life of one client assertion; each token request
// gets a fresh one.
const assertionTTL = time.Minute

// clientKey signs client assertions.
type clientKey struct {
	signer jose.Signer
}

// parseClientKey reads a PEM private key (PKCS #8, PKCS #1 RSA or SEC 1 EC)
// and picks its algorithm: RS256 for RSA (2048 bits at least), ES256/384/512
// for P-256/384/521, EdDSA for Ed25519. The key id is keyID, else the
// RFC 7638 thumbprint (SHA-256) of the public key: providers pick the
// client's registered key by it. Errors name no key material.
func parseClientKey(pemData []byte, keyID string) (*clientKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("client key: not a PEM private key")
	}
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
				return nil, errors.New("client key: not a PKCS #8, PKCS #1 or SEC 1 private key")
			}
		}
	}
	var alg jose.SignatureAlgorithm
	var pub crypto.PublicKey
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("client key: RSA keys need 2048 bits at least")
		}
		alg, pub = jose.RS256, k.Public()
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			alg = jose.ES256
		case elliptic.P384():
			alg = jose.ES384
		case elliptic.P521():
			alg = jose.ES512
		default:
			return nil, errors.New("client key: unsupported curve")
		}
		pub = k.Public()
	case ed25519.PrivateKey:
		alg, pub = jose.EdDSA, k.Public()
	default:
		return nil, errors.New("client key: unsupported key type")
	}
	if keyID == "" {
		thumb, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, errors.New("client key: no thumbprint")
		}
		keyID = base64.RawURLEncoding.EncodeToString(thumb)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", keyID))
	if err != nil {
		return nil, errors.New("client key: cannot sign with it")
	}
	return &clientKey{signer: signer}, nil
}

// assertion returns a fresh client assertion for tokenURL.
func (k *clientKey) assertion(clientID, tokenURL string, now time.Time) (string, error) {
	claims, err := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": tokenURL,
		"jti": randomString(), "iat": now.Unix(), "exp": now.Add(assertionTTL).Unix()})
	if err != nil {
		return "", err
	}
	jws, err := k.signer.Sign(claims)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// assertingTransport adds a fresh client assertion to every form POST to
// the token endpoint (code exchange and refresh alike: oauth2 has no hook
// for a refresh's parameters).
type assertingTransport struct {
	base     http.RoundTripper
	key      *clientKey
	clientID string
	tokenURL string // scheme, host and path, to match requests
	aud      string // the discovered token endpoint, the assertion's audience
	now      func() time.Time
}

func (t *assertingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || r.URL.Scheme+"://"+r.URL.Host+r.URL.Path != t.tokenURL || r.Body == nil {
		return t.base.RoundTrip(r)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	a, err := t.key.assertion(t.clientID, t.aud, t.now())
	if err != nil {
		return nil, errors.New("client assertion not signed")
	}
	form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	form.Set("client_assertion", a)
	enc := form.Encode()
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(strings.NewReader(enc))
	r2.ContentLength = int64(len(enc))
	r2.Header.Set("Content-Length", strconv.Itoa(len(enc)))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader([]byte(enc))), nil }
	return t.base.RoundTrip(r2)
}

// tokenCtx is the context of token endpoint requests: with a client key,
// a client whose transport signs a client assertion into each request. A
// code exchange (once) is also sent again when the provider closed a
// kept-alive connection without answering it (resendUnanswered); a
// refresh is not, as a refresh token the provider did redeem would be
// refused the second time and end the session.
func (s *SignIn) tokenCtx(ctx context.Context, md *metadata, once bool) context.Context {
	if s.key == nil && !once {
		return s.clientCtx(ctx)
	}
	c := *s.rp.client
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if s.key != nil {
		// The assertion's audience is the token endpoint as discovered;
		// the transport matches requests to it without their query.
		tu, _ := url.Parse(md.tokenURL)
		rt = &assertingTransport{base: rt, key: s.key, clientID: s.cfg.ClientID,
			tokenURL: tu.Scheme + "://" + tu.Host + tu.Path, aud: md.tokenURL, now: s.rp.clock.Now}
	}
	if once {
		rt = resendUnanswered{base: rt} // outermost: each attempt has its own assertion
	}
	c.Transport = rt
	return context.WithValue(ctx, oauth2.HTTPClient, &c)
}
