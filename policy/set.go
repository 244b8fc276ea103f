package policy

import (
	"slices"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Set is an immutable, compiled directory of policies. It is safe for
// concurrent use; reloads build a new Set rather than changing one.
type Set struct {
	policies []*authz.Policy          // sorted by name
	exact    map[string]*authz.Policy // by host
	wildcard map[string]*authz.Policy // by ".suffix" of "*.suffix"
	fallback *authz.Policy            // hosts: ["*"]; nil if none
	// refs are files the policies read (jwks_file, client_secret_file, client_key_file), which the Watcher
	// fingerprints besides the policy files themselves.
	refs []string
	// warnings are the policies' choices worth a second look, by file.
	warnings Errors
}

var _ authz.PolicySource = (*Set)(nil)

func newSet(all []*compiled) *Set {
	s := &Set{exact: map[string]*authz.Policy{}, wildcard: map[string]*authz.Policy{}}
	for _, c := range all {
		p := c.policy
		s.policies = append(s.policies, p)
		for _, h := range p.Hosts {
			switch {
			case h == "*":
				s.fallback = p
			case strings.HasPrefix(h, "*."):
				s.wildcard[h[1:]] = p
			default:
				s.exact[h] = p
			}
		}
		s.warnings = append(s.warnings, c.warnings...)
		if c.token.JWKSFile != "" {
			s.refs = append(s.refs, c.token.JWKSFile)
		}
		for _, f := range []string{c.secretFile, c.keyFile} {
			if f != "" {
				s.refs = append(s.refs, f)
			}
		}
	}
	slices.SortFunc(s.policies, func(a, b *authz.Policy) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// Warnings returns what the policies chose that is worth a second look but
// is no mistake (a policy without sign-out), one Error each, by file.
func (s *Set) Warnings() Errors { return s.warnings }

// Match returns the policy for host (S8): an authority as received,
// parsed by authz.ParseAuthority (port and trailing dot stripped, case
// folded); an exact host before the longest matching "*.suffix" before the
// "*" default; nil when none applies, and for an authority that is not a
// plain host[:port], whatever the default. It does not allocate for a host
// already in lower case.
func (s *Set) Match(host string) *authz.Policy {
	if s == nil {
		return nil
	}
	host, ok := authz.ParseAuthority(host)
	if !ok {
		return nil
	}
	if p, ok := s.exact[host]; ok {
		return p
	}
	// The leftmost dot gives the longest suffix, so the most specific
	// wildcard wins; "*.example.com" never matches "example.com" itself.
	for i := range len(host) {
		if host[i] == '.' {
			if p, ok := s.wildcard[host[i:]]; ok {
				return p
			}
		}
	}
	return s.fallback
}

// Policies returns the policies sorted by name. The slice is the caller's;
// the policies are shared and must not be mutated.
func (s *Set) Policies() []*authz.Policy { return slices.Clone(s.policies) }

// Names returns the policy names, sorted: the values of the metric label.
func (s *Set) Names() []string {
	names := make([]string, len(s.policies))
	for i, p := range s.policies {
		names[i] = p.Name
	}
	return names
}
