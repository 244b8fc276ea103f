// Package policy owns sessiongate's policy file format. It parses one YAML
// file per policy strictly (every problem is reported at once with file, line
// and field), applies the documented defaults, validates, and compiles a
// directory of policies into an immutable Set that answers which authz.Policy
// governs a host. A Watcher reloads the directory on change, swapping Sets
// atomically and keeping the last good one when a change is broken.
//
// REFERENCE.md beside this file is the operator-facing description of the
// schema below; keep the two in step.
package policy

import (
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Defaults and limits of the schema, as documented on the fields below.
const (
	defaultCookieName     = "__Host-sessiongate"
	defaultReturnParam    = "rd"
	defaultClockSkew      = 30 * time.Second
	defaultMaxLifetime    = 24 * time.Hour
	minMaxLifetime        = time.Minute
	maxMaxLifetime        = 30 * 24 * time.Hour
	maxClockSkew          = 5 * time.Minute
	defaultMaxTokenBytes  = 16384
	minTokenBytes         = 512
	maxTokenBytes         = 1 << 20
	defaultJWKSRefresh    = 5 * time.Minute
	minJWKSRefresh        = time.Second
	defaultJWKSMinRefresh = 10 * time.Second
	// activity_granularity defaults to idle_timeout/100 and may be at most
	// idle_timeout/4: a session may time out up to one granularity early.
	defaultGranularityDivisor = 100
	maxGranularityDivisor     = 4
	// login.oidc defaults.
	defaultCallbackPath = DefaultCallbackPath
	// upstream.access_token under login.oidc.
	defaultAccessTokenHeader = "authorization"
)

// DefaultCallbackPath is where the identity provider sends the browser back
// to a login.oidc policy unless login.oidc.callback_path says otherwise. It
// must reach sessiongate through the normal check (the engine finishes the
// sign-in there): proxy configurations must not exempt it.
const DefaultCallbackPath = "/_sessiongate/callback"

// defaultScopes is login.oidc.scopes when absent.
func defaultScopes() []string { return []string{"openid", "profile", "email"} }

// defaultIdentityHeaders is upstream.headers under login.oidc when absent:
// header name → ID-token claim.
func defaultIdentityHeaders() map[string]string {
	return map[string]string{authz.HeaderName: "name", authz.HeaderEmail: "email", authz.HeaderGroups: "groups"}
}

// defaultAlgorithms is the token.algorithms default: every asymmetric JWS
// algorithm. HMAC and "none" are never accepted, since keys come from a
// public JWKS (S5).
func defaultAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// spec is one policy file, field for field; the yaml tags are the schema.
// The decoder walks it by reflection, so a field added here is accepted in
// files and every other key stays an "unknown field" error.
type spec struct {
	// Hosts the policy governs. Required, non-empty. Lower-cased, a trailing
	// dot dropped; no scheme, port or path. "*.suffix" matches every host
	// below suffix (a.suffix, a.b.suffix) but not suffix itself; "*" alone
	// makes the policy the default for hosts no other policy names. IP
	// addresses are allowed ("::1" or "[::1]"). A host may appear in one
	// policy only.
	Hosts []string `yaml:"hosts"`
	// Mode is "enforce" (default) or "dry-run": decide, record what would
	// have been denied, and allow.
	Mode    string      `yaml:"mode"`
	Session sessionSpec `yaml:"session"`
	Token   tokenSpec   `yaml:"token"`
	Login   loginSpec   `yaml:"login"`
	Logout  logoutSpec  `yaml:"logout"`
	// Upstream is what allowed requests of a sign-in session carry to the
	// application. Only with login.oidc.
	Upstream upstreamSpec `yaml:"upstream"`
	// Bypass lists path prefixes that need no session, matched at segment
	// boundaries ("/public" covers "/public/x", not "/publicity"). Default
	// none. Each starts with "/" and has no query.
	Bypass []string `yaml:"bypass"`
}

// sessionSpec is the session section. Required.
type sessionSpec struct {
	// AbsoluteTimeout is the longest a sign-in lasts (S1). Required, > 0.
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"`
	// IdleTimeout ends a session without activity (S2). Required, > 0 and
	// < absolute_timeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// WarnBefore opens the client warning window this long before the
	// earlier deadline (S11). Default 0 (no warning); >= 0 and
	// < absolute_timeout; may exceed idle_timeout.
	WarnBefore time.Duration `yaml:"warn_before"`
	// PassivePaths are allowed but do not count as activity (polling).
	// Default none. Each starts with "/" and has no query.
	PassivePaths []string `yaml:"passive_paths"`
	// BindClaims are token claims, besides iss and sub, that must stay equal
	// for the session's life (S4), e.g. [tid]. Default none.
	BindClaims []string `yaml:"bind_claims"`
	// ActivityGranularity is how far last_activity must advance before it is
	// written to the store. Default idle_timeout/100; 0 writes every
	// request; at most idle_timeout/4.
	ActivityGranularity time.Duration `yaml:"activity_granularity"`
	// StoreFailure is "deny" (default: store_unavailable) or "continue":
	// decide on what the replica's near cache knows while the shared store
	// is down (S9).
	StoreFailure string     `yaml:"store_failure"`
	Cookie       cookieSpec `yaml:"cookie"`
}

// cookieSpec is the gate's own session cookie. Optional.
type cookieSpec struct {
	// Name of the cookie. Default "__Host-sessiongate"; a valid cookie
	// token (RFC 6265).
	Name string `yaml:"name"`
	// SameSite is "Lax" (default), "Strict" or "None" (any case).
	SameSite string `yaml:"same_site"`
}

// tokenSpec is how tokens are found and verified (S5). Required, except
// under login.oidc, where bearer tokens of API clients are verified against
// the sign-in's issuer with its discovered keys unless this says otherwise.
type tokenSpec struct {
	// Issuer is the exact iss claim. Required (under login.oidc: default
	// login.oidc.issuer).
	Issuer string `yaml:"issuer"`
	// Audiences accepted in aud; one match suffices. Required, non-empty
	// (under login.oidc: default [login.oidc.client_id]).
	Audiences []string `yaml:"audiences"`
	// JWKSFile is the issuer's key set as a file, relative to the policy
	// file's directory. Exactly one of jwks_file and jwks_uri is required
	// (under login.oidc: at most one; none uses the discovered jwks_uri);
	// the file must exist and be readable.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURI is the issuer's key set URL: absolute https, or http for
	// loopback hosts (127.0.0.1, localhost, [::1]) only.
	JWKSURI string `yaml:"jwks_uri"`
	// From lists where tokens are read, first found wins: "header:NAME"
	// (case-insensitive; for authorization the Bearer scheme is required)
	// or "cookie:NAME" (exact). Default [header:authorization].
	From []string `yaml:"from"`
	// Algorithms accepted in the JWS header. Default every asymmetric one
	// (RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA); "none"
	// and HS* are errors.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew tolerated on exp, nbf and iat. Default 30s; 0 to 5m.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// MaxLifetime is the longest exp − iat accepted; longer tokens, and
	// tokens with neither iat nor auth_time, are invalid_token. Session ends
	// are kept this long (plus clock_skew), so that no token issued before
	// an end outlives its record (S3). Default 24h; 1m to 30 days.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// MaxBytes is the longest token accepted; longer is invalid_token.
	// Default 16384; 512 to 1048576.
	MaxBytes int `yaml:"max_bytes"`
	// RefreshInterval re-fetches jwks_uri (re-reads jwks_file) this often.
	// Default 5m; >= 1s.
	RefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// MinRefreshInterval rate-limits re-fetches triggered by an unknown key
	// id, so forged kids cannot hammer the issuer. Default 10s (or
	// jwks_refresh_interval when that is shorter); > 0 and
	// <= jwks_refresh_interval.
	MinRefreshInterval time.Duration `yaml:"jwks_min_refresh_interval"`
	// RequireAuthTime refuses tokens (and, under login.oidc, ID tokens)
	// without auth_time, so that S1 and S3 never fall back to iat or the
	// session's start. Default false.
	RequireAuthTime bool `yaml:"require_auth_time"`
	// LogoutAudience enables back-channel logout (S18) for a policy
	// without login.oidc: the issuer's logout tokens for this audience (the
	// client the provider knows the application as), signed with the keys
	// above, end sessions on POST /oidc/backchannel-logout. Default none
	// (off). Under login.oidc logout tokens are always for its client_id,
	// and this is an error.
	LogoutAudience string `yaml:"logout_audience"`
}

// loginSpec is where browsers are sent to sign in (S7). Required.
type loginSpec struct {
	// URL of the sign-in page. Exactly one of url and oidc is required;
	// absolute http(s) with a host, no fragment; may carry its own query.
	URL string `yaml:"url"`
	// OIDC runs the OpenID Connect code flow itself (S12–S17).
	OIDC oidcSpec `yaml:"oidc"`
	// ReturnParam is the query parameter carrying the original URL.
	// Default "rd"; non-empty. Only with url (under oidc the return URL
	// lives in the login transaction).
	ReturnParam string `yaml:"return_param"`
	// ReauthParams are added when a session ended rather than never
	// existed, to force a fresh sign-in. Default {prompt: login,
	// max_age: "0"}; {} for none. Values are strings (numbers are taken as
	// written); no key may equal return_param.
	ReauthParams map[string]string `yaml:"reauth_params"`
}

// oidcSpec is login.oidc: the gate as an OpenID Connect relying party.
type oidcSpec struct {
	// Issuer is the provider's issuer URL; discovery reads
	// {issuer}/.well-known/openid-configuration, whose issuer must equal
	// it exactly. Required; https (http only for loopback hosts).
	Issuer string `yaml:"issuer"`
	// ClientID is the client registered at the provider. Required.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (surrounding white space
	// trimmed), relative to the policy file's directory. Absent: a public
	// client, PKCE alone.
	ClientSecretFile string `yaml:"client_secret_file"`
	// ClientKeyFile holds the client's PEM private key for private_key_jwt
	// (RSA of 2048 bits or more, EC P-256/384/521, Ed25519), relative to
	// the policy file's directory. Exclusive with client_secret_file.
	ClientKeyFile string `yaml:"client_key_file"`
	// ClientKeyID is the kid of the client's assertions, as registered at
	// the provider. Default the key's RFC 7638 thumbprint (SHA-256,
	// base64url). Only with client_key_file.
	ClientKeyID string `yaml:"client_key_id"`
	// ClientAuth is how the client authenticates at the token endpoint:
	// basic (client_secret_basic), post (client_secret_post),
	// private_key_jwt or none. Default: private_key_jwt with a key, none
	// without a secret, else basic unless the provider advertises only
	// client_secret_post.
	ClientAuth string `yaml:"client_auth"`
	// Scopes requested. Default [openid, profile, email]; must include
	// openid; refresh tokens often need offline_access.
	Scopes []string `yaml:"scopes"`
	// CallbackPath is the redirect URI's path on every host of the policy.
	// Default /_sessiongate/callback. A path; not under bypass, not the
	// logout path.
	CallbackPath string `yaml:"callback_path"`
	// Params are extra authorization request parameters (acr_values,
	// domain_hint, …). Default none; none of the parameters the flow sets.
	Params map[string]string `yaml:"params"`
}

// upstreamSpec is what the application receives with an allowed request of
// a sign-in session. Only with login.oidc.
type upstreamSpec struct {
	// AccessToken is where the session's access token goes: authorization
	// (Authorization: Bearer …), another header name (the bare token), or
	// none. Default authorization.
	AccessToken string `yaml:"access_token"`
	// Headers maps a request header name to the ID-token claim whose value
	// it carries. Default {x-sessiongate-name: name, x-sessiongate-email:
	// email, x-sessiongate-groups: groups}; {} for none.
	Headers map[string]string `yaml:"headers"`
}

// logoutSpec is the sign-out endpoint (S6). Optional.
type logoutSpec struct {
	// Path is the exact sign-out path. Default none (no sign-out handling).
	// Starts with "/", no query; must not be under a bypass prefix nor
	// equal a passive path, or sign-out would never end the session.
	Path string `yaml:"path"`
	// Match is how request paths are compared with Path: "exact" (default,
	// byte for byte), "normalized" (the spellings an application may take
	// for the same path: case, trailing "/", ";" parameters, dot segments,
	// encoded unreserved characters) or "prefix" (normalized, and
	// everything below it).
	Match string `yaml:"match"`
	// RedirectURL is where the client goes after signing out. Required
	// when path is set, and only then; absolute http(s).
	RedirectURL string `yaml:"redirect_url"`
}
