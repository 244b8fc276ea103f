package token

import (
	"context"
	"errors"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
)

// logoutVerifier checks back-channel logout tokens (S18) with the keys,
// algorithms and clock skew of a policy's token verifier.
type logoutVerifier struct {
	v        *verifier
	audience string
}

var _ authz.LogoutCapable = (*verifier)(nil)

// LogoutVerifier implements authz.LogoutCapable: the verifier of logout
// tokens that v's issuer sends for audience, with the same key set,
// algorithm allow-list and clock skew.
func (v *verifier) LogoutVerifier(audience string) authz.LogoutVerifier {
	return &logoutVerifier{v: v, audience: audience}
}

// VerifyLogout implements authz.LogoutVerifier. Nothing is cached: every
// logout token is checked in full.
func (l *logoutVerifier) VerifyLogout(ctx context.Context, raw string, now time.Time) (*authz.LogoutToken, error) {
	v := l.v
	jws, typ, err := ParseLogoutJWS(raw, v.cfg.MaxBytes, v.algs)
	if err != nil {
		return nil, err
	}
	hdr := jws.Signatures[0].Header
	payload, _, err := v.checkSignature(ctx, jws, hdr.KeyID, hdr.Algorithm)
	if err != nil {
		detail := "bad signature"
		if te, ok := errors.AsType[*authz.TokenError](err); ok {
			detail = te.Detail
		}
		return nil, &authz.LogoutError{Reason: authz.LogoutInvalidToken, Detail: detail}
	}
	return authz.CheckLogoutToken(typ, payload, v.cfg.Issuer, l.audience, now, v.cfg.ClockSkew)
}

// ParseLogoutJWS checks the envelope of a back-channel logout token (S18),
// the one rule for every source of keys (a policy's key set, a provider's
// discovered JWKS): at most maxBytes, a compact JWS in strict base64url,
// signed with an algorithm of algs, and a typ header that, where present,
// is a non-empty string (authz.CheckLogoutToken says which). The signature
// is the caller's to check. Errors are *authz.LogoutError.
func ParseLogoutJWS(raw string, maxBytes int, algs []jose.SignatureAlgorithm) (*jose.JSONWebSignature, string, error) {
	bad := func(detail string) error { return &authz.LogoutError{Reason: authz.LogoutInvalidToken, Detail: detail} }
	switch {
	case len(raw) > maxBytes:
		return nil, "", bad("token too large")
	case strings.Count(raw, ".") != 2:
		return nil, "", bad("not a compact JWS")
	case !base64urlOnly(raw), !canonicalSegments(raw):
		return nil, "", bad("malformed JWS")
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, "", bad("algorithm not allowed")
		}
		return nil, "", bad("malformed JWS")
	}
	hdr := jws.Signatures[0].Header
	typ, isString := hdr.ExtraHeaders[jose.HeaderType].(string)
	if _, has := hdr.ExtraHeaders[jose.HeaderType]; has && (!isString || typ == "") {
		return nil, "", bad("typ is not logout+jwt")
	}
	return jws, typ, nil
}
