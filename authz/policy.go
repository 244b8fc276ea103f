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

	Login  Login
	Logout Logout
	Cookie Cookie

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
}

// Logout describes the sign-out endpoint (S6).
type Logout struct {
	Path        string // exact path; "" disables sign-out handling
	RedirectURL string // absolute URL the client is sent to afterwards
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
