package forwardauth

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that keeps one header map, cleared per
// answer, so that the benchmark measures the adapter and not a recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// BenchmarkServeHTTP is the adapter's cost per check around the engine (a
// fake here): routing, trust, translation both ways.
func BenchmarkServeHTTP(b *testing.B) {
	for _, bc := range []struct {
		name   string
		target string
		header http.Header
	}{
		{"envoy", "/auth/envoy/app/dashboard?tab=1", header("X-Forwarded-Proto", "https")},
		{"nginx", "/auth/nginx", header("X-Original-URI", "/app/dashboard?tab=1", "X-Original-Method", "GET",
			"X-Forwarded-Host", "app.example.com", "X-Forwarded-Proto", "https")},
		{"forward", "/auth/forward", header("X-Forwarded-Uri", "/app/dashboard?tab=1", "X-Forwarded-Method", "GET",
			"X-Forwarded-Host", "app.example.com", "X-Forwarded-Proto", "https", "X-Forwarded-For", "192.0.2.1")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			trusted, err := ParsePrefixes(DefaultTrustedProxies)
			if err != nil {
				b.Fatal(err)
			}
			fc := &fakeChecker{d: allowWarn}
			h := NewHandler(fc, Options{TrustedProxies: trusted})
			r := httptest.NewRequest("GET", bc.target, nil)
			r.Host, r.RemoteAddr = "app.example.com", "127.0.0.1:40000"
			r.Header = bc.header
			r.Header.Set("Authorization", "Bearer x.y.z")
			r.Header.Set("Cookie", "__Host-sessiongate=abcdefghijklmnopqrstuvwxyz012345")
			r.Header.Set("Accept", "text/html")
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				fc.got = fc.got[:0]
				h.ServeHTTP(w, r)
			}
			if w.status != 200 {
				b.Fatalf("status %d", w.status)
			}
		})
	}
}
