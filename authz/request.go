package authz

import "strings"

// Headers reads request headers by lower-case name without copying the
// adapter's map. Get returns "" when the header is absent.
type Headers interface {
	Get(name string) string
}

// HeaderMap adapts a map keyed by lower-case names (Envoy's wire format).
type HeaderMap map[string]string

// Get implements Headers.
func (h HeaderMap) Get(name string) string { return h[name] }

// Request is what the engine needs to know about one HTTP request, whatever
// proxy asked. Adapters fill it without copying headers.
type Request struct {
	Host       string // authority as received: may carry a port, any case
	Path       string // raw request target, query included
	Method     string
	Scheme     string // "http" or "https" as seen by the proxy; "" if unknown
	Headers    Headers
	SourceAddr string // client address, for audit events only
	RequestID  string // x-request-id or equivalent, for audit events only
}

// header returns a header value, tolerating a nil Headers.
func (r *Request) header(name string) string {
	if r.Headers == nil {
		return ""
	}
	return r.Headers.Get(name)
}

// IsBrowser reports whether the request is a browser navigation, which is
// denied with a redirect rather than a 401 (S7).
func (r *Request) IsBrowser() bool {
	if r.header("sec-fetch-mode") == "navigate" {
		return true
	}
	return strings.Contains(r.header("accept"), "text/html")
}

// CookieValue finds the first cookie called name in a Cookie header value
// without allocating. HTTP/2 crumbs arrive re-joined with "; ".
func CookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		if i := strings.IndexByte(header, ';'); i >= 0 {
			part, header = header[:i], header[i+1:]
		} else {
			part, header = header, ""
		}
		part = strings.TrimLeft(part, " \t")
		if len(part) > len(name) && part[len(name)] == '=' && part[:len(name)] == name {
			v := strings.TrimRight(part[len(name)+1:], " \t")
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}
