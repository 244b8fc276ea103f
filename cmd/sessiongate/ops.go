package main

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sessiongate/sessiongate/ends"
	"github.com/sessiongate/sessiongate/forwardauth"
)

// opsHandler serves the operator endpoints on --http-addr, and the HTTP
// forward-auth endpoints under forwardauth.PathPrefix ahead of the mux, which
// would clean and redirect the original paths Envoy forwards there. notes
// (may be nil) adds lines to /readyz that do not make the replica unready,
// such as policies whose identity provider cannot be reached. backChannel
// (may be nil) is the back-channel logout endpoint (S18).
func opsHandler(reg *prometheus.Registry, ready func(context.Context) error, notes func() []string, auth, backChannel http.Handler) http.Handler {
	mux := http.NewServeMux()
	if backChannel != nil {
		// Every method: the handler answers 405 itself, with no-store.
		mux.Handle(ends.BackChannelPath, backChannel)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
		if notes != nil {
			for _, n := range notes() {
				w.Write([]byte(n + "\n"))
			}
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, forwardauth.PathPrefix) {
			auth.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}
