package oidc

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/token"
)

// maxCallbackQuery bounds the callback's query string: a provider's
// authorization response is a code, a state, an iss and perhaps an error.
const maxCallbackQuery = 8 << 10

// registeredErrors are the authorization error codes of RFC 6749 §4.1.2.1
// and OpenID Connect Core §3.1.2.6: only these are shown or logged, never
// what else a provider (or whoever made the URL) put in error=.
var registeredErrors = []string{"invalid_request", "unauthorized_client", "access_denied",
	"unsupported_response_type", "invalid_scope", "server_error", "temporarily_unavailable",
	"interaction_required", "login_required", "account_selection_required", "consent_required",
	"invalid_request_uri", "invalid_request_object", "request_not_supported",
	"request_uri_not_supported", "registration_not_supported"}

// tokenErrors are the token endpoint's error codes (RFC 6749 §5.2).
var tokenErrors = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope"}

// callback is a parsed authorization response.
type callback struct {
	state, code, iss, err string
	hasIss                bool
}

// parseCallback reads the authorization response from a request target.
// Each parameter may appear once; anything it cannot read is an error whose
// text names no value.
func parseCallback(target string) (*callback, error) {
	_, query, _ := strings.Cut(target, "?")
	query, _, _ = strings.Cut(query, "#")
	if len(query) > maxCallbackQuery {
		return nil, failed("the callback's query is too long")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, failed("the callback's query is malformed")
	}
	cb := &callback{}
	for name, dst := range map[string]*string{"state": &cb.state, "code": &cb.code, "iss": &cb.iss, "error": &cb.err} {
		switch v := q[name]; len(v) {
		case 0:
		case 1:
			*dst = v[0]
		default:
			return nil, failed("the callback repeats the parameter " + name)
		}
	}
	_, cb.hasIss = q["iss"]
	return cb, nil
}

// Finish implements authz.SignIn (S13).
func (s *SignIn) Finish(ctx context.Context, r *authz.Request) (*authz.SignedIn, error) {
	return s.finish(ctx, r, s.rp.clock.Now())
}

// openCallback checks the authorization response against the transaction
// it names: known, from this browser (the cookie), this policy's, the same
// state, unexpired. It uses nothing up.
func (s *SignIn) openCallback(r *authz.Request, now time.Time) (*callback, *txn, error) {
	cb, err := parseCallback(r.Path)
	if err != nil {
		return nil, nil, err
	}
	slot, ok := stateSlot(cb.state)
	if !ok {
		return nil, nil, failed("the callback names no login attempt of this gate")
	}
	cookies := ""
	if r.Headers != nil {
		cookies = r.Headers.Get("cookie")
	}
	v, ok := authz.CookieValue(cookies, cookieName(slot))
	if !ok {
		return nil, nil, failed("the login attempt was not started in this browser, or its cookie expired")
	}
	t, ok := openTxn(s.rp.keys, v, slot, s.policy)
	if !ok || !sameState(t.State, cb.state) {
		return nil, nil, failed("the login attempt was not started in this browser")
	}
	ms := now.UnixMilli()
	skew := s.cfg.ClockSkew.Milliseconds()
	switch {
	case ms > t.Created+LoginTTL*1000:
		return nil, nil, failed("the login attempt expired (10 minutes)")
	case t.Created > ms+skew:
		return nil, nil, failed("the login attempt was started in the future")
	}
	return cb, t, nil
}

func (s *SignIn) finish(ctx context.Context, r *authz.Request, now time.Time) (*authz.SignedIn, error) {
	cb, t, err := s.openCallback(r, now)
	if err != nil {
		return nil, err
	}
	md := s.disc.cur.Load()
	if md == nil {
		return nil, errNotDiscovered
	}
	// RFC 9207: a provider that sends iss is checked; one that says it
	// always sends it must have.
	switch {
	case cb.hasIss && cb.iss != md.issuer:
		return nil, failed("the authorization response comes from another issuer (iss)")
	case !cb.hasIss && md.issParameter:
		return nil, failed("the authorization response lacks the iss its provider promises")
	}
	// Used up here, on every replica, before anything else happens: a
	// replayed callback exchanges no code (S13).
	first, err := s.rp.claims.Claim(ctx, claimKey(s.policy, t.State), t.Created+LoginTTL*1000+s.cfg.ClockSkew.Milliseconds())
	if err != nil {
		return nil, &authz.SignInError{Reason: authz.ReasonStoreUnavailable, Detail: "the session store could not record the login attempt"}
	}
	if !first {
		return nil, failed("the login attempt was already used")
	}
	if cb.err != "" {
		detail := "the identity provider refused the sign-in"
		if slices.Contains(registeredErrors, cb.err) {
			detail += " (" + cb.err + ")"
		}
		return nil, &authz.SignInError{Reason: authz.ReasonSignInDenied, Detail: detail}
	}
	if cb.code == "" {
		return nil, failed("the callback carries no authorization code")
	}
	sent := time.Now()
	tok, err := s.oauth2Config(md, t.RedirectURI).Exchange(s.tokenCtx(ctx, md, true), cb.code, oauth2.VerifierOption(t.Verifier))
	s.rp.obs.TokenRequested("authorization_code", time.Since(sent), err == nil)
	if err != nil {
		return nil, exchangeError(err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return nil, failed("the token response carries no ID token")
	}
	c, m, err := s.verifyIDToken(ctx, md, rawID, now)
	if err != nil {
		return nil, err
	}
	if n, _ := str(m, "nonce"); subtle.ConstantTimeCompare([]byte(n), []byte(t.Nonce)) != 1 {
		return nil, failed("the ID token's nonce does not match the login attempt")
	}
	if t.EndedAt > 0 && c.AuthTime == 0 {
		// The provider was asked to re-authenticate (max_age=0) and must
		// then say when it did (OpenID Connect Core §2); without it there
		// is no proof of a sign-in after the end (S14).
		return nil, &authz.SignInError{Reason: authz.ReasonReauthNotPerformed,
			Detail: "the identity provider did not say when the user signed in (auth_time) after a request to sign in again"}
	}
	g := &authz.Grant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IDToken: rawID,
		Headers: s.headers(m)}
	if !tok.Expiry.IsZero() {
		g.AccessExpiry = tok.Expiry.UnixMilli()
	}
	return &authz.SignedIn{Claims: c, Grant: g, ReturnURL: t.ReturnURL, EndedAt: t.EndedAt}, nil
}

// exchangeError maps a token endpoint failure to what the user is shown:
// a refusal (4xx with an error code) is sign_in_failed, anything else is
// the provider being unavailable. Only registered error codes are named.
func exchangeError(err error) error {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
		detail := "the identity provider refused the authorization code"
		if slices.Contains(tokenErrors, re.ErrorCode) {
			detail += " (" + re.ErrorCode + ")"
		}
		return failed(detail)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return unavailable("the identity provider did not answer in time")
	}
	return unavailable("the identity provider's token endpoint could not be reached" + cause(err))
}

// cause names why a request to the provider failed, for the log: a status,
// or the kind of network failure; never the request, which carries a code
// or a secret.
func cause(err error) string {
	var errno syscall.Errno
	var dns *net.DNSError
	var certErr *tls.CertificateVerificationError
	switch re, _ := errors.AsType[*oauth2.RetrieveError](err); {
	case re != nil && re.Response != nil:
		return " (HTTP " + strconv.Itoa(re.Response.StatusCode) + ")"
	case errors.As(err, &errno) && errno == syscall.ECONNREFUSED:
		return " (connection refused)"
	case errors.As(err, &errno) && errno == syscall.ECONNRESET:
		return " (connection reset)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "server closed idle connection"): // net/http's unexported error
		return " (connection closed without an answer)"
	case errors.As(err, &dns):
		return " (host name not resolved)"
	case errors.As(err, &certErr):
		return " (TLS certificate not trusted)"
	}
	return ""
}

// verifyIDToken validates an ID token from the token endpoint (S13):
// signature with the discovered keys and allow-listed algorithms (go-oidc
// refetches the keys on an unknown kid), iss, aud, azp, exp, iat and
// auth_time; nonce is the caller's. It returns the claims as the token
// verifier computes them for access tokens, and the raw claim set.
func (s *SignIn) verifyIDToken(ctx context.Context, md *metadata, raw string, now time.Time) (*authz.Claims, map[string]json.RawMessage, error) {
	algs := s.cfg.Algorithms
	if len(md.algorithms) > 0 {
		algs = slices.DeleteFunc(slices.Clone(algs), func(a string) bool { return !slices.Contains(md.algorithms, a) })
		if len(algs) == 0 {
			return nil, nil, failed("the identity provider signs ID tokens with no algorithm this policy allows")
		}
	}
	skew := s.cfg.ClockSkew
	v := gooidc.NewVerifier(md.issuer, md.keys, &gooidc.Config{ClientID: s.cfg.ClientID, SupportedSigningAlgs: algs,
		Now: func() time.Time { return now.Add(-skew) }}) // exp with the skew
	idt, err := v.Verify(s.clientCtx(ctx), raw)
	if err != nil {
		return nil, nil, idTokenError(err)
	}
	var m map[string]json.RawMessage
	if err := idt.Claims(&m); err != nil || m == nil {
		return nil, nil, failed("the ID token's claims are not a JSON object")
	}
	c, err := s.claims(m, now.UnixMilli())
	if err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

// idTokenError names which check failed without quoting go-oidc, whose
// messages carry claim values.
func idTokenError(err error) error {
	if _, ok := errors.AsType[*gooidc.TokenExpiredError](err); ok {
		return failed("the ID token expired")
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "issued by a different provider"):
		return failed("the ID token's iss is not the issuer")
	case strings.Contains(msg, "expected audience"):
		return failed("the ID token's aud does not include the client")
	case strings.Contains(msg, "malformed jwt"):
		return failed("the ID token is malformed or signed with an algorithm not allowed")
	case strings.Contains(msg, "fetching keys"):
		return unavailable("the identity provider's keys could not be fetched")
	case strings.Contains(msg, "verify signature"):
		return failed("the ID token's signature does not verify")
	case strings.Contains(msg, "nbf"):
		return failed("the ID token is not yet valid")
	}
	return failed("the ID token is not valid")
}

// claims checks what go-oidc leaves to its caller and computes the engine's
// claims with token.ReadClaims, exactly as for access tokens.
func (s *SignIn) claims(m map[string]json.RawMessage, now int64) (*authz.Claims, error) {
	c, err := token.ReadClaims(m, s.cfg.BindClaims)
	if err != nil {
		detail := "malformed"
		if te, ok := errors.AsType[*authz.TokenError](err); ok {
			detail = te.Detail
		}
		return nil, failed("the ID token's claims are not valid: " + detail)
	}
	// azp (OpenID Connect Core §3.1.3.7): with several audiences it must
	// be there, and wherever it is, it must be this client.
	azp, ok := str(m, "azp")
	if _, has := m["azp"]; (has || len(c.Audience) > 1) && (!ok || azp != s.cfg.ClientID) {
		return nil, failed("the ID token's azp is not the client")
	}
	skew := s.cfg.ClockSkew.Milliseconds()
	switch {
	case c.IssuedAt == 0:
		return nil, failed("the ID token has no iat")
	case c.IssuedAt > now+skew:
		return nil, failed("the ID token's iat is in the future")
	case c.AuthTime > now+skew:
		return nil, failed("the ID token's auth_time is in the future")
	case c.AuthTime == 0 && s.cfg.RequireAuthTime:
		return nil, failed("the ID token has no auth_time, which this policy requires")
	}
	return c, nil
}

// str reads a string claim; false when it is absent or not a string.
func str(m map[string]json.RawMessage, name string) (string, bool) {
	var v string
	if raw, ok := m[name]; !ok || json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	return v, true
}

// Refresh implements authz.SignIn (S16).
func (s *SignIn) Refresh(ctx context.Context, g *authz.Grant) (*authz.Grant, error) {
	return s.refresh(ctx, g)
}

var (
	errNoRefreshToken = errors.New("the sign-in has no refresh token")
	errRefreshFailed  = errors.New("the identity provider could not refresh the access token")
)

func (s *SignIn) refresh(ctx context.Context, g *authz.Grant) (*authz.Grant, error) {
	if g == nil || g.RefreshToken == "" {
		return nil, errNoRefreshToken
	}
	md := s.disc.cur.Load()
	if md == nil {
		return nil, errNotDiscovered
	}
	now := s.rp.clock.Now()
	sent := time.Now()
	tok, err := s.oauth2Config(md, "").TokenSource(s.tokenCtx(ctx, md, false), &oauth2.Token{RefreshToken: g.RefreshToken}).Token()
	s.rp.obs.TokenRequested("refresh_token", time.Since(sent), err == nil)
	if err != nil {
		if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.ErrorCode == "invalid_grant" {
			return nil, authz.ErrGrantRevoked
		}
		return nil, errRefreshFailed
	}
	ng := &authz.Grant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IDToken: g.IDToken, Headers: g.Headers}
	if ng.RefreshToken == "" {
		ng.RefreshToken = g.RefreshToken // not rotated: the old one stays good
	}
	if !tok.Expiry.IsZero() {
		ng.AccessExpiry = tok.Expiry.UnixMilli()
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return ng, nil // S16: the identity stays what the sign-in proved
	}
	c, m, err := s.verifyIDToken(ctx, md, rawID, now)
	if err != nil {
		return nil, errRefreshFailed
	}
	// OpenID Connect Core §12.2: same iss and sub as at sign-in. Another
	// user behind the same refresh token ends the session.
	oldIss, oldSub := unverifiedIssSub(g.IDToken)
	if c.Issuer != oldIss || c.Subject != oldSub {
		return nil, errors.Join(authz.ErrGrantRevoked, errors.New("the refreshed ID token names another user"))
	}
	ng.IDToken, ng.Headers = rawID, s.headers(m)
	return ng, nil
}

// unverifiedIssSub reads iss and sub of an ID token that was verified when
// it was stored (it comes out of a sealed grant).
func unverifiedIssSub(raw string) (string, string) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return "", ""
	}
	return c.Iss, c.Sub
}
