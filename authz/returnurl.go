package authz

import (
	"net/url"
	"strings"
)

// tokenParams are query parameters that may carry credentials; they are
// dropped from return URLs so that no token ever appears in a Location (S7).
var tokenParams = [...]string{"access_token", "id_token", "refresh_token"}

// maxReturnURL bounds the return URL. Login pages and browsers refuse far
// shorter URLs anyway, and escaping grows a path up to fivefold in the
// Location: unbounded, a long request path would inflate the denial past
// what the gRPC transport sends, turning it into an error (which Envoy
// answers with failure_mode_allow). A longer one becomes the host's root.
const maxReturnURL = 4 << 10

// ReturnURL rebuilds the URL the client asked for from the request's own
// scheme, host and path — never from a client-supplied redirect parameter —
// so that a login redirect can only ever bring the user back to this host
// (S7). It returns "" when the host is not a plain host[:port].
func ReturnURL(r *Request) string {
	host := r.Host
	if !validHost(host) {
		return ""
	}
	scheme := r.Scheme
	if scheme != "http" {
		scheme = "https"
	}
	p := r.Path
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	// "//evil.example" would still be on this host once prefixed, but some
	// login pages resolve it as a network path; collapse leading slashes.
	for len(p) > 1 && p[1] == '/' {
		p = p[1:]
	}
	if len(p) > maxReturnURL {
		p = "/"
	}
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(host) + len(p))
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(strings.ToLower(host))
	path, query, hasQuery := strings.Cut(p, "?")
	if pathHasToken(path) {
		path = "/"
	}
	writeEscaped(&b, path)
	if hasQuery {
		if q := stripTokenParams(query); q != "" {
			b.WriteByte('?')
			writeEscaped(&b, q)
		}
	}
	if b.Len() > maxReturnURL {
		return scheme + "://" + strings.ToLower(host) + "/"
	}
	return b.String()
}

// LoginURL is the redirect target for a browser: the policy's login URL with
// the return URL and, when a session ended, the re-authentication parameters.
func LoginURL(p *Policy, r *Request, reauth bool) string {
	var param, ret string
	if p.Login.ReturnParam != "" {
		if ret = ReturnURL(r); ret != "" {
			param, ret = url.QueryEscape(p.Login.ReturnParam), url.QueryEscape(ret)
		}
	}
	var b strings.Builder
	b.Grow(len(p.Login.URL) + len(param) + len(ret) + len(p.Login.ReauthQuery) + 3) // one allocation
	b.WriteString(p.Login.URL)
	sep := byte('?')
	if strings.IndexByte(p.Login.URL, '?') >= 0 {
		sep = '&'
	}
	if ret != "" {
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(param)
		b.WriteByte('=')
		b.WriteString(ret)
	}
	if reauth && p.Login.ReauthQuery != "" {
		b.WriteByte(sep)
		b.WriteString(p.Login.ReauthQuery)
	}
	return b.String()
}

// validHost reports whether h is a plain host[:port] (ParseAuthority).
func validHost(h string) bool {
	_, ok := ParseAuthority(h)
	return ok
}

// writeEscaped copies s, percent-encoding every byte that may not appear
// literally in a URL (controls, CR/LF, spaces, non-ASCII, quotes), so no
// header can be injected through a Location. Existing escapes are kept.
func writeEscaped(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`"<>\^`+"`{|}", c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
}

func stripTokenParams(q string) string {
	// A name may be percent-encoded ("access%5Ftoken"), which servers decode.
	if !containsTokenParam(q) && strings.IndexByte(q, '%') < 0 {
		return q
	}
	parts := strings.Split(q, "&")
	kept := parts[:0]
	for _, part := range parts {
		if !hasTokenParam(part) {
			kept = append(kept, part)
		}
	}
	return strings.Join(kept, "&")
}

// hasTokenParam reports whether an &-separated part names a token parameter,
// also after a ";", which some servers still take as a separator.
func hasTokenParam(part string) bool {
	for part != "" {
		var p string
		p, part, _ = strings.Cut(part, ";")
		if name, value, _ := strings.Cut(p, "="); isTokenParam(name) || looksLikeJWT(value) {
			return true
		}
	}
	return false
}

// pathHasToken reports whether a path carries a token: a segment or a ";"
// path parameter that looks like a JWT or is named like a token parameter.
// Such a path is not worth returning to; the host's root is.
func pathHasToken(path string) bool {
	if !strings.Contains(path, "eyJ") && strings.IndexByte(path, '%') < 0 && !containsTokenParam(path) {
		return false
	}
	for path != "" {
		var seg string
		if i := strings.IndexAny(path, "/;"); i >= 0 {
			seg, path = path[:i], path[i+1:]
		} else {
			seg, path = path, ""
		}
		if looksLikeJWT(seg) || strings.IndexByte(seg, '=') >= 0 && hasTokenParam(seg) {
			return true
		}
	}
	return false
}

// looksLikeJWT catches a token carried under any other parameter name: a
// JWS or JWE always starts with the base64url of `{"` and has 2 or 4 dots.
func looksLikeJWT(v string) bool {
	if u, err := url.QueryUnescape(v); err == nil {
		v = u
	}
	return strings.HasPrefix(v, "eyJ") && strings.Count(v, ".") >= 2
}

func containsTokenParam(q string) bool {
	if strings.Contains(q, "eyJ") {
		return true
	}
	lq := strings.ToLower(q)
	for _, t := range tokenParams {
		if strings.Contains(lq, t) {
			return true
		}
	}
	return false
}

func isTokenParam(name string) bool {
	if u, err := url.QueryUnescape(name); err == nil {
		name = u
	}
	for _, t := range tokenParams {
		if strings.EqualFold(name, t) {
			return true
		}
	}
	return false
}
