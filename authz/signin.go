package authz

import (
	"context"
	"errors"
)

// SignIn runs a policy's interactive sign-in with an identity provider
// (login.oidc: the OpenID Connect authorization code flow, S12–S17). Package
// oidc implements it; the engine calls it for policies whose Login.SignIn is
// set. Implementations are safe for concurrent use and never log or return a
// code, token, state or cookie value in an error.
type SignIn interface {
	// CallbackPath is the path (no query) on every host of the policy where
	// the provider sends the browser back with the authorization response.
	CallbackPath() string

	// Start begins one login attempt for a browser request that needs a
	// session (S12): a new transaction (state, nonce, PKCE verifier, return
	// URL) bound to this browser. returnURL is where the browser goes after
	// the sign-in ("" for the site root), already checked to be on the
	// request's own host. endedAt > 0 (Unix ms) says a session ended then:
	// the attempt asks the provider for re-authentication (the policy's
	// reauth parameters) and its callback must prove a sign-in after it
	// (S14). It returns the authorization endpoint URL and the Set-Cookie
	// value that binds the attempt to the browser. An error is a
	// *SignInError (provider_unavailable when discovery has not succeeded).
	Start(ctx context.Context, r *Request, returnURL string, endedAt int64) (location, setCookie string, err error)

	// Finish completes a callback request r (S13): it checks the transaction
	// the state names (known, unused, unexpired, from this browser) and uses
	// it up, exchanges the code and validates the ID token. An error is a
	// *SignInError; on error no session may be opened.
	Finish(ctx context.Context, r *Request) (*SignedIn, error)

	// Refresh redeems g's refresh token for a new access token (S16). The
	// result keeps g's identity: a response without an ID token keeps the
	// old one. It returns ErrGrantRevoked when the provider refused the
	// refresh token (invalid_grant), any other error when the provider could
	// not be asked.
	Refresh(ctx context.Context, g *Grant) (*Grant, error)

	// EndSessionURL is where the browser goes after the gate ended its
	// session (S17): the provider's end_session_endpoint with id_token_hint
	// (when g has an ID token), client_id, post_logout_redirect_uri and
	// state; without such an endpoint, the policy's logout redirect URL. g
	// is nil when no live session was found.
	EndSessionURL(r *Request, g *Grant) string

	// Seal encrypts a grant for the store (S15: tokens at rest are sealed
	// with the operator's key); Open decrypts one sealed with any key of the
	// key ring. Open fails on anything Seal did not produce.
	Seal(g *Grant) ([]byte, error)
	Open(sealed []byte) (*Grant, error)
}

// LoginCookiePrefix starts the names of the login-transaction cookies
// (LoginCookiePrefix + "0" …): one per login attempt in flight, in a few
// reused slots. Like the session cookie they are the gate's own and never
// reach the application (S15).
const LoginCookiePrefix = "__Host-sessiongate-login-"

// SignedIn is the outcome of a successful callback.
type SignedIn struct {
	// Claims of the ID token: Issuer, Subject, SID, AuthTime (ms; 0 when
	// absent), IssuedAt, Expiry, Bind, Identity and Scope, computed exactly
	// as the token verifier computes them for access tokens.
	Claims *Claims
	Grant  *Grant
	// ReturnURL is the URL stored in the transaction.
	ReturnURL string
	// EndedAt is the endedAt the transaction was started with: the new
	// sign-in must be after it (S14).
	EndedAt int64
}

// Grant is what a sign-in leaves on the server: the provider's tokens and
// the identity headers the application gets. It is stored sealed (Seal) in
// the session record and never leaves the server, except the access token
// upstream and the ID token as id_token_hint (S15).
type Grant struct {
	AccessToken  string
	RefreshToken string // "" when the provider issued none
	IDToken      string // raw, kept for id_token_hint only
	AccessExpiry int64  // Unix ms; 0 when the provider did not say
	// Headers are the identity headers for the application (the user's
	// name, e-mail and groups from ID-token claims, as the policy maps
	// them), set upstream overwriting client-sent copies (S10).
	Headers []Header
}

// Header is one request header name (lower case) and value.
type Header struct {
	Name, Value string
}

// ErrGrantRevoked is returned by SignIn.Refresh when the provider refused
// the refresh token: the session ends with cause idp_revoked (S16).
var ErrGrantRevoked = errors.New("refresh token refused by the identity provider")

// SignInError is a failed sign-in step with the reason the user is shown
// (sign_in_failed, sign_in_denied, provider_unavailable) and a detail that is
// safe to show and log: never a code, token, state or cookie value.
type SignInError struct {
	Reason Reason
	Detail string
}

func (e *SignInError) Error() string { return e.Reason.String() + ": " + e.Detail }
