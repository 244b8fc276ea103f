package forwardauth

import (
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Flavor is the dialect of one endpoint: where the original request's
// method, host and path come from, and how a denial is answered.
type Flavor uint8

const (
	// Envoy is Envoy's HTTP ext_authz service: the check request is the
	// original request (method, Host, headers) with EnvoyPrefix put before
	// its path. Denials are answered as the client should see them.
	Envoy Flavor = iota + 1
	// Nginx is nginx auth_request: the original method and URI come in
	// X-Original-Method and X-Original-URI. nginx passes on only 2xx, 401
	// and 403, so every other denial is a 401 that names the status the
	// client should get (X-Sessiongate-Status) and the redirect target
	// (X-Sessiongate-Location) for the nginx configuration to apply.
	Nginx
	// Forward is Caddy forward_auth and Traefik forwardAuth: the original
	// method and URI come in X-Forwarded-Method and X-Forwarded-Uri; denials
	// are passed to the client as they are.
	Forward
)

// Endpoint paths, all below PathPrefix.
const (
	PathPrefix   = "/auth/"
	EnvoyPrefix  = "/auth/envoy" // Envoy's path_prefix; the original path follows
	NginxPath    = "/auth/nginx"
	ForwardPath  = "/auth/forward"
	envoyRouting = EnvoyPrefix + "/"
)

// String names the flavor for logs.
func (f Flavor) String() string {
	switch f {
	case Envoy:
		return "envoy"
	case Nginx:
		return "nginx"
	case Forward:
		return "forward"
	}
	return "unknown"
}

// Route picks the flavor of a raw request target ("/auth/nginx?x" is Nginx).
// It matches the raw target, not the decoded path, so that an encoded
// prefix ("/auth/%65nvoy/") is not mistaken for an endpoint.
func Route(target string) (Flavor, bool) {
	if strings.HasPrefix(target, envoyRouting) {
		return Envoy, true
	}
	path, _, _ := strings.Cut(target, "?")
	switch path {
	case NginxPath:
		return Nginx, true
	case ForwardPath:
		return Forward, true
	}
	return 0, false
}

// Headers reads an http.Header by the lower-case names the engine uses,
// without copying it. Repeated fields are joined as Envoy joins them
// ("; " for cookies, "," otherwise), so an ambiguous credential fails.
type Headers http.Header

// Get implements authz.Headers.
func (h Headers) Get(name string) string {
	vs := h[textproto.CanonicalMIMEHeaderKey(name)]
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	if name == "cookie" {
		return strings.Join(vs, "; ")
	}
	return strings.Join(vs, ",")
}

// Header names the proxies set on the check request.
const (
	hForwardedHost   = "X-Forwarded-Host"
	hForwardedProto  = "X-Forwarded-Proto"
	hForwardedFor    = "X-Forwarded-For"
	hForwardedMethod = "X-Forwarded-Method"
	hForwardedURI    = "X-Forwarded-Uri"
	hOriginalMethod  = "X-Original-Method"
	hOriginalURI     = "X-Original-Uri" // canonical form of X-Original-URI
	hRequestID       = "X-Request-Id"
)

// ToRequest translates a check request of flavor f. trusted says whether the
// peer is a trusted proxy: only then are forwarded headers believed.
// Otherwise, or when a forwarded field appears more than once (a proxy that
// appends rather than overwrites would let the client's copy come first),
// the request describes itself: its own Host, method and path (for Nginx
// and Forward the endpoint path, which no policy serves), scheme unknown
// (return URLs default to https) and the peer as source.
func ToRequest(r *http.Request, f Flavor, trusted bool) authz.Request {
	target := requestTarget(r)
	req := authz.Request{
		Host:       r.Host,
		Path:       target,
		Method:     r.Method,
		Headers:    Headers(r.Header),
		SourceAddr: r.RemoteAddr,
		RequestID:  r.Header.Get(hRequestID),
	}
	if a := peerAddr(r.RemoteAddr); a.IsValid() {
		req.SourceAddr = a.String()
	}
	if f == Envoy {
		req.Path = strings.TrimPrefix(target, EnvoyPrefix)
	}
	if !trusted || ambiguous(r.Header, f) {
		return req
	}
	switch r.Header.Get(hForwardedProto) {
	case "https":
		req.Scheme = "https"
	case "http":
		req.Scheme = "http"
	}
	if xff := r.Header.Values(hForwardedFor); len(xff) > 0 {
		// The last hop is the one the trusted proxy added itself.
		last := xff[len(xff)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if a := strings.TrimSpace(last); a != "" {
			req.SourceAddr = a
		}
	}
	if f == Envoy {
		return req // Host, method and path are the original request's own.
	}
	methodKey, uriKey := originalFields(f)
	if v := r.Header.Get(hForwardedHost); v != "" {
		req.Host = v
	}
	if v := r.Header.Get(uriKey); v != "" {
		req.Path = v
	}
	if v := r.Header.Get(methodKey); v != "" {
		req.Method = v
	}
	return req
}

// requestTarget is the raw request target in origin form, as received.
func requestTarget(r *http.Request) string {
	if t := r.RequestURI; t != "" && t[0] == '/' {
		return t
	}
	return r.URL.RequestURI() // absolute-form request line
}

// originalFields names the headers that carry the original method and URI.
func originalFields(f Flavor) (method, uri string) {
	if f == Nginx {
		return hOriginalMethod, hOriginalURI
	}
	return hForwardedMethod, hForwardedURI
}

// ambiguous reports whether a forwarded field the flavor reads appears more
// than once, on separate lines or joined on one. A proxy that appends to a
// client's copy rather than overwriting it joins with a comma: "https,
// http", "evil.example, app.example", "/public/x, /admin". Proto, host and
// method never hold a comma; a URI may, so there only a comma followed by
// another origin-form target ("/", after optional blanks) counts.
func ambiguous(h http.Header, f Flavor) bool {
	if repeated(h[hForwardedProto], false) {
		return true
	}
	if f == Envoy {
		return false
	}
	method, uri := originalFields(f)
	return repeated(h[hForwardedHost], false) || repeated(h[method], false) || repeated(h[uri], true)
}

// repeated reports whether a field's values are more than one line, or one
// line joined from several: any comma, or for a URI a comma that starts
// another target.
func repeated(vs []string, uri bool) bool {
	switch {
	case len(vs) > 1:
		return true
	case len(vs) == 0:
		return false
	case !uri:
		return strings.IndexByte(vs[0], ',') >= 0
	}
	return joinedURI(vs[0])
}

// joinedURI reports whether v holds a comma followed by optional blanks and
// a "/": two request targets joined on one line.
func joinedURI(v string) bool {
	for {
		i := strings.IndexByte(v, ',')
		if i < 0 {
			return false
		}
		v = strings.TrimLeft(v[i+1:], " \t")
		if strings.HasPrefix(v, "/") {
			return true
		}
	}
}

// peerAddr is the IP of a RemoteAddr ("ip:port"), IPv4-mapped IPv6 unmapped;
// the zero Addr when it is not one.
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
