package oidc

import (
	"context"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/token"
)

var _ authz.LogoutVerifier = (*SignIn)(nil)

// maxLogoutToken bounds a logout token: a few claims and a signature.
const maxLogoutToken = 16 << 10

// VerifyLogout implements authz.LogoutVerifier for the policy's provider
// (S18): the JWS must be signed with an algorithm of the policy's
// allow-list by a key of the discovered JWKS (refetched on an unknown kid),
// and its claims name this issuer and client (authz.CheckLogoutToken).
func (s *SignIn) VerifyLogout(ctx context.Context, raw string, now time.Time) (*authz.LogoutToken, error) {
	algs := make([]jose.SignatureAlgorithm, 0, len(s.cfg.Algorithms))
	for _, a := range s.cfg.Algorithms {
		algs = append(algs, jose.SignatureAlgorithm(a))
	}
	_, typ, err := token.ParseLogoutJWS(raw, maxLogoutToken, algs)
	if err != nil {
		return nil, err
	}
	md := s.disc.cur.Load()
	if md == nil {
		return nil, &authz.LogoutError{Reason: authz.LogoutUnavailable, Detail: "the identity provider is not discovered yet"}
	}
	payload, err := md.keys.VerifySignature(s.clientCtx(ctx), raw)
	if err != nil {
		if strings.Contains(err.Error(), "fetching keys") {
			return nil, &authz.LogoutError{Reason: authz.LogoutUnavailable, Detail: "the identity provider's keys could not be fetched"}
		}
		return nil, &authz.LogoutError{Reason: authz.LogoutInvalidToken, Detail: "bad signature"}
	}
	return authz.CheckLogoutToken(typ, payload, md.issuer, s.cfg.ClientID, now, s.cfg.ClockSkew)
}

// Issuer is the policy's issuer, as configured (discovery must match it).
func (s *SignIn) Issuer() string { return s.cfg.Issuer }

// ClientID is the policy's client, the audience of its logout tokens.
func (s *SignIn) ClientID() string { return s.cfg.ClientID }
