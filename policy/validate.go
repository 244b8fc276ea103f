package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// TokenConfig is what a policy says about verifying its tokens (S5), with
// defaults applied: the input of Options.NewVerifier. Plain data; never
// mutate a TokenConfig handed out.
type TokenConfig struct {
	Issuer    string
	Audiences []string
	// Exactly one of JWKSFile (absolute, resolved against the policy file's
	// directory without resolving symlinks, so re-reads follow ConfigMap
	// swaps) and JWKSURI is set.
	JWKSFile   string
	JWKSURI    string
	Algorithms []string
	ClockSkew  time.Duration
	MaxBytes   int
	// BindClaims are the claims a verifier copies into authz.Claims.Bind, in
	// this order.
	BindClaims []string
	// RefreshInterval is the period of re-fetching (re-reading) the key set;
	// MinRefreshInterval the least time between re-fetches triggered by an
	// unknown key id.
	RefreshInterval    time.Duration
	MinRefreshInterval time.Duration
	// RequireAuthTime refuses tokens without auth_time.
	RequireAuthTime bool
	// MaxLifetime is the longest exp − iat a verifier accepts.
	MaxLifetime time.Duration
}

// OIDCConfig is what a login.oidc policy says about its sign-in, with
// defaults applied: the input of Options.NewSignIn. Plain data; never mutate
// one handed out.
type OIDCConfig struct {
	Issuer   string
	ClientID string
	// ClientSecret is the content of client_secret_file, trimmed; "" for a
	// public client. Never log it.
	ClientSecret string
	// ClientKey is the PEM content of client_key_file (private_key_jwt);
	// nil otherwise. Never log it. ClientKeyID is client_key_id.
	ClientKey   []byte
	ClientKeyID string
	// ClientAuth is "basic", "post", "private_key_jwt", "none", or "" to
	// choose from the secret or key and the provider's discovery document.
	ClientAuth   string
	Scopes       []string
	CallbackPath string
	// Params are the extra authorization parameters; ReauthParams those
	// added when a session ended (login.reauth_params).
	Params       map[string]string
	ReauthParams map[string]string
	// PostLogoutRedirectURL is logout.redirect_url ("" without logout).
	PostLogoutRedirectURL string
	// MaxAge is session.absolute_timeout, sent as max_age on every
	// authorization request (unless params or reauth_params set max_age):
	// the provider asks for credentials when its own sign-in is older than
	// a session may live, and must say when that sign-in was (auth_time).
	MaxAge time.Duration
	// Headers are the identity headers, sorted by name.
	Headers []HeaderClaim
	// Token verifies API clients' bearer tokens (and sets the ID token's
	// algorithms, clock skew, bind claims and auth_time requirement). Its
	// JWKSFile and JWKSURI are both empty when the keys are the discovered
	// ones; its issuer defaults to Issuer and its audiences to [ClientID].
	Token TokenConfig
}

// HeaderClaim maps one upstream identity header (lower case) to the
// ID-token claim whose value it carries.
type HeaderClaim struct {
	Header, Claim string
}

// compiled is one valid-looking policy file, ready to join a Set.
type compiled struct {
	file      string
	policy    *authz.Policy
	token     TokenConfig
	tokenLine int
	// logoutAudience is token.logout_audience (back-channel logout of a
	// token-mode policy), "" for none.
	logoutAudience string
	// oidc is set for login.oidc policies, which get their verifier from
	// Options.NewSignIn rather than NewVerifier.
	oidc     *OIDCConfig
	oidcLine int
	// secretFile and keyFile are login.oidc.client_secret_file and
	// client_key_file, absolute, for the Watcher to reload on a rotation.
	secretFile, keyFile string
	hosts               []hostRef
	warnings            Errors
}

// hostRef remembers where a host was written, to place cross-file errors.
type hostRef struct {
	host string
	at   Error
}

// has reports whether field is present in the file.
func (d *decoder) has(field string) bool {
	_, ok := d.lines[field]
	return ok
}

// line places a problem of field: its own line, else the nearest enclosing
// field's (a missing field is reported where its section is), else line 1.
func (d *decoder) line(field string) int {
	for ; field != ""; field = parentField(field) {
		if l, ok := d.lines[field]; ok {
			return l
		}
	}
	return 1
}

// broken reports whether field or an enclosing field already has a problem.
func (d *decoder) broken(field string) bool {
	for ; field != ""; field = parentField(field) {
		if d.bad[field] {
			return true
		}
	}
	return false
}

func parentField(f string) string {
	if i := strings.LastIndexAny(f, ".["); i >= 0 {
		return f[:i]
	}
	return ""
}

// fail reports a validation problem of field unless it already has one.
// warnf records a choice worth a second look that is not a mistake: the
// policy loads, and validate and serve print it. An absent field has no line.
func (d *decoder) warnf(field, format string, args ...any) {
	d.warns = append(d.warns, Error{File: d.file, Line: d.lines[field], Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) fail(field, format string, args ...any) {
	if !d.broken(field) {
		d.errorf(d.line(field), field, format, args...)
	}
}

// required reports a missing field (unless its whole section is missing,
// which is reported once) and whether the field is there to be checked.
func (d *decoder) required(field string) bool {
	if d.broken(field) {
		return false
	}
	if d.has(field) {
		return true
	}
	if parent := parentField(field); parent == "" || d.has(parent) {
		d.fail(field, "required")
	}
	return false
}

func (d *decoder) nonEmpty(field, v string) {
	if d.required(field) && v == "" {
		d.fail(field, "must not be empty")
	}
}

// compile validates a decoded file, applies defaults and builds its policy.
func (d *decoder) compile(name string, sp *spec) *compiled {
	p := &authz.Policy{Name: name}
	c := &compiled{file: d.file, policy: p, tokenLine: d.line("token")}
	p.Hosts, c.hosts = d.hosts(sp.Hosts)
	switch mode := sp.Mode; {
	case !d.has("mode"), mode == "enforce":
	case mode == "dry-run":
		p.DryRun = true
	default:
		d.fail("mode", "must be enforce or dry-run, not %q", sp.Mode)
	}
	d.session(p, &sp.Session)
	p.Bypass = d.paths("bypass", sp.Bypass)
	var oidc *oidcSpec
	if d.has("login.oidc") {
		oidc = &sp.Login.OIDC
	}
	c.token = d.token(&sp.Token, p, oidc)
	p.Issuer = c.token.Issuer
	if d.has("token.logout_audience") {
		switch {
		case oidc != nil:
			d.fail("token.logout_audience", "under login.oidc logout tokens are for login.oidc.client_id: remove it")
		case sp.Token.LogoutAudience == "":
			d.fail("token.logout_audience", "must not be empty (omit it for no back-channel logout)")
		default:
			c.logoutAudience = sp.Token.LogoutAudience
		}
	}
	d.login(&p.Login, &sp.Login)
	d.logout(p, &sp.Logout)
	if oidc != nil {
		c.oidc, c.secretFile, c.keyFile = d.oidc(p, sp, c.token)
		c.oidcLine = d.line("login.oidc")
		if c.oidc != nil {
			p.Issuer = c.oidc.Issuer // sessions are signed in with it
		}
	}
	d.upstream(p, &sp.Upstream, oidc != nil, c.oidc)
	return c
}

func (d *decoder) hosts(in []string) ([]string, []hostRef) {
	if !d.required("hosts") {
		return nil, nil
	}
	if len(in) == 0 {
		d.fail("hosts", "must not be empty")
		return nil, nil
	}
	var hosts []string
	var refs []hostRef
	seen := map[string]string{}
	for i, h := range in {
		f := fmt.Sprintf("hosts[%d]", i)
		host, problem := normalizeHost(h)
		if problem != "" {
			d.fail(f, "%q %s", h, problem)
			continue
		}
		if first, dup := seen[host]; dup {
			d.fail(f, "%q repeats %s", h, first)
			continue
		}
		seen[host] = f
		hosts = append(hosts, host)
		refs = append(refs, hostRef{host, Error{File: d.file, Line: d.line(f), Field: f}})
	}
	return hosts, refs
}

// normalizeHost returns the form Match compares against: lower case, no
// trailing dot, IPv6 without brackets; or what is wrong with h.
func normalizeHost(h string) (string, string) {
	h = strings.ToLower(h)
	switch {
	case h == "*":
		return h, ""
	case strings.Contains(h, "://"):
		return "", "must be a host name, not a URL"
	case strings.ContainsAny(h, "/?#"):
		return "", "must be a host name without a path"
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		if ip.Zone() != "" {
			return "", "must not carry an IPv6 zone"
		}
		return ip.String(), ""
	}
	if strings.Contains(h, ":") {
		return "", "must not carry a port (ports are stripped before matching)"
	}
	h = strings.TrimSuffix(h, ".")
	if !validDNSName(strings.TrimPrefix(h, "*.")) {
		return "", `is not a valid host name ("*" may only stand alone or as the first label, "*.example.com")`
	}
	return h, ""
}

func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (d *decoder) session(p *authz.Policy, s *sessionSpec) {
	if !d.required("session") {
		return
	}
	abs, idle := s.AbsoluteTimeout, s.IdleTimeout
	if d.required("session.absolute_timeout") && abs <= 0 {
		d.fail("session.absolute_timeout", "must be > 0")
	}
	if d.required("session.idle_timeout") {
		switch {
		case idle <= 0:
			d.fail("session.idle_timeout", "must be > 0")
		case abs > 0 && idle >= abs:
			d.fail("session.idle_timeout", "must be less than session.absolute_timeout (%s)", abs)
		}
	}
	switch w := s.WarnBefore; {
	case w < 0:
		d.fail("session.warn_before", "must be >= 0")
	case abs > 0 && w >= abs:
		d.fail("session.warn_before", "must be less than session.absolute_timeout (%s)", abs)
	}
	gran := s.ActivityGranularity
	switch {
	case !d.has("session.activity_granularity"):
		gran = idle / defaultGranularityDivisor
	case gran < 0:
		d.fail("session.activity_granularity", "must be >= 0")
	case idle > 0 && gran > idle/maxGranularityDivisor:
		d.fail("session.activity_granularity", "must be at most a quarter of session.idle_timeout (%s)", idle/maxGranularityDivisor)
	}
	p.AbsoluteTimeout, p.IdleTimeout, p.WarnBefore, p.ActivityGranularity = abs, idle, s.WarnBefore, gran
	p.PassivePaths = d.paths("session.passive_paths", s.PassivePaths)
	for i, c := range s.BindClaims {
		f := fmt.Sprintf("session.bind_claims[%d]", i)
		if c == "" {
			d.fail(f, "must not be empty")
		} else if j := slices.Index(s.BindClaims, c); j < i {
			d.fail(f, "%q repeats session.bind_claims[%d]", c, j)
		}
	}
	p.BindClaims = s.BindClaims
	switch sf := s.StoreFailure; {
	case !d.has("session.store_failure"), sf == "deny":
	case sf == "continue":
		p.StoreFailOpen = true
	default:
		d.fail("session.store_failure", "must be deny or continue, not %q", s.StoreFailure)
	}

	p.Cookie = authz.Cookie{Name: s.Cookie.Name, SameSite: "Lax"}
	if !d.has("session.cookie.name") {
		p.Cookie.Name = defaultCookieName
	} else if !isToken(p.Cookie.Name) {
		d.fail("session.cookie.name", "%q is not a valid cookie name", p.Cookie.Name)
	}
	if d.has("session.cookie.same_site") {
		modes := []string{"Lax", "Strict", "None"}
		if i := slices.IndexFunc(modes, func(m string) bool { return strings.EqualFold(m, s.Cookie.SameSite) }); i >= 0 {
			p.Cookie.SameSite = modes[i]
		} else {
			d.fail("session.cookie.same_site", "must be Lax, Strict or None, not %q", s.Cookie.SameSite)
		}
	}
}

// paths checks request paths: bypass prefixes, passive paths.
func (d *decoder) paths(field string, in []string) []string {
	for i, p := range in {
		if problem := pathProblem(p); problem != "" {
			d.fail(fmt.Sprintf("%s[%d]", field, i), "%q %s", p, problem)
		}
	}
	return in
}

func pathProblem(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return `must start with "/"`
	case strings.ContainsAny(p, "?#"):
		return "must not contain a query or fragment"
	}
	return ""
}

func (d *decoder) token(t *tokenSpec, p *authz.Policy, oidc *oidcSpec) TokenConfig {
	cfg := TokenConfig{
		RequireAuthTime:    t.RequireAuthTime,
		MaxLifetime:        t.MaxLifetime,
		Issuer:             t.Issuer,
		Audiences:          t.Audiences,
		Algorithms:         t.Algorithms,
		ClockSkew:          t.ClockSkew,
		MaxBytes:           t.MaxBytes,
		BindClaims:         p.BindClaims,
		RefreshInterval:    t.RefreshInterval,
		MinRefreshInterval: t.MinRefreshInterval,
	}
	// Under login.oidc the section is optional: absent, API clients' bearer
	// tokens are checked against the sign-in's issuer, its client as the
	// audience, with the discovered keys and every other default.
	if oidc == nil && !d.required("token") {
		return cfg
	}
	switch {
	case oidc != nil && !d.has("token.issuer"):
		cfg.Issuer = oidc.Issuer
	default:
		d.nonEmpty("token.issuer", t.Issuer)
	}
	switch {
	case oidc != nil && !d.has("token.audiences"):
		cfg.Audiences = []string{oidc.ClientID}
	case d.required("token.audiences") && len(t.Audiences) == 0:
		d.fail("token.audiences", "must not be empty")
	}
	for i, a := range t.Audiences {
		if a == "" {
			d.fail(fmt.Sprintf("token.audiences[%d]", i), "must not be empty")
		}
	}

	switch file, uri := d.has("token.jwks_file"), d.has("token.jwks_uri"); {
	case file && uri:
		d.fail("token.jwks_uri", "set only one of token.jwks_file and token.jwks_uri")
	case file:
		cfg.JWKSFile = d.jwksFile(t.JWKSFile)
	case uri:
		if u := d.absURL("token.jwks_uri", t.JWKSURI); u != nil && u.Scheme == "http" && !authz.IsLoopbackHost(u.Hostname()) {
			d.fail("token.jwks_uri", "must use https (http only for 127.0.0.1, localhost or [::1])")
		}
		cfg.JWKSURI = t.JWKSURI
	case oidc != nil:
		// The keys of the sign-in's discovery document.
	default:
		d.fail("token", "one of jwks_file or jwks_uri is required")
	}

	p.TokenSources = []authz.TokenSource{{Kind: authz.FromHeader, Name: "authorization"}}
	if d.has("token.from") {
		p.TokenSources = d.sources(t.From)
	}

	if !d.has("token.algorithms") {
		cfg.Algorithms = defaultAlgorithms()
	} else if len(t.Algorithms) == 0 {
		d.fail("token.algorithms", "must not be empty (omit it for the default)")
	}
	for i, a := range t.Algorithms {
		f := fmt.Sprintf("token.algorithms[%d]", i)
		switch {
		case strings.EqualFold(a, "none"):
			d.fail(f, `"none" is never accepted: tokens must be signed`)
		case strings.HasPrefix(strings.ToUpper(a), "HS"):
			d.fail(f, "%q is not accepted: HMAC would let anyone holding the public JWKS forge tokens", a)
		case !slices.Contains(defaultAlgorithms(), a):
			d.fail(f, "unsupported algorithm %q (supported: %s)", a, strings.Join(defaultAlgorithms(), ", "))
		case slices.Index(t.Algorithms, a) < i:
			d.fail(f, "%q repeats token.algorithms[%d]", a, slices.Index(t.Algorithms, a))
		}
	}

	if !d.has("token.clock_skew") {
		cfg.ClockSkew = defaultClockSkew
	} else if cfg.ClockSkew < 0 || cfg.ClockSkew > maxClockSkew {
		d.fail("token.clock_skew", "must be between 0s and %s", maxClockSkew)
	}
	p.ClockSkew = cfg.ClockSkew
	if !d.has("token.max_lifetime") {
		cfg.MaxLifetime = defaultMaxLifetime
	} else if cfg.MaxLifetime < minMaxLifetime || cfg.MaxLifetime > maxMaxLifetime {
		d.fail("token.max_lifetime", "must be between %s and %s", minMaxLifetime, maxMaxLifetime)
	}
	p.MaxTokenLifetime = cfg.MaxLifetime
	if !d.has("token.max_bytes") {
		cfg.MaxBytes = defaultMaxTokenBytes
	} else if cfg.MaxBytes < minTokenBytes || cfg.MaxBytes > maxTokenBytes {
		d.fail("token.max_bytes", "must be between %d and %d", minTokenBytes, maxTokenBytes)
	}
	p.MaxTokenBytes = cfg.MaxBytes
	if !d.has("token.jwks_refresh_interval") {
		cfg.RefreshInterval = defaultJWKSRefresh
	} else if cfg.RefreshInterval < minJWKSRefresh {
		d.fail("token.jwks_refresh_interval", "must be at least %s", minJWKSRefresh)
	}
	switch {
	case !d.has("token.jwks_min_refresh_interval"):
		cfg.MinRefreshInterval = min(defaultJWKSMinRefresh, max(cfg.RefreshInterval, minJWKSRefresh))
	case cfg.MinRefreshInterval <= 0:
		d.fail("token.jwks_min_refresh_interval", "must be > 0")
	case cfg.RefreshInterval > 0 && cfg.MinRefreshInterval > cfg.RefreshInterval:
		d.fail("token.jwks_min_refresh_interval", "must not exceed token.jwks_refresh_interval (%s)", cfg.RefreshInterval)
	}
	return cfg
}

// jwksFile checks the key file can be read now, so that a typo fails
// validation instead of every request, and returns its absolute path.
func (d *decoder) jwksFile(name string) string {
	const field = "token.jwks_file"
	if name == "" {
		d.fail(field, "must not be empty")
		return ""
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		d.fail(field, "%s: %s", path, ioMsg(err))
		return ""
	}
	f, err := os.Open(abs)
	if err != nil {
		d.fail(field, "cannot read %s: %s", path, ioMsg(err))
		return abs
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		d.fail(field, "%s is not a readable file", path)
	}
	return abs
}

func (d *decoder) sources(from []string) []authz.TokenSource {
	if len(from) == 0 {
		d.fail("token.from", "must not be empty (omit it for the default header:authorization)")
	}
	var out []authz.TokenSource
	for i, s := range from {
		f := fmt.Sprintf("token.from[%d]", i)
		kind, name, _ := strings.Cut(s, ":")
		var src authz.TokenSource
		switch kind {
		case "header":
			src = authz.TokenSource{Kind: authz.FromHeader, Name: strings.ToLower(name)}
		case "cookie":
			src = authz.TokenSource{Kind: authz.FromCookie, Name: name}
		default:
			d.fail(f, "%q must be header:NAME or cookie:NAME", s)
			continue
		}
		if !isToken(name) {
			d.fail(f, "%q: %q is not a valid %s name", s, name, kind)
			continue
		}
		if slices.Contains(out, src) {
			d.fail(f, "%q repeats an earlier source", s)
			continue
		}
		out = append(out, src)
	}
	return out
}

func (d *decoder) login(l *authz.Login, s *loginSpec) {
	if !d.required("login") {
		return
	}
	oidc := d.has("login.oidc")
	switch {
	case oidc && d.has("login.url"):
		d.fail("login.url", "set only one of login.url and login.oidc")
	case oidc:
		if d.has("login.return_param") {
			d.fail("login.return_param", "has no effect with login.oidc (the return URL lives in the login transaction)")
		}
	case !d.has("login.url"):
		d.fail("login", "one of url or oidc is required")
	default:
		if u := d.absURL("login.url", s.URL); u != nil && u.Fragment != "" {
			d.fail("login.url", "must not have a fragment: the return parameter is appended to the query")
		}
		l.URL = s.URL
		l.ReturnParam = s.ReturnParam
		if !d.has("login.return_param") {
			l.ReturnParam = defaultReturnParam
		} else if l.ReturnParam == "" {
			d.fail("login.return_param", "must not be empty")
		}
	}
	params := s.ReauthParams
	if !d.has("login.reauth_params") {
		params = map[string]string{"prompt": "login", "max_age": "0"}
	}
	q := url.Values{}
	for k, v := range params {
		switch {
		case !oidc && k == l.ReturnParam:
			d.fail("login.reauth_params."+k, "collides with login.return_param")
		case oidc && slices.Contains(flowParams, k):
			d.fail("login.reauth_params."+k, "is set by the sign-in itself")
		}
		q.Set(k, v)
	}
	l.ReauthQuery = q.Encode() // sorted by key: stable across reloads
}

// flowParams are the authorization request parameters the code flow sets
// itself (S12), which login.oidc.params and reauth_params may not override.
var flowParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method", "response_mode", "request", "request_uri"}

// oidc validates login.oidc (after token, login and logout) and returns the
// sign-in's configuration.
func (d *decoder) oidc(p *authz.Policy, sp *spec, token TokenConfig) (*OIDCConfig, string, string) {
	s := &sp.Login.OIDC
	cfg := &OIDCConfig{
		Issuer: s.Issuer, ClientID: s.ClientID, ClientAuth: s.ClientAuth, Scopes: s.Scopes,
		CallbackPath: s.CallbackPath, Params: s.Params, ReauthParams: sp.Login.ReauthParams,
		PostLogoutRedirectURL: p.Logout.RedirectURL, Token: token, MaxAge: p.AbsoluteTimeout,
	}
	if !d.has("login.reauth_params") {
		cfg.ReauthParams = map[string]string{"prompt": "login", "max_age": "0"}
	}
	if d.required("login.oidc.issuer") {
		if u := d.absURL("login.oidc.issuer", s.Issuer); u != nil {
			switch {
			case u.Scheme == "http" && !authz.IsLoopbackHost(u.Hostname()):
				d.fail("login.oidc.issuer", "must use https (http only for 127.0.0.1, localhost or [::1])")
			case u.RawQuery != "" || u.Fragment != "":
				d.fail("login.oidc.issuer", "must not have a query or fragment")
			}
		}
	}
	d.nonEmpty("login.oidc.client_id", s.ClientID)
	var secretPath, keyPath string
	secret, key := d.has("login.oidc.client_secret_file"), d.has("login.oidc.client_key_file")
	if secret {
		cfg.ClientSecret, secretPath = d.secretFile("login.oidc.client_secret_file", s.ClientSecretFile)
	}
	if key {
		var pem string
		pem, keyPath = d.readBeside("login.oidc.client_key_file", s.ClientKeyFile)
		cfg.ClientKey = []byte(pem)
		if secret {
			d.fail("login.oidc.client_key_file", "set only one of login.oidc.client_secret_file and login.oidc.client_key_file")
		}
	}
	switch id := s.ClientKeyID; {
	case !d.has("login.oidc.client_key_id"):
	case !key:
		d.fail("login.oidc.client_key_id", "has no effect without login.oidc.client_key_file")
	case id == "" || !printableASCII(id):
		d.fail("login.oidc.client_key_id", "must be a non-empty key id of printable characters")
	default:
		cfg.ClientKeyID = id
	}
	switch a := s.ClientAuth; {
	case !d.has("login.oidc.client_auth"):
	case a != "basic" && a != "post" && a != "none" && a != "private_key_jwt":
		d.fail("login.oidc.client_auth", "must be basic, post, private_key_jwt or none, not %q", a)
	case a == "none" && (secret || key):
		d.fail("login.oidc.client_auth", "none (a public client) contradicts a client secret or key")
	case a == "private_key_jwt" && !key:
		d.fail("login.oidc.client_auth", "private_key_jwt needs login.oidc.client_key_file")
	case (a == "basic" || a == "post") && !secret:
		d.fail("login.oidc.client_auth", "%s needs login.oidc.client_secret_file", a)
	}
	for i, sc := range s.Scopes {
		f := fmt.Sprintf("login.oidc.scopes[%d]", i)
		switch {
		case sc == "" || strings.ContainsAny(sc, "\"\\") || !printableASCII(sc):
			d.fail(f, "%q is not a valid scope", sc)
		case slices.Index(s.Scopes, sc) < i:
			d.fail(f, "%q repeats login.oidc.scopes[%d]", sc, slices.Index(s.Scopes, sc))
		}
	}
	if !d.has("login.oidc.scopes") {
		cfg.Scopes = defaultScopes()
	} else if !slices.Contains(s.Scopes, "openid") {
		d.fail("login.oidc.scopes", "must include openid")
	}
	const cb = "login.oidc.callback_path"
	if !d.has(cb) {
		cfg.CallbackPath = defaultCallbackPath
	} else if problem := pathProblem(s.CallbackPath); problem != "" {
		d.fail(cb, "%q %s", s.CallbackPath, problem)
	}
	for i, b := range p.Bypass {
		if authz.MatchPath(cfg.CallbackPath, b) {
			d.fail(cb, "%q is under bypass[%d] %q: the callback would never be seen", cfg.CallbackPath, i, b)
			break
		}
	}
	switch {
	case cfg.CallbackPath == p.Logout.Path:
		d.fail(cb, "%q equals logout.path", cfg.CallbackPath)
	case slices.Contains(p.PassivePaths, cfg.CallbackPath):
		d.fail(cb, "%q equals a session.passive_paths entry", cfg.CallbackPath)
	}
	for k := range s.Params {
		if slices.Contains(flowParams, k) {
			d.fail("login.oidc.params."+k, "is set by the sign-in itself")
		}
	}
	return cfg, secretPath, keyPath
}

// readBeside reads a file named relative to the policy file, trimmed of
// surrounding white space, and returns it with its absolute path. Errors
// name the file, never its content.
func (d *decoder) readBeside(field, name string) (string, string) {
	if name == "" {
		d.fail(field, "must not be empty")
		return "", ""
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	abs, _ := filepath.Abs(path)
	data, err := os.ReadFile(path)
	if err != nil {
		d.fail(field, "cannot read %s: %s", path, ioMsg(err))
		return "", abs
	}
	content := strings.TrimSpace(string(data))
	if content == "" {
		d.fail(field, "%s is empty", path)
	}
	return content, abs
}

// secretFile reads a client secret beside the policy file: one line of
// printable characters.
func (d *decoder) secretFile(field, name string) (string, string) {
	secret, abs := d.readBeside(field, name)
	if secret != "" && !printableASCII(secret) {
		d.fail(field, "%s holds more than one line or non-printable characters", abs)
	}
	return secret, abs
}

// upstream validates the upstream section, which only login.oidc policies
// may have, and applies its defaults to p and cfg.
func (d *decoder) upstream(p *authz.Policy, s *upstreamSpec, oidc bool, cfg *OIDCConfig) {
	if !oidc {
		if d.has("upstream") {
			d.fail("upstream", "only with login.oidc (there is no sign-in session to take values from)")
		}
		return
	}
	const at = "upstream.access_token"
	switch h := strings.ToLower(s.AccessToken); {
	case !d.has(at):
		p.Upstream.AccessToken = defaultAccessTokenHeader
	case h == "none":
	case !isToken(h):
		d.fail(at, "%q must be authorization, none or a header name", s.AccessToken)
	case reservedHeader(h) && h != "authorization":
		d.fail(at, "%q is a header the gate or HTTP itself owns", s.AccessToken)
	default:
		p.Upstream.AccessToken = h
	}
	headers := s.Headers
	if !d.has("upstream.headers") {
		headers = defaultIdentityHeaders()
	}
	for name, claim := range headers {
		f := "upstream.headers." + name
		h := strings.ToLower(name)
		switch {
		case !isToken(h):
			d.fail(f, "%q is not a valid header name", name)
		case reservedHeader(h) || h == p.Upstream.AccessToken:
			d.fail(f, "%q is a header the gate or HTTP itself owns", name)
		case slices.ContainsFunc(p.Upstream.IdentityHeaders, func(o string) bool { return o == h }):
			d.fail(f, "%q repeats another header of any letter case", name)
		case claim == "":
			d.fail(f, "claim must not be empty")
		default:
			p.Upstream.IdentityHeaders = append(p.Upstream.IdentityHeaders, h)
			if cfg != nil {
				cfg.Headers = append(cfg.Headers, HeaderClaim{Header: h, Claim: claim})
			}
		}
	}
	slices.Sort(p.Upstream.IdentityHeaders)
	if cfg != nil {
		slices.SortFunc(cfg.Headers, func(a, b HeaderClaim) int { return strings.Compare(a.Header, b.Header) })
	}
}

// reservedHeader reports whether a lower-case header name belongs to HTTP
// framing, the proxy or the gate, which identity headers may not replace.
func reservedHeader(h string) bool {
	switch h {
	case "authorization", "cookie", "host", "content-length", "content-type", "transfer-encoding",
		"connection", "te", "upgrade", "keep-alive", "proxy-authorization", "forwarded",
		authz.HeaderUser, authz.HeaderSessionExpiry, authz.HeaderIdleExpiry, authz.HeaderExpiresIn, authz.HeaderReason:
		return true
	}
	return strings.HasPrefix(h, "x-forwarded-") || strings.HasPrefix(h, "x-envoy-")
}

func printableASCII(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func (d *decoder) logout(p *authz.Policy, s *logoutSpec) {
	if !d.has("logout.path") {
		for _, f := range []string{"logout.redirect_url", "logout.match"} {
			if d.has(f) {
				d.fail(f, "has no effect without logout.path")
			}
		}
		if !d.has("logout") {
			d.warnf("logout", "not set: users cannot sign out through sessiongate, so a session ends only by its timeouts; set logout.path and logout.redirect_url, or `logout: {}` to say there is none (S6)")
		}
		return
	}
	var match authz.LogoutMatch
	switch s.Match {
	case "", "exact":
	case "normalized":
		match = authz.LogoutNormalized
	case "prefix":
		match = authz.LogoutPrefix
	default:
		d.fail("logout.match", "must be exact, normalized or prefix, not %q", s.Match)
	}
	if problem := pathProblem(s.Path); problem != "" {
		d.fail("logout.path", "%q %s", s.Path, problem)
	}
	for i, b := range p.Bypass {
		if authz.MatchPath(s.Path, b) {
			d.fail("logout.path", "%q is under bypass[%d] %q: sign-out would never end the session", s.Path, i, b)
			break
		}
	}
	if i := slices.Index(p.PassivePaths, s.Path); i >= 0 {
		d.fail("logout.path", "%q equals session.passive_paths[%d]", s.Path, i)
	}
	if d.required("logout.redirect_url") {
		d.absURL("logout.redirect_url", s.RedirectURL)
	}
	p.Logout = authz.Logout{Path: s.Path, Match: match, RedirectURL: s.RedirectURL}
}

// absURL checks raw is an absolute http(s) URL with a host and without
// credentials (policy files are not the place for secrets, and error
// messages and logs echo URLs). It returns nil after reporting a problem.
func (d *decoder) absURL(field, raw string) *url.URL {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		// The parse error without the *url.Error wrapper, which repeats
		// the URL (and whatever secret it carries).
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		d.fail(field, "not a valid URL: %v", cause)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		d.fail(field, "must be an absolute http(s) URL with a host, such as https://login.example.com/start")
	case u.User != nil:
		d.fail(field, "must not carry user credentials")
	default:
		return u
	}
	return nil
}

// isToken reports whether s is an RFC 7230 token, the syntax of header and
// cookie names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
