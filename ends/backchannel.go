// Package ends owns the ends of sessions decided outside a request: the
// OpenID Connect back-channel logout endpoint (S18) and the administration
// API (S19). Both end sessions through authz.EndSessions, so through the
// store's ordinary End: the state file's fsynced journal with the embedded
// store, Redis and its change channel (every replica) with Redis.
package ends

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// BackChannelPath is where identity providers POST logout tokens.
const BackChannelPath = "/oidc/backchannel-logout"

// MaxBody bounds a back-channel request body: one form field holding a
// token of a few hundred bytes fits many times over.
const MaxBody = 64 << 10

// Observer counts what the endpoints do (package metrics implements it).
type Observer interface {
	BackChannelLogout(result string)
	AdminRequest(operation, result string)
}

// Auditor records who ended or listed what (package audit implements it).
type Auditor interface {
	EndRequested(e authz.EndRequest)
}

// Deps are what both endpoints need.
type Deps struct {
	// Policies returns the policies in force (the watcher's current set).
	Policies func() []*authz.Policy
	// Store must implement authz.SessionIndex.
	Store    authz.Store
	Events   authz.Events  // session_ended events; default none
	Auditor  Auditor       // default none
	Observer Observer      // default none
	Clock    authz.Clock   // default the system clock
	Logger   *slog.Logger  // default discards
	Timeout  time.Duration // bounds one request's store work (10s)
}

func (d *Deps) defaults() {
	if d.Events == nil {
		d.Events = authz.NopEvents{}
	}
	if d.Auditor == nil {
		d.Auditor = nopAuditor{}
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	if d.Clock == nil {
		d.Clock = authz.SystemClock{}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Timeout == 0 {
		d.Timeout = 10 * time.Second
	}
}

type nopAuditor struct{}

func (nopAuditor) EndRequested(authz.EndRequest) {}

type nopObserver struct{}

func (nopObserver) BackChannelLogout(string)    {}
func (nopObserver) AdminRequest(string, string) {}

// BackChannel is the back-channel logout endpoint (S18).
type BackChannel struct{ d Deps }

// NewBackChannel returns the endpoint's handler.
func NewBackChannel(d Deps) *BackChannel {
	d.defaults()
	return &BackChannel{d: d}
}

// refusal is a back-channel answer other than 200: its status, the result
// label, and the description sent (never a value of the token).
type refusal struct {
	status int
	result string
	detail string
}

func (r *refusal) Error() string { return r.detail }

func refuse(result, detail string) *refusal {
	return &refusal{status: http.StatusBadRequest, result: result, detail: detail}
}

// ServeHTTP answers 200 when the logout token is valid (its sessions have
// ended, on every replica within the store's bound), 400 with a JSON error
// otherwise, 503 when the issuer's keys or the store cannot be reached (the
// provider may send it again), 405 for anything but POST. Never cached.
func (b *BackChannel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	now := b.d.Clock.Now()
	ev := authz.EndRequest{At: now, Kind: "backchannel_logout", Operation: "logout", Source: r.RemoteAddr}
	n, err := b.serve(r, now, &ev)
	if err != nil {
		var rf *refusal
		if !errors.As(err, &rf) {
			rf = &refusal{status: http.StatusServiceUnavailable, result: "store_unavailable", detail: "the session store is unavailable"}
			b.d.Logger.Error("back-channel logout not done", "err", err)
		}
		if rf.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		b.d.Observer.BackChannelLogout(rf.result)
		ev.Result = rf.result
		if ev.Who != "" {
			// Only what a verified token asked is audited; anyone can POST.
			ev.Ended = n
			b.d.Auditor.EndRequested(ev)
		}
		writeError(w, rf.status, rf.result, rf.detail)
		return
	}
	b.d.Observer.BackChannelLogout("ok")
	ev.Result, ev.Ended = "ok", n
	b.d.Auditor.EndRequested(ev)
	w.WriteHeader(http.StatusOK)
}

func (b *BackChannel) serve(r *http.Request, now time.Time, ev *authz.EndRequest) (int, error) {
	if r.Method != http.MethodPost {
		return 0, &refusal{status: http.StatusMethodNotAllowed, result: "invalid_request", detail: "POST only"}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return 0, refuse("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	body := http.MaxBytesReader(nil, r.Body, MaxBody)
	r.Body = body
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return 0, refuse("invalid_request", "the body is too large")
		}
		return 0, refuse("invalid_request", "the body is not a form")
	}
	tokens := r.PostForm["logout_token"]
	if len(tokens) != 1 || tokens[0] == "" {
		return 0, refuse("invalid_request", "exactly one logout_token is required")
	}
	raw := tokens[0]
	iss, aud, ok := peek(raw)
	if !ok {
		return 0, refuse(authz.LogoutInvalidToken, "the logout token is malformed")
	}
	var targets []*authz.Policy
	for _, p := range b.d.Policies() {
		if bc := p.BackChannel; bc != nil && bc.Issuer == iss && slices.Contains(aud, bc.Audience) {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return 0, refuse("unknown_client", "no policy takes logout tokens from this issuer for this audience")
	}
	ctx, cancel := context.WithTimeout(r.Context(), b.d.Timeout)
	defer cancel()
	// Each policy checks the token with its own keys and algorithms; it
	// ends sessions only where it verifies.
	var lt *authz.LogoutToken
	var verified []*authz.Policy
	var firstErr error
	for _, p := range targets {
		t, err := p.BackChannel.Verifier.VerifyLogout(ctx, raw, now)
		if err != nil {
			firstErr = cmp(firstErr, err)
			continue
		}
		lt = t
		verified = append(verified, p)
	}
	if lt == nil {
		var le *authz.LogoutError
		if errors.As(firstErr, &le) {
			if le.Reason == authz.LogoutUnavailable {
				return 0, &refusal{status: http.StatusServiceUnavailable, result: le.Reason, detail: le.Detail}
			}
			return 0, refuse(le.Reason, le.Detail)
		}
		return 0, refuse(authz.LogoutInvalidToken, "the logout token is not valid")
	}
	ev.Who, ev.Subject, ev.SID = lt.Issuer, lt.Subject, lt.SID
	for _, p := range verified {
		ev.Policies = append(ev.Policies, p.Name)
	}
	// End first, then use up the jti: a failed end leaves the token good
	// for the provider's retry, and a replay, refused below, has ended
	// nothing signed in after the token (SignedInBy).
	n := 0
	sel := authz.Selector{Issuer: lt.Issuer, Subject: lt.Subject, SID: lt.SID, SignedInBy: lt.At}
	for _, p := range verified {
		list, err := authz.EndSessions(ctx, b.d.Store, b.d.Events, p, sel, authz.CauseIdPLogout, lt.At)
		n += len(list)
		if err != nil {
			return n, err
		}
	}
	first, err := b.d.Store.Claim(ctx, authz.ClaimKey("logout-jti", lt.Issuer+"\x00"+lt.JTI), lt.Expiry+maxSkew.Milliseconds())
	if err != nil {
		return n, err
	}
	if !first {
		return n, refuse("replayed", "this logout token was used already")
	}
	return n, nil
}

// maxSkew covers the clock skew a verifier allows on exp: a jti is kept
// until no verifier could take its token any more.
const maxSkew = 10 * time.Minute

// cmp keeps the more telling of two verification errors: a policy whose
// keys are unavailable says less than one that refused the token.
func cmp(old, err error) error {
	var le *authz.LogoutError
	if old == nil || errors.As(old, &le) && le.Reason == authz.LogoutUnavailable {
		return err
	}
	return old
}

// peek reads iss and aud of an unverified compact JWS, only to choose the
// policies that verify it.
func peek(raw string) (iss string, aud []string, ok bool) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(raw) > MaxBody {
		return "", nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", nil, false
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Iss == "" {
		return "", nil, false
	}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return c.Iss, []string{one}, true
	}
	if json.Unmarshal(c.Aud, &aud) == nil {
		return c.Iss, aud, true
	}
	return "", nil, false
}

// writeError writes an OAuth-style JSON error (Back-Channel Logout §2.8).
func writeError(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, detail})
}
