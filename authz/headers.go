package authz

// Names of the headers the gate sets (DESIGN §2), shared by every adapter.
const (
	HeaderUser          = "x-sessiongate-user"
	HeaderSessionExpiry = "x-sessiongate-session-expires-at"
	HeaderIdleExpiry    = "x-sessiongate-idle-expires-at"
	HeaderExpiresIn     = "x-sessiongate-expires-in"
	HeaderReason        = "x-sessiongate-reason"
)

// Where each gate header goes, in one place: a new header is one line in
// one of these, and every adapter removes client-sent copies of it (S10).
var (
	// SessionHeaders go upstream with an allowed request that has a
	// session, overwriting client-sent copies. (An array, so that adapters
	// size their buffers with len.)
	SessionHeaders = [...]string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry}
	// ClientHeaders are set only for the client; upstream, client-sent
	// copies are removed.
	ClientHeaders = [...]string{HeaderExpiresIn, HeaderReason}

	gateHeaders = append(SessionHeaders[:len(SessionHeaders):len(SessionHeaders)], ClientHeaders[:]...)
)

// GateHeaders lists every header the gate sets. The slice is shared: never
// modify it.
func GateHeaders() []string { return gateHeaders }

// UpstreamRemovals lists the gate headers an allowed request must not carry
// from the client: every one, or, with a session, those the gate does not
// set itself (it overwrites the others). The slices are shared: never
// modify them (append to a clipped copy).
func UpstreamRemovals(withSession bool) []string {
	if withSession {
		return ClientHeaders[:]
	}
	return gateHeaders
}

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
	for _, h := range gateHeaders {
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
