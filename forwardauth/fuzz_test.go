package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzToRequest: forwarded headers from a trusted proxy, any bytes. The
// original URI, host and method are believed only when no field was joined
// from several (a comma in host, method or proto; in the URI, a comma that
// starts another "/" target, by a reference split on commas); otherwise the
// request describes itself. A believed path is the header's value as sent.
// Seeds are in testdata/fuzz/FuzzToRequest.
func FuzzToRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, uri, host, method, proto string) {
		for _, fl := range []Flavor{Nginx, Forward} {
			mk, uk := originalFields(fl)
			r := httptest.NewRequest("GET", "/auth/forward", nil)
			if fl == Nginx {
				r = httptest.NewRequest("GET", "/auth/nginx", nil)
			}
			r.Host, r.RemoteAddr = "gate", "127.0.0.1:1"
			r.Header = http.Header{uk: {uri}, hForwardedHost: {host}, mk: {method}, hForwardedProto: {proto}}
			got := ToRequest(r, fl, true)
			joined := strings.Contains(host, ",") || strings.Contains(method, ",") || strings.Contains(proto, ",")
			for _, piece := range strings.Split(uri, ",")[1:] {
				if strings.HasPrefix(strings.TrimLeft(piece, " \t"), "/") {
					joined = true
				}
			}
			switch {
			case joined && (got.Path != r.RequestURI || got.Host != "gate" || got.Method != "GET" || got.Scheme != ""):
				t.Fatalf("%v: joined fields believed: %+v", fl, got)
			case !joined && uri != "" && got.Path != uri:
				t.Fatalf("%v: path %q, want the forwarded %q", fl, got.Path, uri)
			case !joined && host != "" && got.Host != host:
				t.Fatalf("%v: host %q, want the forwarded %q", fl, got.Host, host)
			}
		}
	})
}
