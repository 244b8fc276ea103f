package oidc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/sessiongate/sessiongate/authz"
)

// Config is what one login.oidc policy says about its sign-in, defaults
// applied (package policy's OIDCConfig, converted by the caller).
type Config struct {
	Issuer   string
	ClientID string
	// ClientSecret is "" for a public client (PKCE alone).
	ClientSecret string
	// ClientAuth is "basic" (client_secret_basic), "post"
	// (client_secret_post), "private_key_jwt" (ClientKey signs an assertion
	// per token request), "none", or "": private_key_jwt with a key, none
	// without a secret, else basic unless discovery lists only
	// client_secret_post.
	ClientAuth string
	// ClientKey is the PEM private key of private_key_jwt; nil otherwise.
	// ClientKeyID is the kid of its assertions ("": the key's RFC 7638
	// thumbprint).
	ClientKey    []byte
	ClientKeyID  string
	Scopes       []string
	CallbackPath string
	// Params are added to every authorization request; ReauthParams too
	// when a session ended (S7, S14).
	Params       map[string]string
	ReauthParams map[string]string
	// MaxAge, when positive, is sent as max_age (whole seconds, rounded
	// up) on every authorization request, before Params and ReauthParams,
	// which may replace it: a provider must then re-authenticate when its
	// own sign-in is older, and put auth_time in the ID token (OpenID
	// Connect Core §3.1.2.1), so that a sign-in older than the policy's
	// lifetime is seen even when the browser has dropped its cookie.
	MaxAge time.Duration
	// PostLogoutRedirectURL is where the provider sends the browser after
	// RP-initiated logout, and where the gate sends it when the provider
	// has no end_session_endpoint (S17).
	PostLogoutRedirectURL string
	// Headers map identity headers to ID-token claims.
	Headers []HeaderClaim
	// Algorithms allowed for ID-token signatures (default
	// DefaultAlgorithms); further narrowed to what discovery advertises.
	Algorithms []string
	// ClockSkew tolerated on exp, iat and auth_time.
	ClockSkew time.Duration
	// BindClaims are read into Claims.Bind, as the token verifier does.
	BindClaims []string
	// RequireAuthTime refuses ID tokens without auth_time. Regardless of
	// it, a sign-in after a session ended needs auth_time (S14).
	RequireAuthTime bool
}

// HeaderClaim maps one upstream identity header (lower case) to the
// ID-token claim whose value it carries.
type HeaderClaim struct {
	Header, Claim string
}

// SignIn is the authz.SignIn of one login.oidc policy. Safe for concurrent
// use; a policy reload builds a new one that shares the issuer's discovery.
type SignIn struct {
	rp        *RP
	policy    string
	cfg       Config
	disc      *discovery
	params    []oauth2.AuthCodeOption
	reauth    []oauth2.AuthCodeOption
	grantAD   []byte     // format 2, which Seal writes
	grantADv1 []byte     // format 1, which Open still reads
	key       *clientKey // private_key_jwt; nil otherwise
	accessVer atomic.Pointer[builtVerifier]
}

var _ authz.SignIn = (*SignIn)(nil)

// SignIn validates cfg and returns the sign-in of policy. It does not wait
// for the network: the issuer is discovered by Run, and Start answers
// provider_unavailable until then.
func (rp *RP) SignIn(policy string, cfg Config) (*SignIn, error) {
	var errs []error
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && authz.IsLoopbackHost(u.Hostname()))) {
		errs = append(errs, errors.New("issuer: must be an https URL (http only on a loopback host)"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("client_id: required"))
	}
	switch cfg.ClientAuth {
	case "", "none", "basic", "post", "private_key_jwt":
	default:
		errs = append(errs, fmt.Errorf("client_auth: %q is not basic, post, private_key_jwt or none", cfg.ClientAuth))
	}
	if (cfg.ClientAuth == "basic" || cfg.ClientAuth == "post") && cfg.ClientSecret == "" {
		errs = append(errs, errors.New("client_auth: needs a client secret"))
	}
	var key *clientKey
	switch {
	case cfg.ClientAuth == "private_key_jwt" && len(cfg.ClientKey) == 0:
		errs = append(errs, errors.New("client_auth: private_key_jwt needs a client key"))
	case len(cfg.ClientKey) > 0 && cfg.ClientAuth != "" && cfg.ClientAuth != "private_key_jwt":
		errs = append(errs, errors.New("client_auth: a client key is for private_key_jwt"))
	case len(cfg.ClientKey) > 0:
		var err error
		if key, err = parseClientKey(cfg.ClientKey, cfg.ClientKeyID); err != nil {
			errs = append(errs, err)
		}
	}
	if !slices.Contains(cfg.Scopes, "openid") {
		errs = append(errs, errors.New("scopes: must include openid"))
	}
	if !strings.HasPrefix(cfg.CallbackPath, "/") || strings.ContainsAny(cfg.CallbackPath, "?#") {
		errs = append(errs, errors.New("callback_path: must be a path"))
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms()
	}
	for _, a := range cfg.Algorithms {
		if !asymmetric(a) {
			errs = append(errs, fmt.Errorf("algorithms: %q is not an accepted asymmetric algorithm", a))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &SignIn{rp: rp, policy: policy, cfg: cfg, disc: rp.discovery(cfg.Issuer), key: key,
		grantAD: policyAD(grantAD, policy), grantADv1: policyAD(grantADv1, policy)}
	if cfg.MaxAge > 0 {
		secs := int64((cfg.MaxAge + time.Second - 1) / time.Second)
		s.params = append(s.params, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(secs, 10)))
	}
	for _, k := range sortedKeys(cfg.Params) {
		s.params = append(s.params, oauth2.SetAuthURLParam(k, cfg.Params[k]))
	}
	for _, k := range sortedKeys(cfg.ReauthParams) {
		s.reauth = append(s.reauth, oauth2.SetAuthURLParam(k, cfg.ReauthParams[k]))
	}
	return s, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Policy returns the name of the policy the sign-in belongs to.
func (s *SignIn) Policy() string { return s.policy }

// Ready reports whether the sign-in can start: nil once the provider's
// configuration was discovered, else why not (no secret in it).
func (s *SignIn) Ready() error { return s.disc.ready() }

// CallbackPath implements authz.SignIn.
func (s *SignIn) CallbackPath() string { return s.cfg.CallbackPath }

func failed(detail string) error {
	return &authz.SignInError{Reason: authz.ReasonSignInFailed, Detail: detail}
}

func unavailable(detail string) error {
	return &authz.SignInError{Reason: authz.ReasonProviderUnavailable, Detail: detail}
}

var errNotDiscovered = unavailable("the identity provider's configuration could not be loaded yet")

// oauth2Config is the client as the token endpoint sees it.
func (s *SignIn) oauth2Config(md *metadata, redirectURI string) *oauth2.Config {
	c := &oauth2.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, RedirectURL: redirectURI,
		Scopes: s.cfg.Scopes, Endpoint: oauth2.Endpoint{AuthURL: md.authURL, TokenURL: md.tokenURL}}
	switch s.clientAuth(md) {
	case "basic":
		c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	case "private_key_jwt":
		// client_id in the form; the assertion is added by tokenCtx's
		// transport, and no secret exists.
		c.ClientSecret, c.Endpoint.AuthStyle = "", oauth2.AuthStyleInParams
	default: // post sends the secret as a form field, none sends client_id alone
		c.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	return c
}

// clientAuth resolves ClientAuth "" from the secret and discovery.
func (s *SignIn) clientAuth(md *metadata) string {
	switch {
	case s.cfg.ClientAuth != "":
		return s.cfg.ClientAuth
	case s.key != nil:
		return "private_key_jwt"
	case s.cfg.ClientSecret == "":
		return "none"
	case len(md.authMethods) > 0 && !slices.Contains(md.authMethods, "client_secret_basic") && slices.Contains(md.authMethods, "client_secret_post"):
		return "post"
	}
	return "basic" // the default of OAuth 2.0 and of discovery
}

// clientCtx carries the RP's HTTP client to oauth2 and go-oidc.
func (s *SignIn) clientCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, s.rp.client)
}

// Start implements authz.SignIn (S12).
func (s *SignIn) Start(ctx context.Context, r *authz.Request, returnURL string, endedAt int64) (string, string, error) {
	md := s.disc.cur.Load()
	if md == nil {
		return "", "", errNotDiscovered
	}
	redirectURI, ok := s.redirectURI(r)
	if !ok {
		return "", "", failed("the request's host is not a valid host name")
	}
	cookies := ""
	if r.Headers != nil {
		cookies = r.Headers.Get("cookie")
	}
	if len(returnURL) > MaxReturnURL || s.isCallback(returnURL) {
		// The site root rather than a cookie too large to come back, or a
		// return to a callback, which would replay a used attempt.
		returnURL = ""
	}
	slot := pickSlot(s.rp.keys, cookies, s.policy)
	t := &txn{State: newState(slot), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(), ReturnURL: returnURL,
		RedirectURI: redirectURI, Policy: s.policy, EndedAt: endedAt, Created: s.rp.clock.Now().UnixMilli()}
	opts := make([]oauth2.AuthCodeOption, 0, 2+len(s.params)+len(s.reauth))
	opts = append(opts, s.params...)
	if endedAt > 0 {
		opts = append(opts, s.reauth...)
	}
	// Last, so that nothing configured can replace them.
	opts = append(opts, oauth2.S256ChallengeOption(t.Verifier), oauth2.SetAuthURLParam("nonce", t.Nonce))
	loc := s.oauth2Config(md, redirectURI).AuthCodeURL(t.State, opts...)
	return loc, setCookie(slot, sealTxn(s.rp.keys, t, slot)), nil
}

// isCallback reports whether u points at the callback path.
func (s *SignIn) isCallback(u string) bool {
	p, err := url.Parse(u)
	return err == nil && p.Path == s.cfg.CallbackPath
}

// redirectURI is the request's own scheme and host with the callback path.
func (s *SignIn) redirectURI(r *authz.Request) (string, bool) {
	if !validHostPort(r.Host) {
		return "", false
	}
	scheme := "https"
	if r.Scheme == "http" {
		scheme = "http"
	}
	return scheme + "://" + strings.ToLower(r.Host) + s.cfg.CallbackPath, true
}

// validHostPort accepts host[:port] as a URL authority without userinfo:
// DNS names, IPv4 and bracketed IPv6, nothing that could change the URL's
// meaning.
func validHostPort(h string) bool {
	if h == "" || len(h) > 262 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	u, err := url.Parse("https://" + h + "/")
	return err == nil && u.Host == h && u.User == nil && u.Hostname() != ""
}

func randomString() string {
	var b [stateRandom]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// EndSessionURL implements authz.SignIn (S17, RP-Initiated Logout 1.0).
func (s *SignIn) EndSessionURL(r *authz.Request, g *authz.Grant) string {
	md := s.disc.cur.Load()
	if md == nil || md.endSessionURL == "" {
		if s.cfg.PostLogoutRedirectURL == "" {
			return "/"
		}
		return s.cfg.PostLogoutRedirectURL
	}
	q := url.Values{"client_id": {s.cfg.ClientID}, "state": {randomString()}}
	if s.cfg.PostLogoutRedirectURL != "" {
		q.Set("post_logout_redirect_uri", s.cfg.PostLogoutRedirectURL)
	}
	if g != nil && g.IDToken != "" {
		q.Set("id_token_hint", g.IDToken)
	}
	sep := "?"
	if strings.Contains(md.endSessionURL, "?") {
		sep = "&"
	}
	return md.endSessionURL + sep + q.Encode()
}

// Seal implements authz.SignIn (S15).
func (s *SignIn) Seal(g *authz.Grant) ([]byte, error) {
	if g == nil {
		return nil, errors.New("no grant to seal")
	}
	return s.rp.keys.seal(encodeGrant(g, grantV2), s.grantAD), nil
}

// Open implements authz.SignIn. It reads format 2 and, failing that, the
// format 1 that earlier versions sealed (in a state file, in Redis).
func (s *SignIn) Open(sealed []byte) (*authz.Grant, error) {
	if pt, err := s.rp.keys.open(sealed, s.grantAD); err == nil {
		return decodeGrant(pt, grantV2)
	}
	pt, err := s.rp.keys.open(sealed, s.grantADv1)
	if err != nil {
		return nil, err
	}
	return decodeGrant(pt, grantV1)
}

// policyAD is the associated data ad of one policy's values: a grant of one
// policy never opens as another's.
func policyAD(ad []byte, policy string) []byte {
	return append(append([]byte(nil), ad...), "\x00"+policy...)
}
