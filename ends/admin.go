package ends

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Admin API paths (S19). Both answer JSON, never cached.
const (
	// AdminSessionsPath: GET ?user=SUB[&policy=P] lists the live sessions
	// of a user.
	AdminSessionsPath = "/admin/v1/sessions"
	// AdminEndPath: POST an EndRequestBody ends sessions.
	AdminEndPath = "/admin/v1/sessions/end"
)

// EndRequestBody is what POST AdminEndPath takes: exactly one of User, SID,
// Session (a SessionHash) and All, and optionally one Policy.
type EndRequestBody struct {
	User    string `json:"user,omitempty"`
	SID     string `json:"sid,omitempty"`
	Session string `json:"session,omitempty"`
	All     bool   `json:"all,omitempty"`
	Policy  string `json:"policy,omitempty"`
}

// EndResponse is the answer to an end: how many sessions ended, by policy.
type EndResponse struct {
	Ended    int            `json:"ended"`
	ByPolicy map[string]int `json:"by_policy"`
}

// SessionInfo is one listed session: never its id (a credential) or a
// token, only its SessionHash. Times are RFC 3339 UTC.
type SessionInfo struct {
	Policy           string    `json:"policy"`
	Session          string    `json:"session"`
	Subject          string    `json:"subject"`
	Method           string    `json:"method"`
	SignIn           time.Time `json:"sign_in"`
	Created          time.Time `json:"created"`
	LastActivity     time.Time `json:"last_activity"`
	AbsoluteDeadline time.Time `json:"absolute_deadline"`
	IdleDeadline     time.Time `json:"idle_deadline"`
}

// ListResponse is the answer to a list.
type ListResponse struct {
	Sessions []SessionInfo `json:"sessions"`
}

// Admin is the administration API (S19), served on its own listener.
type Admin struct {
	d     Deps
	token []byte // SHA-256 of the bearer token; nil: none required
	who   string // the token's fingerprint, for the audit log
}

// NewAdmin returns the API's handler. token is the bearer token every call
// must present ("" requires none: only for a loopback listener or one that
// requires client certificates, which the caller checks with
// CheckAdminAddr).
func NewAdmin(d Deps, token string) *Admin {
	d.defaults()
	a := &Admin{d: d, who: "unauthenticated (loopback)"}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		a.token = sum[:]
		a.who = TokenFingerprint(token)
	}
	return a
}

// TokenFingerprint names a bearer token in audit events without revealing
// it: "token:" and 12 hex digits of its SHA-256.
func TokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "token:" + hex.EncodeToString(sum[:6])
}

// CheckAdminAddr refuses an admin listen address that is not loopback when
// its callers are not authenticated, by a token or by client certificates
// (--admin-client-ca-file): anyone who reaches it could end every session.
func CheckAdminAddr(addr string, haveToken, clientCerts bool) error {
	if haveToken || clientCerts {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--admin-addr: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--admin-addr %s is not a loopback address: set --admin-token-file, or --admin-client-ca-file with the TLS flags (anyone who reaches the admin API can end every session)", addr)
}

// ServeHTTP implements http.Handler.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	var op string
	switch {
	case r.URL.Path == AdminSessionsPath && r.Method == http.MethodGet:
		op = "list"
	case r.URL.Path == AdminEndPath && r.Method == http.MethodPost:
		op = "end"
	case r.URL.Path == AdminSessionsPath || r.URL.Path == AdminEndPath:
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
		return
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	ev := authz.EndRequest{At: a.d.Clock.Now(), Kind: "admin", Operation: op, Who: a.who, Source: r.RemoteAddr}
	cert := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// Verified at the handshake (--admin-client-ca-file): it names the
		// caller, with the token's fingerprint when there is a token too.
		cert = CertIdentity(r.TLS.PeerCertificates[0])
		ev.Who = cert
		if a.token != nil {
			ev.Who += " " + a.who
		}
	}
	if !a.authorized(r) {
		ev.Who, ev.Result = "unauthenticated", "unauthorized"
		if cert != "" {
			ev.Who = cert
		}
		a.d.Observer.AdminRequest(op, ev.Result)
		a.d.Auditor.EndRequested(ev)
		w.Header().Set("WWW-Authenticate", `Bearer realm="sessiongate-admin"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
		return
	}
	var status int
	var body any
	var err error
	if op == "list" {
		body, err = a.list(r, &ev)
	} else {
		body, err = a.end(r, &ev)
	}
	status = http.StatusOK
	ev.Result = "ok"
	if err != nil {
		status, ev.Result = http.StatusServiceUnavailable, "store_unavailable"
		var ae *adminError
		if errors.As(err, &ae) {
			status, ev.Result = ae.status, ae.result
		} else {
			a.d.Logger.Error("admin call failed", "operation", op, "err", err)
			err = errors.New("the session store is unavailable")
		}
	}
	a.d.Observer.AdminRequest(op, ev.Result)
	a.d.Auditor.EndRequested(ev)
	if err != nil {
		writeError(w, status, ev.Result, err.Error())
		return
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// authorized compares the presented bearer token with the configured one in
// constant time (of their digests: no length is revealed either).
func (a *Admin) authorized(r *http.Request) bool {
	if a.token == nil {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.token) == 1
}

type adminError struct {
	status int
	result string
	msg    string
}

func (e *adminError) Error() string { return e.msg }

func badRequest(msg string) error {
	return &adminError{status: http.StatusBadRequest, result: "invalid_request", msg: msg}
}

// policies returns the policy named name, or every policy for "".
func (a *Admin) policies(name string) ([]*authz.Policy, error) {
	all := a.d.Policies()
	if name == "" {
		return all, nil
	}
	i := slices.IndexFunc(all, func(p *authz.Policy) bool { return p.Name == name })
	if i < 0 {
		return nil, &adminError{status: http.StatusNotFound, result: "not_found", msg: "no policy of that name"}
	}
	return all[i : i+1], nil
}

func (a *Admin) list(r *http.Request, ev *authz.EndRequest) (any, error) {
	q := r.URL.Query()
	user := q.Get("user")
	if user == "" {
		return nil, badRequest("user is required")
	}
	ev.Subject = user
	ps, err := a.policies(q.Get("policy"))
	if err != nil {
		return nil, err
	}
	ix, ok := a.d.Store.(authz.SessionIndex)
	if !ok {
		return nil, fmt.Errorf("the store cannot list sessions (%T)", a.d.Store)
	}
	ctx := r.Context()
	now := a.d.Clock.Now().UnixMilli()
	out := ListResponse{Sessions: []SessionInfo{}}
	for _, p := range ps {
		ev.Policies = append(ev.Policies, p.Name)
		list, err := authz.Select(ctx, ix, p, authz.Selector{Issuer: p.Issuer, Subject: user})
		if err != nil {
			return nil, err
		}
		for _, s := range list {
			if !a.live(r, p, &s, now) {
				continue
			}
			out.Sessions = append(out.Sessions, SessionInfo{
				Policy: p.Name, Session: authz.SessionHash(s.ID), Subject: s.Subject, Method: s.Method.String(),
				SignIn: ms(s.SignIn), Created: ms(s.Created), LastActivity: ms(s.LastActivity),
				AbsoluteDeadline: ms(s.SignIn + p.AbsoluteTimeout.Milliseconds()),
				IdleDeadline:     ms(s.LastActivity + p.IdleTimeout.Milliseconds()),
			})
		}
	}
	slices.SortFunc(out.Sessions, func(x, y SessionInfo) int { return x.LastActivity.Compare(y.LastActivity) })
	return out, nil
}

// live reports whether s would still be allowed: not ended, not dead with
// its scope, within both deadlines.
func (a *Admin) live(r *http.Request, p *authz.Policy, s *authz.Session, now int64) bool {
	if s.Ended() || now-s.SignIn > p.AbsoluteTimeout.Milliseconds() || now-s.LastActivity > p.IdleTimeout.Milliseconds() {
		return false
	}
	lk, err := a.d.Store.Load(r.Context(), p.Name, "", s.Scope)
	return err == nil && !(lk.ScopeFound && lk.Scope.EndedAt >= s.Created)
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func (a *Admin) end(r *http.Request, ev *authz.EndRequest) (any, error) {
	var req EndRequestBody
	d := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBody))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return nil, badRequest("the body must be a JSON end request")
	}
	n := 0
	for _, set := range []bool{req.User != "", req.SID != "", req.Session != "", req.All} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, badRequest("exactly one of user, sid, session and all")
	}
	ev.Subject, ev.SID, ev.Session, ev.All = req.User, req.SID, req.Session, req.All
	ps, err := a.policies(req.Policy)
	if err != nil {
		return nil, err
	}
	out := EndResponse{ByPolicy: map[string]int{}}
	at := a.d.Clock.Now().UnixMilli()
	for _, p := range ps {
		ev.Policies = append(ev.Policies, p.Name)
		sel := authz.Selector{Issuer: p.Issuer, Subject: req.User, SID: req.SID, Session: req.Session, All: req.All}
		list, err := authz.EndSessions(r.Context(), a.d.Store, a.d.Events, p, sel, authz.CauseAdmin, at)
		out.Ended += len(list)
		out.ByPolicy[p.Name] = len(list)
		ev.Ended = out.Ended
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
