package envoy

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
)

// Header names the gate sets (authz owns them; re-exported for callers).
const (
	HeaderUser          = authz.HeaderUser
	HeaderSessionExpiry = authz.HeaderSessionExpiry
	HeaderIdleExpiry    = authz.HeaderIdleExpiry
	HeaderExpiresIn     = authz.HeaderExpiresIn
	HeaderReason        = authz.HeaderReason
)

// Client-sent copies of the gate's headers are removed from every allowed
// request they are not set on; the three identity headers are overwritten
// when the gate sets them (S10).
var (
	removeAll      = authz.UpstreamRemovals(false)
	removeWithUser = authz.UpstreamRemovals(true)
)

// MaxHeaderFields bounds the header fields of one CheckRequest (the entries
// of header_map, or of headers). Envoy sends at most its max_headers_count
// (100 by default); a request with more is refused by Service.Check with
// RESOURCE_EXHAUSTED, as one over MaxMessageBytes is, before any work.
const MaxHeaderFields = 10_000

// HeaderFields is the number of header fields a CheckRequest carries.
func HeaderFields(req *authv3.CheckRequest) int {
	h := req.GetAttributes().GetRequest().GetHttp()
	return max(len(h.GetHeaders()), len(h.GetHeaderMap().GetHeaders()))
}

// ToRequest translates a CheckRequest without copying its header map.
func ToRequest(req *authv3.CheckRequest) authz.Request {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	if len(headers) == 0 && h.GetHeaderMap() != nil {
		// Envoy sends header_map instead when encode_raw_headers is set.
		hvs := h.GetHeaderMap().GetHeaders()
		headers = joinHeaderMap(len(hvs), func(i int) (string, string) {
			v := hvs[i].GetValue()
			if v == "" {
				v = string(hvs[i].GetRawValue())
			}
			return hvs[i].GetKey(), v
		})
	}
	return request(h.GetHost(), h.GetPath(), h.GetMethod(), h.GetScheme(),
		attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(), authz.HeaderMap(headers))
}

// request is the authz.Request of a CheckRequest's fields: where the
// pseudo-headers stand in for empty ones.
func request(host, path, method, scheme, source string, hs authz.Headers) authz.Request {
	r := authz.Request{
		Host: host, Path: path, Method: method, Scheme: scheme,
		Headers: hs, SourceAddr: source, RequestID: hs.Get("x-request-id"),
	}
	if r.Host == "" {
		r.Host = hs.Get(":authority")
	}
	if r.Path == "" {
		r.Path = hs.Get(":path")
	}
	if r.Scheme == "" {
		r.Scheme = hs.Get(":scheme")
	}
	if r.Scheme == "" {
		// Set by Envoy from the downstream connection unless trusted upstream.
		r.Scheme = hs.Get("x-forwarded-proto")
	}
	return r
}

// joinHeaderMap folds header_map entries into one value per name. Repeated
// fields join with ",", but cookie crumbs with "; " (RFC 9113 §8.2.3): with
// "," a later crumb's session cookie or token would be lost in the previous
// one's value. Each repeated name is built in one growing buffer, so that
// the cost stays linear in the size of the message: joining by string
// concatenation copied the value so far for every repeat, quadratic in the
// number of repeats (160,000 copies of one name took seconds of CPU).
func joinHeaderMap(n int, at func(i int) (k, v string)) map[string]string {
	headers := make(map[string]string, n)
	var repeated map[string]*strings.Builder
	for i := range n {
		k, v := at(i)
		old, ok := headers[k]
		if !ok {
			headers[k] = v
			continue
		}
		if repeated == nil {
			repeated = make(map[string]*strings.Builder)
		}
		b := repeated[k]
		if b == nil {
			b = &strings.Builder{}
			b.WriteString(old)
			repeated[k] = b
		}
		if k == "cookie" {
			b.WriteString("; ")
		} else {
			b.WriteByte(',')
		}
		b.WriteString(v)
	}
	for k, b := range repeated {
		headers[k] = b.String()
	}
	return headers
}

// ToResponse translates a decision into Envoy's CheckResponse, with an
// explicit append_action on every header and one entry per Set-Cookie (the
// rule is the answer's: answer.go).
func ToResponse(d *authz.Decision) *authv3.CheckResponse {
	var a answer
	a.build(d)
	return a.proto()
}
