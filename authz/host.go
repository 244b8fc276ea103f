package authz

import (
	"net/netip"
	"strings"
)

// maxAuthority bounds an authority; DNS names are at most 253 bytes.
const maxAuthority = 255

// ParseAuthority is the one parser of the authorities requests carry, used
// to choose the policy (S8) and to build return URLs (S7). It accepts only a
// plain host[:port] as a URL parser reads it — a DNS name or IPv4 address
// (letters, digits, "-", "_", dot-separated non-empty labels, one trailing
// dot allowed) or a bracketed IPv6 address, then an optional decimal port
// up to 65535 — and returns the host as policies are keyed by it: lower
// case, without port, brackets or trailing dot. Anything else
// ("app.test:80@evil.example", "app.test:abc", "app.test:", a bare IPv6
// address, CR/LF, spaces, non-ASCII, over 255 bytes) is not ok: such a
// request matches no policy (unknown_host) and gets no return URL, where a
// laxer parser would have picked the policy of a prefix of it.
func ParseAuthority(a string) (host string, ok bool) {
	if a == "" || len(a) > maxAuthority {
		return "", false
	}
	var port string
	hasPort := false
	if a[0] == '[' {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", false
		}
		host = a[1:end]
		if rest := a[end+1:]; rest != "" {
			if rest[0] != ':' {
				return "", false
			}
			port, hasPort = rest[1:], true
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", false
		}
	} else {
		host = a
		if i := strings.IndexByte(a, ':'); i >= 0 {
			host, port, hasPort = a[:i], a[i+1:], true
		}
		host = strings.TrimSuffix(host, ".")
		if !hostName(host) {
			return "", false
		}
	}
	if hasPort && !portNumber(port) {
		return "", false
	}
	return strings.ToLower(host), true // ToLower returns host itself when already lower case
}

// hostName reports whether h is dot-separated non-empty labels of letters,
// digits, "-" and "_".
func hostName(h string) bool {
	if h == "" || h[0] == '.' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.' && h[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

func portNumber(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// IsLoopbackHost reports whether a URL's host (url.URL.Hostname: no port, no
// brackets) is "localhost" or a loopback IP address: the only hosts that
// key sets may be fetched from over plain http.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
