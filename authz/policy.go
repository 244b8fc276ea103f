package authz

import (
	"strings"
	"time"
)

// Policy is one compiled, immutable per-host policy. The policy package builds
// it from a YAML file; the engine only reads it. Never mutate a published one.
type Policy struct {
	Name   string   // file stem; the metric label
	Hosts  []string // lower-case; "*.suffix" wildcards; "*" is the default
	DryRun bool

	AbsoluteTimeout time.Duration
	IdleTimeout     time.Duration
	WarnBefore      time.Duration // 0: no client warning
	// ActivityGranularity: last_activity is written only when it advanced by
	// at least this much, so steady traffic costs few store writes. A session
	// may therefore time out up to this much early, never late.
	ActivityGranularity time.Duration

	PassivePaths []string // allowed but not counted as activity
	Bypass       []string // path prefixes that need no session
	BindClaims   []string // claims that must stay equal for the session's life

	TokenSources  []TokenSource
	MaxTokenBytes int
	Verifier      Verifier
	// Issuer is the issuer whose tokens (or sign-ins) the policy accepts:
	// within a policy a subject names one user, and S3 scopes are digested
	// with it (ends by user or sid, S18, S19).
	Issuer string
	// BackChannel says who may end sessions by back-channel logout (S18);
	// nil: nobody.
	BackChannel *BackChannel
	// ClockSkew is how far ahead of the gate's clock the verifier accepts a
	// token's iat and auth_time: an end that sees no token of its scope is
	// recorded that far ahead, so that it covers the tokens a fast IdP
	// stamped before it (S3).
	ClockSkew time.Duration
	// MaxTokenLifetime bounds exp − iat of the tokens the verifier accepts.
	// Session ends are kept at least this long (plus ClockSkew), so that
	// every token they cover, seen or not, has expired before they are
	// forgotten (S3). 0: no bound known; ends then cover the tokens their
	// sessions saw.
	MaxTokenLifetime time.Duration

	Login    Login
	Logout   Logout
	Cookie   Cookie
	Upstream Upstream

	// StoreFailOpen keeps deciding on what the replica knows while the shared
	// store is unreachable, instead of denying with store_unavailable (S9).
	StoreFailOpen bool
}

// TokenSourceKind says where a token is read from.
type TokenSourceKind uint8

const (
	FromHeader TokenSourceKind = iota + 1
	FromCookie
)

// TokenSource is one place a token may be read from. For the authorization
// header the Bearer scheme is required and stripped.
type TokenSource struct {
	Kind TokenSourceKind
	Name string // lower-case header name or exact cookie name
}

// Login describes the redirect for browsers (S7).
type Login struct {
	URL         string // absolute http(s) URL, may carry its own query
	ReturnParam string // query parameter carrying the original URL
	// ReauthQuery is the pre-encoded query added when a session ended
	// (e.g. "max_age=0&prompt=login"); empty for none.
	ReauthQuery string
	// SignIn runs the sign-in itself (login.oidc, S12–S17); nil for
	// login.url, where URL and ReturnParam say where browsers go.
	SignIn SignIn
}

// Upstream says what an allowed request of a sign-in session (login.oidc)
// carries to the application besides the gate's own headers.
type Upstream struct {
	// AccessToken is the lower-case header that carries the session's access
	// token: "authorization" (as "Bearer <token>"), another header name (the
	// bare token), or "" for none. Set overwriting any client-sent copy (S15).
	AccessToken string
	// IdentityHeaders are the lower-case names of the identity headers a
	// grant may carry (Grant.Headers, from ID-token claims). Adapters remove
	// client-sent copies of every one of them, also when the grant has no
	// value for it (S10).
	IdentityHeaders []string
}

// Logout describes the sign-out endpoint (S6).
type Logout struct {
	Path        string // "" disables sign-out handling
	Match       LogoutMatch
	RedirectURL string // absolute URL the client is sent to afterwards
}

// LogoutMatch says which request paths are the sign-out path.
type LogoutMatch uint8

const (
	// LogoutExact (the zero value) matches the path byte for byte.
	LogoutExact LogoutMatch = iota
	// LogoutNormalized matches every spelling an application may take for
	// the same path (NormalizePath): "/Logout", "/logout/", "/logout;x",
	// "/a/../logout", "/%6Cogout".
	LogoutNormalized
	// LogoutPrefix matches the normalised path and everything below it at a
	// segment boundary ("/logout/callback", not "/logouts").
	LogoutPrefix
)

// Matches reports whether a request path (query and fragment removed) is
// the sign-out path. An application that normalises paths signs its user
// out on spellings that an exact match passes through as ordinary requests,
// ending its own session but not the gate's: such applications want
// LogoutNormalized or LogoutPrefix.
func (l *Logout) Matches(path string) bool {
	switch {
	case l.Path == "":
		return false
	case l.Match == LogoutExact:
		return path == l.Path
	case path == l.Path:
		return true
	}
	p, want := NormalizePath(path), NormalizePath(l.Path)
	if l.Match == LogoutPrefix {
		return MatchPath(p, want)
	}
	return p == want
}

// NormalizePath folds the spellings that servers and frameworks commonly
// take for one path into one: "\\", "%2F" and "%5C" read as "/", ";"
// parameters dropped from every segment, percent-encoded unreserved
// characters decoded (others kept), empty and "." segments dropped, ".."
// removing the segment before it, no trailing "/", and ASCII letters
// lower-cased (servers such as IIS match paths without case).
func NormalizePath(p string) string {
	p = strings.ReplaceAll(p, "\\", "/")
	if strings.IndexByte(p, '%') >= 0 {
		// Many servers decode an escaped separator before routing.
		for _, sep := range [...]string{"%2F", "%2f", "%5C", "%5c"} {
			p = strings.ReplaceAll(p, sep, "/")
		}
	}
	var segs []string
	for seg := range strings.SplitSeq(p, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		seg = strings.ToLower(decodeUnreserved(seg))
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	return "/" + strings.Join(segs, "/")
}

// decodeUnreserved decodes %XX escapes of unreserved characters (RFC 3986
// §2.3: letters, digits, "-", ".", "_", "~"), so that "%2E%2E" is "..";
// other escapes stay as they are, and a "%" that starts no escape is
// written "%25": a stray "%" must not make an escape with what decoding
// puts after it ("%%333" would be "%33", then "3"), so that normalising
// twice is normalising once.
func decodeUnreserved(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
				b.WriteByte(c)
			} else {
				b.WriteString(s[i : i+3])
			}
			i += 2
			continue
		}
		if s[i] == '%' {
			b.WriteString("%25")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// Cookie describes the gate's own session cookie.
type Cookie struct {
	Name     string // default "__Host-sessiongate"
	SameSite string // "Lax" (default), "Strict" or "None"
}

// PolicySource finds the policy for a host (S8). Implementations hold an
// immutable set swapped atomically on reload.
type PolicySource interface {
	// Match returns the policy for host (port stripped, case folded, exact
	// before wildcard before the default), or nil when none applies.
	Match(host string) *Policy
}

// MatchPath reports whether path falls under prefix at a segment boundary:
// "/public" matches "/public" and "/public/x" but not "/publicity"; a prefix
// ending in "/" matches everything below it.
func MatchPath(path, prefix string) bool {
	if prefix == "" || !strings.HasPrefix(path, prefix) { // "": a broken policy matches nothing
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
