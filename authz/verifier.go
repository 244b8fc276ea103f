package authz

import (
	"context"
	"errors"
	"time"
)

// Verifier checks a raw token's signature and claims (S5) for one policy and
// returns its claims. Implementations cache verified tokens; a failure is
// never cached as success.
type Verifier interface {
	Verify(ctx context.Context, raw string, now time.Time) (*Claims, error)
}

// Claims is the verified, immutable content of a token that the engine uses.
// Verifiers may share one *Claims between requests: never mutate it.
type Claims struct {
	Issuer   string
	Subject  string
	SID      string   // OIDC session id, "" when absent
	Audience []string // as in the token
	// Unix milliseconds; 0 when the claim is absent.
	IssuedAt  int64
	AuthTime  int64
	Expiry    int64
	NotBefore int64
	// Bind holds the values of the policy's bind claims, in policy order.
	Bind []string
	// Identity is a collision-resistant digest of issuer, subject and bind
	// claims (S4); Scope one of the S3 scope (sid, else issuer and subject).
	Identity Digest
	Scope    Digest
}

// SignIn is the token's sign-in time for S3: auth_time, else iat (ms).
func (c *Claims) SignIn() int64 {
	if c.AuthTime != 0 {
		return c.AuthTime
	}
	return c.IssuedAt
}

// TokenError is a verification failure with its reason (invalid_token or
// token_expired) and a detail that never contains the token.
type TokenError struct {
	Reason Reason
	Detail string
}

func (e *TokenError) Error() string { return e.Reason.String() + ": " + e.Detail }

// TokenReason extracts the denial reason of a verification error.
func TokenReason(err error) Reason {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return ReasonInvalidToken
}
