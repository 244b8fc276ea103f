package forwardauth

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Header names of the gate's answers, in canonical form so that they are set
// without re-canonicalising. The wire names are DESIGN §2's.
const (
	HeaderUser          = "X-Sessiongate-User"
	HeaderSessionExpiry = "X-Sessiongate-Session-Expires-At"
	HeaderIdleExpiry    = "X-Sessiongate-Idle-Expires-At"
	HeaderExpiresIn     = "X-Sessiongate-Expires-In"
	HeaderReason        = "X-Sessiongate-Reason"
	// HeaderStatus and HeaderLocation carry, for nginx, the status and the
	// redirect target of a denial that auth_request can only see as a 401.
	HeaderStatus   = "X-Sessiongate-Status"
	HeaderLocation = "X-Sessiongate-Location"
	// HeaderEnvoyRemove lists request headers Envoy's HTTP ext_authz filter
	// removes before forwarding an allowed request.
	HeaderEnvoyRemove = "X-Envoy-Auth-Headers-To-Remove"
)

// Values of HeaderEnvoyRemove: every gate header the upstream must not see
// from the client, less those the allow sets. Underscore aliases of them are
// added per request, for those the request carries (authz.IsGateHeaderAlias).
const (
	envoyRemoveWithUser = authz.HeaderExpiresIn + ", " + authz.HeaderReason
	envoyRemoveAll      = authz.HeaderUser + ", " + authz.HeaderSessionExpiry + ", " + authz.HeaderIdleExpiry + ", " + envoyRemoveWithUser
)

// gateAliases returns the request's header names that are underscore
// aliases of the gate's headers, lower-cased, or nil.
func gateAliases(h http.Header) []string {
	var out []string
	for k := range h {
		if authz.IsGateHeaderAlias(k) {
			out = append(out, strings.ToLower(k))
		}
	}
	return out
}

// WriteResponse writes decision d as the answer of a check request of flavor
// f: only headers, status and body, nothing else happens.
//
// Allowed: 200 with the upstream headers (user and deadlines), plus
// Set-Cookie and, inside the warning window, X-Sessiongate-Expires-In for
// the client. S10: for Envoy the headers the gate does not set are listed in
// X-Envoy-Auth-Headers-To-Remove; for nginx, Caddy and Traefik the three
// upstream headers are always present, empty without a session, so that a
// proxy configured to copy them overwrites (nginx: drops) what a client sent.
//
// Denied: the decision's status with Location, WWW-Authenticate, Set-Cookie,
// X-Sessiongate-Reason and the reason as body; for nginx see Nginx. A denial
// is never written with a 2xx status. Every answer carries
// Cache-Control: no-store, so no cache between proxy and gate replays one.
func WriteResponse(w http.ResponseWriter, f Flavor, d *authz.Decision) {
	writeResponse(w, f, d, nil)
}

// writeResponse is WriteResponse that also has Envoy remove aliases, the
// underscore spellings of the gate's headers the request carried (S10).
func writeResponse(w http.ResponseWriter, f Flavor, d *authz.Decision, aliases []string) {
	h := w.Header()
	h["Cache-Control"] = []string{"no-store"}
	if len(d.SetCookie) > 0 {
		h["Set-Cookie"] = d.SetCookie
	}
	if d.Allow {
		writeAllow(w, h, f, d, aliases)
		return
	}
	reason := d.Reason.String()
	h[HeaderReason] = []string{reason}
	if d.Authenticate != "" {
		h["Www-Authenticate"] = []string{d.Authenticate}
	}
	status := d.Status
	if status < 300 || status > 599 {
		status = http.StatusForbidden // fail closed on a malformed decision
	}
	switch {
	case f == Nginx:
		h[HeaderStatus] = []string{strconv.Itoa(status)}
		if d.Location != "" {
			h[HeaderLocation] = []string{d.Location}
		}
		if status != http.StatusForbidden {
			status = http.StatusUnauthorized
		}
	case d.Location != "":
		h["Location"] = []string{d.Location}
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(reason + "\n"))
}

func writeAllow(w http.ResponseWriter, h http.Header, f Flavor, d *authz.Decision, aliases []string) {
	if d.ExpiresIn >= 0 {
		h[HeaderExpiresIn] = []string{strconv.FormatInt(d.ExpiresIn, 10)}
	}
	switch {
	case d.User != "":
		h[HeaderUser] = []string{d.User}
		h[HeaderSessionExpiry] = []string{strconv.FormatInt(d.SessionExpiresAt, 10)}
		h[HeaderIdleExpiry] = []string{strconv.FormatInt(d.IdleExpiresAt, 10)}
	case f != Envoy:
		empty := []string{""}
		h[HeaderUser], h[HeaderSessionExpiry], h[HeaderIdleExpiry] = empty, empty, empty
	}
	if f == Envoy {
		remove := envoyRemoveAll
		if d.User != "" {
			remove = envoyRemoveWithUser
		}
		if len(aliases) > 0 {
			remove += ", " + strings.Join(aliases, ", ")
		}
		h[HeaderEnvoyRemove] = []string{remove}
	}
	w.WriteHeader(http.StatusOK)
}
