package forwardauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Checker is the engine as the adapter sees it.
type Checker interface {
	Check(ctx context.Context, r *authz.Request) authz.Decision
}

// DefaultTrustedProxies is the default of --trusted-proxies: loopback only,
// the proxy beside the gate (same host or Kubernetes pod).
const DefaultTrustedProxies = "127.0.0.0/8,::1/128"

// Options configure a Handler.
type Options struct {
	// TrustedProxies are the peer addresses whose forwarded headers are
	// believed. Empty trusts nobody.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger // default: discards
}

// Handler serves the forward-auth endpoints: EnvoyPrefix+"/…", NginxPath and
// ForwardPath, any method. Other paths are 404. Mount it on PathPrefix ahead
// of any http.ServeMux, which would clean and redirect the original paths
// that Envoy puts after EnvoyPrefix.
type Handler struct {
	checker Checker
	trusted []netip.Prefix
	log     *slog.Logger
}

// NewHandler wires a Handler.
func NewHandler(c Checker, o Options) *Handler {
	h := &Handler{checker: c, trusted: o.TrustedProxies, log: o.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// ServeHTTP answers one check request. It never fails open: whatever the
// engine cannot decide it denies (S9), and a denial is never a 2xx.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := Route(requestTarget(r))
	if !ok {
		http.NotFound(w, r)
		return
	}
	trusted := h.trusts(r.RemoteAddr)
	if !trusted && f != Envoy {
		h.log.Debug("forward-auth check from an untrusted peer: forwarded headers ignored",
			"flavor", f.String(), "peer", r.RemoteAddr)
	}
	req := ToRequest(r, f, trusted)
	d := h.checker.Check(r.Context(), &req)
	writeResponse(w, f, &d, r.Header)
}

// trusts reports whether a RemoteAddr ("ip:port") is a trusted proxy.
func (h *Handler) trusts(remote string) bool {
	a := peerAddr(remote)
	if !a.IsValid() {
		return false
	}
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParsePrefixes parses a comma-separated list of CIDRs or single addresses
// ("10.0.0.0/8, 192.0.2.7, ::1"), reporting every bad entry at once. An empty
// list is valid and trusts nobody.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("entry %d %q: not a CIDR prefix", i+1, s))
				continue
			}
			if p != p.Masked() {
				errs = append(errs, fmt.Errorf("entry %d %q: host bits set; did you mean %s?", i+1, s, p.Masked()))
				continue
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("entry %d %q: not an IP address or CIDR prefix", i+1, s))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}
