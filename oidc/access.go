package oidc

import (
	"context"
	"sync"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// builtVerifier is the access-token verifier for one discovered jwks_uri.
type builtVerifier struct {
	uri string
	v   authz.Verifier
}

// accessVerifier checks API clients' bearer tokens with the keys the
// sign-in's discovery names (a login.oidc policy without token keys of its
// own). Until discovery succeeds every token is invalid_token.
type accessVerifier struct {
	s     *SignIn
	build func(jwksURI string) (authz.Verifier, error)
	mu    sync.Mutex // serializes builds
}

// AccessVerifier returns the verifier of bearer tokens for a policy whose
// keys are the discovered ones: build makes the real verifier (package
// token's, with the policy's token settings and this jwks_uri) once the
// jwks_uri is known, and again if a refresh of the discovery changes it.
func (s *SignIn) AccessVerifier(build func(jwksURI string) (authz.Verifier, error)) authz.Verifier {
	return &accessVerifier{s: s, build: build}
}

var (
	errKeysPending = &authz.TokenError{Reason: authz.ReasonInvalidToken, Detail: "the identity provider's keys are not discovered yet"}
	errKeysBroken  = &authz.TokenError{Reason: authz.ReasonInvalidToken, Detail: "the identity provider's discovered keys are not usable"}
)

// Verify implements authz.Verifier.
func (a *accessVerifier) Verify(ctx context.Context, raw string, now time.Time) (*authz.Claims, error) {
	md := a.s.disc.cur.Load()
	if md == nil {
		return nil, errKeysPending
	}
	b := a.s.accessVer.Load()
	if b == nil || b.uri != md.jwksURI {
		a.mu.Lock()
		if b = a.s.accessVer.Load(); b == nil || b.uri != md.jwksURI {
			v, err := a.build(md.jwksURI)
			if err != nil {
				a.mu.Unlock()
				a.s.rp.log.Error("verifier for discovered keys not built", "policy", a.s.policy, "err", err)
				return nil, errKeysBroken
			}
			b = &builtVerifier{uri: md.jwksURI, v: v}
			a.s.accessVer.Store(b)
		}
		a.mu.Unlock()
	}
	return b.v.Verify(ctx, raw, now)
}
