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
	// HeaderPage and HeaderPageType carry, for nginx, the page of a denial
	// (Decision.Body, one line) and its content type: auth_request drops the
	// body of the gate's answer.
	HeaderPage     = "X-Sessiongate-Page"
	HeaderPageType = "X-Sessiongate-Page-Type"
	// HeaderCookie carries, for nginx, the Cookie header the application
	// gets: without the gate's own cookies on a sign-in session (S15), else
	// the request's own. Caddy and Traefik get it as Cookie.
	HeaderCookie = "X-Sessiongate-Cookie"
	// HeaderEnvoyRemove lists request headers Envoy's HTTP ext_authz filter
	// removes before forwarding an allowed request.
	HeaderEnvoyRemove = "X-Envoy-Auth-Headers-To-Remove"
)

// maxPageHeader bounds the page carried in HeaderPage; a longer one is left
// out and nginx shows its own page for the status.
const maxPageHeader = 4096

// Values of HeaderEnvoyRemove: every gate header the upstream must not see
// from the client, less those the allow sets. Underscore aliases of them are
// added per request, for those the request carries (authz.IsGateHeaderAlias).
var (
	envoyRemoveWithUser = strings.Join(authz.UpstreamRemovals(true), ", ")
	envoyRemoveAll      = strings.Join(authz.UpstreamRemovals(false), ", ")
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
//
// Sign-in sessions (login.oidc) add the Decision's Upstream headers (the
// access token, identity headers) to an allowed answer, and the Cookie
// header without the gate's cookies: for Envoy as a Cookie header, or listed
// for removal when nothing is left. nginx, Caddy and Traefik overwrite what
// they copy whether the gate sends it or not, so for them the answer carries
// the final Authorization and Cookie (HeaderCookie for nginx) the
// application must get, the request's own where the gate changes nothing
// (WriteResponse knows no request: empty), and the default identity headers
// (authz.HeaderName, …), empty when not set. A
// denial's page (Decision.Body) is the body, with its content type; nginx
// gets it in HeaderPage.
func WriteResponse(w http.ResponseWriter, f Flavor, d *authz.Decision) {
	writeResponse(w, f, d, nil)
}

// writeResponse is WriteResponse for a check request with headers orig: it
// also has Envoy remove aliases, the underscore spellings of the gate's
// headers the request carried (S10), and gives nginx, Caddy and Traefik the
// request's own Authorization and Cookie where the decision sets none.
func writeResponse(w http.ResponseWriter, f Flavor, d *authz.Decision, orig http.Header) {
	h := w.Header()
	h["Cache-Control"] = []string{"no-store"}
	if len(d.SetCookie) > 0 {
		h["Set-Cookie"] = d.SetCookie
	}
	if d.Allow {
		writeAllow(w, h, f, d, orig)
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
	body, ctype := reason+"\n", "text/plain; charset=utf-8"
	if d.Body != "" {
		body = d.Body
		if d.ContentType != "" {
			ctype = d.ContentType
		}
	}
	switch {
	case f == Nginx:
		h[HeaderStatus] = []string{strconv.Itoa(status)}
		if d.Location != "" {
			h[HeaderLocation] = []string{d.Location}
		}
		if d.Body != "" && len(d.Body) <= maxPageHeader && !strings.ContainsAny(d.Body, "\r\n") {
			h[HeaderPage] = []string{d.Body}
			h[HeaderPageType] = []string{ctype}
		}
		if status != http.StatusForbidden {
			status = http.StatusUnauthorized
		}
	case d.Location != "":
		h["Location"] = []string{d.Location}
	}
	h["Content-Type"] = []string{ctype}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func writeAllow(w http.ResponseWriter, h http.Header, f Flavor, d *authz.Decision, orig http.Header) {
	if d.Warn {
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
	setAuthorization := false
	var unset []string // identity headers without a value: removed for Envoy (S10)
	for _, u := range d.Upstream {
		k := http.CanonicalHeaderKey(u.Name)
		if u.Value == "" && f == Envoy {
			unset = append(unset, u.Name)
			continue
		}
		h[k] = []string{u.Value}
		setAuthorization = setAuthorization || k == "Authorization"
	}
	if f == Envoy {
		remove := envoyRemoveAll
		if d.User != "" {
			remove = envoyRemoveWithUser
		}
		if len(unset) > 0 {
			remove += ", " + strings.Join(unset, ", ")
		}
		if aliases := gateAliases(orig); len(aliases) > 0 {
			remove += ", " + strings.Join(aliases, ", ")
		}
		if d.StripCookies {
			if d.UpstreamCookie != "" {
				h["Cookie"] = []string{d.UpstreamCookie}
			} else {
				remove += ", cookie"
			}
		}
		h[HeaderEnvoyRemove] = []string{remove}
		w.WriteHeader(http.StatusOK)
		return
	}
	// nginx, Caddy, Traefik: the final values (see WriteResponse), present
	// even when empty: Caddy 2.6 sets a copied header the answer lacks to
	// its placeholder's text.
	if !setAuthorization {
		h["Authorization"] = []string{orig.Get("Authorization")}
	}
	cookie := strings.Join(orig.Values("Cookie"), "; ")
	if d.StripCookies {
		cookie = d.UpstreamCookie
	}
	if f == Nginx {
		h[HeaderCookie] = []string{cookie}
	} else {
		h["Cookie"] = []string{cookie}
	}
	for _, k := range identityHeaders {
		if _, ok := h[k]; !ok {
			h[k] = []string{""}
		}
	}
	w.WriteHeader(http.StatusOK)
}

// identityHeaders are the default sign-in identity headers (authz), in
// canonical form.
var identityHeaders = [...]string{
	http.CanonicalHeaderKey(authz.HeaderName), http.CanonicalHeaderKey(authz.HeaderEmail), http.CanonicalHeaderKey(authz.HeaderGroups),
}
