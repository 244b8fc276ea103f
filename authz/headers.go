package authz

// Names of the headers the gate sets (DESIGN §2), shared by every adapter.
// The first three go upstream with an allowed request's identity; the gate
// overwrites or removes client-sent copies of all five (S10).
const (
	HeaderUser          = "x-sessiongate-user"
	HeaderSessionExpiry = "x-sessiongate-session-expires-at"
	HeaderIdleExpiry    = "x-sessiongate-idle-expires-at"
	HeaderExpiresIn     = "x-sessiongate-expires-in"
	HeaderReason        = "x-sessiongate-reason"
)

// Names of the identity headers a sign-in (login.oidc) gives the application
// by default (upstream.headers): the user's name, e-mail and groups from the
// ID token. Forward-auth answers for proxies that copy a fixed list of
// headers always carry them, empty when not set.
const (
	HeaderName   = "x-sessiongate-name"
	HeaderEmail  = "x-sessiongate-email"
	HeaderGroups = "x-sessiongate-groups"
)

// IsGateHeaderAlias reports whether name is one of the gate's header names
// spelled with "_" in place of some "-" (any letter case). CGI-style
// upstreams (PHP, WSGI, Rack) read "-" and "_" alike, so a client's
// "x_sessiongate_user" would reach them as the gate's identity header.
// Adapters remove the aliases a request actually carries: listing every
// possible spelling in every response would cost each request dozens of
// header removals.
func IsGateHeaderAlias(name string) bool {
	underscore := false
	for i := 0; i < len(name); i++ {
		if name[i] == '_' {
			underscore = true
			break
		}
	}
	if !underscore {
		return false
	}
	for _, h := range [...]string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, HeaderExpiresIn, HeaderReason} {
		if len(name) == len(h) && foldsTo(name, h) {
			return true
		}
	}
	return false
}

// foldsTo compares name with the lower-case, dashed h, taking "_" as "-" and
// ignoring ASCII case.
func foldsTo(name, h string) bool {
	for i := 0; i < len(h); i++ {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != h[i] {
			return false
		}
	}
	return true
}

// IsHeaderValue reports whether v passes through every proxy and HTTP
// library unchanged as a header value: no control byte (CR, LF, NUL, TAB,
// DEL…) and no space at either end. Go drops a header holding NUL, Envoy
// and nginx refuse or split on CR and LF, and every parser trims outer
// whitespace, so that "alice " would reach an upstream as "alice". This is
// the one rule for identities that reach headers: whatever makes claims
// (token verification, sign-in) refuses a token whose subject, or any other
// claim it maps to a header, fails it; nothing is encoded.
func IsHeaderValue(v string) bool {
	if v != "" && (v[0] == ' ' || v[len(v)-1] == ' ') {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
