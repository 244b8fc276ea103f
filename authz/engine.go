package authz

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Engine applies the invariants S1–S11 to one request at a time. It is safe
// for concurrent use; all mutable state lives in the Store.
type Engine struct {
	policies PolicySource
	store    Store
	clock    Clock
	events   Events
	log      *slog.Logger
	rand     io.Reader
	grants   grants  // opened sign-in grants
	flights  flights // refreshes in progress
}

// Options are the Engine's dependencies. Policies and Store are required.
type Options struct {
	Policies PolicySource
	Store    Store
	Clock    Clock        // default: the system clock
	Events   Events       // default: NopEvents
	Logger   *slog.Logger // default: discards
	Rand     io.Reader    // session id source; default crypto/rand
}

// NewEngine wires an Engine.
func NewEngine(o Options) (*Engine, error) {
	if o.Policies == nil || o.Store == nil {
		return nil, errors.New("authz: NewEngine needs Policies and Store")
	}
	e := &Engine{policies: o.Policies, store: o.Store, clock: o.Clock, events: o.Events, log: o.Logger, rand: o.Rand}
	if e.clock == nil {
		e.clock = SystemClock{}
	}
	if e.events == nil {
		e.events = NopEvents{}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	return e, nil
}

// sessionIDBytes is 192 bits of randomness: above the 128-bit floor with room.
const (
	sessionIDBytes = 24
	sessionIDLen   = 32 // base64url, no padding
	// retainMargin keeps records a little past the last instant they can matter.
	retainMargin = time.Minute
)

// Check decides one request. It never panics on input and never returns an
// error: a decision that cannot be made is a denial (S9).
//
// Every frame of a check counts: gRPC runs each check on a fresh goroutine,
// whose stack starts small and is copied to one twice the size whenever the
// deepest call of the check does not fit (several microseconds of CPU, on
// every request). So the decision is made here rather than in a function of
// its own (one frame fewer with a Decision in it), the stores' Loads assign
// their results in place rather than through copies, and rare paths
// (dry-run, logging, errors) are functions of their own. BenchmarkStack
// (test/bench) measures the stack a check needs against what gRPC leaves it.
func (e *Engine) Check(ctx context.Context, r *Request) Decision {
	now := e.clock.Now()
	var d Decision
	if p := e.policies.Match(r.Host); p == nil {
		d = Decision{Reason: ReasonUnknownHost, Status: 403}
	} else {
		c := check{e: e, p: p, r: r, now: now, nowMs: now.UnixMilli(), store: e.store, ctx: ctx}
		d = c.run(ctx)
		d.Policy = p.Name
		// A completed sign-in is not a denial: dry-run or not, the browser
		// goes where it was going, with its session.
		if p.DryRun && !d.Allow && d.Reason != ReasonSignedIn {
			e.dryRun(&d, r)
		}
	}
	e.events.Decided(&d, e.clock.Now().Sub(now))
	return d
}

// dryRun turns the denial d into what a dry-run policy answers.
func (e *Engine) dryRun(d *Decision, r *Request) {
	e.log.Debug("dry-run: would deny; allowed", "policy", d.Policy, "reason", d.Reason.String(),
		"status", d.Status, "source", r.SourceAddr, "request_id", r.RequestID)
	// S9 dry-run: decided, recorded, allowed. The cookie changes still go
	// out so that the session model keeps tracking what the client holds.
	*d = Decision{Allow: true, DryRun: true, Reason: d.Reason, Policy: d.Policy, SetCookie: d.SetCookie}
}

// check is the state of one decision.
type check struct {
	e      *Engine
	p      *Policy
	r      *Request
	now    time.Time
	nowMs  int64
	cookie string // the session id presented, "" if none or malformed
	claims *Claims
	// store is what decideOn runs on: the engine's store, or its local
	// fallback (degraded).
	store    Store
	degraded bool
	// ctx is the request's, for the denials that start a sign-in.
	ctx context.Context
	// path is the request's path, without query or fragment.
	path string
	// endedAt is the latest end the decision learned of (Unix ms): a
	// sign-in it starts must prove a sign-in after it (S14).
	endedAt int64
	// grantSession: the credential is a sign-in session (withSession).
	grantSession bool
}

func (c *check) run(ctx context.Context) Decision {
	path := c.r.Path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	c.path = path
	si := c.p.Login.SignIn
	if si != nil && path == si.CallbackPath() {
		return c.callback(ctx, si)
	}
	if c.bypassed(path) {
		if si != nil {
			// The gate's own cookies reach no application (S15), on
			// paths that need no session too.
			return Decision{Allow: true, StripCookies: true, UpstreamCookie: stripGateCookies(c.r.header("cookie"), c.p.Cookie.Name)}
		}
		return Decision{Allow: true}
	}
	cookies := c.r.header("cookie")
	if v, ok := CookieValue(cookies, c.p.Cookie.Name); ok && validSessionID(v) {
		c.cookie = v
	}
	logout := c.p.Logout.Matches(path)
	raw := c.token(cookies)
	if raw != "" {
		var cl *Claims
		var err error
		if len(raw) > c.p.MaxTokenBytes {
			// Never handed to the verifier; on the logout path it is an
			// invalid token like any other, which must not stop the sign-out.
			err = &TokenError{Reason: ReasonInvalidToken, Detail: "token longer than the policy's limit"}
		} else {
			cl, err = c.p.Verifier.Verify(ctx, raw, c.now)
		}
		if err != nil {
			if !logout {
				return c.rejected(err)
			}
		} else {
			c.claims = cl
		}
	}
	if logout {
		return c.logout(ctx)
	}
	if c.claims == nil {
		if si != nil && c.cookie != "" {
			// The gate's own sign-in: the session cookie, backed by the
			// grant the store holds, is the credential.
			return c.withSession(ctx)
		}
		// No token: a session cookie alone is never a credential. Whether a
		// session ended decides only if the login asks for credentials again.
		return c.deny(ReasonNoToken, c.cookieSessionEnded(ctx))
	}
	return c.withToken(ctx)
}

// rejected denies a request whose token was refused.
func (c *check) rejected(err error) Decision {
	c.e.log.Debug("token rejected", "policy", c.p.Name, "err", err)
	return c.deny(TokenReason(err), false)
}

// bypassed reports whether path needs no session. Paths that could smuggle a
// different target past a prefix (dot segments, encoded slashes or dots,
// doubled slashes, control bytes) never bypass: they fail closed into the
// normal checks.
func (c *check) bypassed(path string) bool {
	if len(c.p.Bypass) == 0 || !cleanPath(path) {
		return false
	}
	for _, b := range c.p.Bypass {
		if MatchPath(path, b) {
			return true
		}
	}
	return false
}

func cleanPath(p string) bool {
	if p == "" || p[0] != '/' || strings.Contains(p, "//") || strings.Contains(p, "/.") || strings.IndexByte(p, '\\') >= 0 {
		return false
	}
	if i := strings.IndexByte(p, '%'); i >= 0 {
		return false
	}
	// Controls are not valid in a path, and URL parsers that drop them
	// (WHATWG strips tabs and newlines) would read "/public/\t../admin"
	// as a traversal out of the bypassed prefix. Raw non-ASCII is not valid
	// in a request target either, and servers that normalise Unicode read
	// look-alikes ("\u2025", fullwidth dots, overlong UTF-8) as "..".
	// A space is not valid either, and a comma is how a proxy that appends
	// joins a client's forwarded URI with its own ("/public/x, /admin").
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= 0x20 || c >= 0x7f || c == ',' {
			return false
		}
	}
	return true
}

// token reads the first token the policy's sources provide.
func (c *check) token(cookies string) string {
	for _, s := range c.p.TokenSources {
		switch s.Kind {
		case FromHeader:
			v := c.r.header(s.Name)
			if s.Name == "authorization" {
				v = bearer(v)
			} else {
				v = strings.TrimSpace(v)
			}
			if v != "" {
				return v
			}
		case FromCookie:
			if v, ok := CookieValue(cookies, s.Name); ok && v != "" {
				return v
			}
		}
	}
	return ""
}

func bearer(v string) string {
	const prefix = "bearer "
	if len(v) > len(prefix) && strings.EqualFold(v[:len(prefix)], prefix) {
		return strings.TrimSpace(v[len(prefix):])
	}
	return ""
}

func validSessionID(v string) bool {
	if len(v) != sessionIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (c *check) cookieSessionEnded(ctx context.Context) bool {
	if c.cookie == "" {
		return false
	}
	lk, err := c.store.Load(ctx, c.p.Name, c.cookie, Digest{})
	if err == nil && lk.SessionFound && lk.Session.Ended() {
		c.endedAt = lk.Session.EndedAt
		return true
	}
	return false
}

// withToken decides a request whose token was verified, on the engine's
// store.
func (c *check) withToken(ctx context.Context) Decision {
	return c.decideOn(ctx, c.e.store, false, nil)
}

// decideOn is the driver of one decision (see decide.go): it loads the
// facts from st, asks Decide, confirms against the store of record when
// Decide says so, and applies the outcome. degraded says st is the store's
// local fallback, used during an outage by a fail-open policy.
//
// seed is the session record already loaded from st (a sign-in session's),
// or nil.
func (c *check) decideOn(ctx context.Context, st Store, degraded bool, seed *Session) Decision {
	c.store, c.degraded = st, degraded
	var f Facts
	if err := c.facts(ctx, st, false, seed, &f); err != nil {
		return c.storeFailure(ctx, err)
	}
	o := Decide(c.p, c.claims, &f, c.nowMs, c.passive())
	if o.Verdict == VerdictConfirm {
		if err := c.facts(ctx, st, true, nil, &f); err != nil {
			return c.storeFailure(ctx, err)
		}
		o = Decide(c.p, c.claims, &f, c.nowMs, c.passive())
	}
	if o.Verdict == VerdictBegin {
		raised, err := c.foldUserEnd(ctx, st, &f)
		if err != nil {
			return c.storeFailure(ctx, err)
		}
		if raised {
			o = Decide(c.p, c.claims, &f, c.nowMs, c.passive())
		}
	}
	return c.apply(ctx, &f, &o)
}

// foldUserEnd raises the scope end in f to the end of the user's own scope
// when the credential's scope is a provider session (sid), and reports
// whether it did. An end that names the user (a logout token without a sid,
// an administrator's `end --user`, S18/S19) raises the user's scope and
// ends the sessions it finds; a provider session of that user which no
// session here has seen yet has no end of its own, and must not open a
// session with a sign-in from before the user's end (S3). Read only where
// a session would begin, so resumed sessions pay nothing for it.
func (c *check) foldUserEnd(ctx context.Context, st Store, f *Facts) (bool, error) {
	if c.claims.SID == "" {
		return false, nil // its scope is the user's: in f already
	}
	if fs, ok := st.(FallbackStore); ok && f.Confirmed {
		st = fs.Confirmed()
	}
	lk, err := st.Load(ctx, c.p.Name, "", ScopeDigest(c.claims.Issuer, c.claims.Subject, ""))
	if err != nil || !lk.ScopeFound || lk.Scope.EndedAt <= f.scopeEnd() {
		return false, err
	}
	if !f.ScopeFound {
		f.Scope, f.ScopeFound = ScopeState{}, true
	}
	f.Scope.EndedAt = lk.Scope.EndedAt
	return true, nil
}

// facts loads what Decide needs: the cookie's session and the token's
// scope, and the scope's current session when Decide wants it. confirm
// reads the store of record, past any replica-local copy.
// (Into f, not returned: the facts are large and read on every request.)
func (c *check) facts(ctx context.Context, st Store, confirm bool, seed *Session, f *Facts) error {
	if confirm {
		if fs, ok := st.(FallbackStore); ok {
			st = fs.Confirmed()
		}
	}
	// Not *f = Facts{…}: Current is read only when CurrentFound, and
	// clearing the records costs every request.
	f.Confirmed, f.CurrentFound = confirm, false
	var err error
	if seed != nil {
		// The session record is loaded already: only its scope.
		if f.Lookup, err = st.Load(ctx, c.p.Name, "", c.claims.Scope); err != nil {
			return err
		}
		f.Session, f.SessionFound = *seed, true
	} else if f.Lookup, err = st.Load(ctx, c.p.Name, c.cookie, c.claims.Scope); err != nil {
		return err
	}
	if id, ok := CurrentWanted(c.claims, &f.Lookup); ok {
		cur, err := st.Load(ctx, c.p.Name, id, Digest{})
		if err != nil {
			return err
		}
		f.Current, f.CurrentFound = cur.Session, cur.SessionFound
	}
	return nil
}

// apply carries out Decide's outcome.
func (c *check) apply(ctx context.Context, f *Facts, o *Outcome) Decision {
	s := f.Of(o.Of)
	c.endedAt = max(c.endedAt, f.scopeEnd(), o.EndAt)
	if s != nil {
		c.endedAt = max(c.endedAt, s.EndedAt)
	}
	if o.Verdict == VerdictResume && !o.Foreign {
		return c.resume(ctx, s, &o.Touch, o.Reauthenticated) // the hot path
	}
	return c.applyOther(ctx, f, o, s)
}

// applyOther is apply for every outcome but a plain resume, s being the
// session o names. (A function of its own: Engine.Check says why.)
func (c *check) applyOther(ctx context.Context, f *Facts, o *Outcome, s *Session) Decision {
	if o.Foreign {
		msg := "session presented with another identity's token; session ended"
		if o.Verdict == VerdictDeny {
			msg = "ended session presented with another identity's token"
		}
		c.e.log.Warn(msg, "policy", c.p.Name, "session_subject", s.Subject, "token_subject", c.claims.Subject,
			"source", c.r.SourceAddr, "request_id", c.r.RequestID)
	}
	switch o.Verdict {
	case VerdictBegin:
		if c.grantSession {
			// The session record went (its KeepUntil passed): its
			// credential with it. Only a sign-in opens a session.
			return c.deny(ReasonNoToken, false)
		}
		return c.begin(ctx, o.New)
	case VerdictResume:
		return c.resume(ctx, s, &o.Touch, o.Reauthenticated)
	case VerdictEnd:
		if o.ScopeOnly {
			if _, _, err := c.store.End(ctx, c.p.Name, "", o.Scope, End{Cause: o.Cause, At: o.EndAt, KeepUntil: keepEnd(c.p, c.claims, nil, o.EndAt)}); err != nil {
				return c.storeFailure(ctx, err)
			}
			return c.deny(o.Reason, o.Reauth)
		}
		if err := c.record(ctx, s, o.Cause, o.EndAt); err != nil {
			return c.storeFailure(ctx, err)
		}
		if o.ThenBegin {
			b := Begin(c.p, c.claims, f, c.nowMs)
			return c.apply(ctx, f, &b)
		}
	}
	// A denial, or an end that this request found (later requests get
	// reauth_required). A cookie naming the ended session is dropped.
	d := c.deny(o.Reason, o.Reauth)
	if (o.Verdict == VerdictEnd || o.Foreign) && s != nil && c.cookie != "" && sameSecret(c.cookie, s.ID) && len(d.SetCookie) == 0 {
		d.SetCookie = append(d.SetCookie, c.clearCookie())
	}
	return d
}

// begin opens the session s that Decide laid out.
func (c *check) begin(ctx context.Context, s *Session) Decision {
	id, err := c.e.newID()
	if err != nil {
		c.e.log.Error("session id generation failed", "err", err)
		return c.storeFailure(ctx, err)
	}
	s.ID = id
	if err := c.store.Begin(ctx, s); err != nil {
		return c.storeFailure(ctx, err)
	}
	c.e.events.SessionStarted(c.event(s, CauseNone))
	d := c.allow(s)
	d.SetCookie = []string{c.sessionCookie(id)}
	return d
}

// resume stores the activity update t of the live session s and allows.
func (c *check) resume(ctx context.Context, s *Session, t *Touch, reauth bool) Decision {
	if *t != (Touch{}) {
		if gone, err := c.touch(ctx, s, t); err != nil {
			return c.storeFailure(ctx, err)
		} else if gone {
			// Ended by a concurrent request or another replica: S3 wins.
			return c.deny(ReasonReauthRequired, true)
		}
	}
	if reauth {
		c.reauthenticated(s)
	}
	d := c.allow(s)
	if c.cookie != "" && !sameSecret(c.cookie, s.ID) {
		d.SetCookie = []string{c.sessionCookie(s.ID)}
	}
	if c.grantSession {
		return c.withGrant(ctx, s, &d)
	}
	return d
}

// touch stores the activity update t of s and sets *s to the record as
// stored; gone says s has ended or is no more. (Out of line: the record it
// returns would otherwise sit in the frame of every resume.)
func (c *check) touch(ctx context.Context, s *Session, t *Touch) (gone bool, err error) {
	ns, found, err := c.store.Touch(ctx, c.p.Name, s.ID, *t)
	if err != nil {
		return false, err
	}
	if !found || ns.Ended() {
		return true, nil
	}
	*s = ns
	return false, nil
}

func (c *check) reauthenticated(s *Session) {
	c.e.events.SessionReauthenticated(c.event(s, CauseNone))
}

func (c *check) passive() bool {
	for _, pp := range c.p.PassivePaths {
		if MatchPath(c.path, pp) {
			return true
		}
	}
	return false
}

// sameSecret compares a presented session id with a stored one in constant
// time. The stored session is today always the presenter's own (named by
// the cookie, or the current one of the token's scope), so timing reveals
// nothing; constant time keeps it so should a lookup ever change.
func sameSecret(presented, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(presented), []byte(stored)) == 1
}

// record ends s with cause at time at, emitting the event once.
func (c *check) record(ctx context.Context, s *Session, cause EndCause, at int64) error {
	_, ended, err := c.store.End(ctx, c.p.Name, s.ID, s.Scope, End{Cause: cause, At: at, KeepUntil: keepEnd(c.p, c.claims, s, at)})
	if err == nil && ended {
		c.e.events.SessionEnded(c.event(s, cause))
	}
	return err
}

// logout ends whatever session the cookie or the token names (S6) and sends
// the client to the post-logout URL with the cookie cleared. If the end
// cannot be recorded, it says so instead of pretending (S9).
func (c *check) logout(ctx context.Context) Decision {
	var scope Digest
	if c.claims != nil {
		scope = c.claims.Scope
	}
	si := c.p.Login.SignIn
	var grant *Grant // the ended session's, for the provider's sign-out (S17)
	if c.cookie != "" {
		lk, err := c.store.Load(ctx, c.p.Name, c.cookie, Digest{})
		if err != nil {
			return c.logoutFailure(err)
		}
		// An ended session stays ended; ending it again would raise its
		// scope's end and sign its owner out of newer sessions on the word
		// of anyone who kept the dead cookie.
		if lk.SessionFound && !lk.Session.Ended() {
			if si != nil && lk.Session.Grant != "" {
				if og, err := c.e.grants.open(si, c.p, &lk.Session); err == nil {
					grant = og.g
				}
			}
			if err := c.endFor(ctx, &lk.Session, lk.Session.Scope); err != nil {
				return c.logoutFailure(err)
			}
		}
	}
	if c.claims != nil {
		// The token's scope ends; its current session, which a client
		// without the cookie has been continuing, is ended by id so that
		// the sign-out is audited and counted, not only implied by the
		// scope (ended is false if the cookie's end above covered it).
		lk, err := c.store.Load(ctx, c.p.Name, "", scope)
		if err != nil {
			return c.logoutFailure(err)
		}
		cur := Session{ID: lk.Scope.Current, Policy: c.p.Name, Subject: c.claims.Subject, Scope: scope}
		if err := c.endFor(ctx, &cur, scope); err != nil {
			return c.logoutFailure(err)
		}
	}
	to := c.p.Logout.RedirectURL
	if si != nil {
		// Signed out at the provider too: its end_session_endpoint, with
		// the ID token as id_token_hint (the one place it leaves the
		// server), or the redirect URL where it has none.
		to = si.EndSessionURL(c.r, grant)
	}
	return Decision{
		Reason: ReasonSignedOut, Status: 302, Location: to,
		SetCookie: []string{c.clearCookie()},
	}
}

// logoutFailure never fails open: forwarding a sign-out that was not
// recorded would pretend the session ended (S6, S9).
func (c *check) logoutFailure(err error) Decision {
	c.e.log.Error("session store failure; sign-out not recorded", "policy", c.p.Name, "err", err)
	return Decision{Reason: ReasonStoreUnavailable, Status: 503}
}

func (c *check) endFor(ctx context.Context, s *Session, scope Digest) error {
	at := endAt(c.p, c.claims, s, c.nowMs)
	_, ended, err := c.store.End(ctx, c.p.Name, s.ID, scope, End{Cause: CauseSignedOut, At: at, KeepUntil: keepEnd(c.p, c.claims, s, at)})
	if err == nil && ended {
		c.e.events.SessionEnded(c.event(s, CauseSignedOut))
	}
	return err
}

func (c *check) storeFailure(ctx context.Context, err error) Decision {
	c.e.log.Error("session store failure", "policy", c.p.Name, "degraded", c.degraded, "err", err)
	if c.p.StoreFailOpen && errors.Is(err, ErrStoreUnavailable) {
		// Opt-in fail-open (S9), for outages only. A store with a local copy
		// (the near cache of a shared store) decides again on that copy.
		if fb, ok := c.e.store.(FallbackStore); ok && !c.degraded && c.claims != nil {
			return c.decideOn(ctx, fb.Fallback(), true, nil)
		}
		if c.claims != nil {
			// Without one: the token was verified, the session could not be
			// checked. Identity goes upstream, deadlines are unknown.
			return Decision{Allow: true, Reason: ReasonStoreUnavailable, User: c.claims.Subject}
		}
	}
	return Decision{Reason: ReasonStoreUnavailable, Status: 503}
}

func (c *check) allow(s *Session) Decision {
	abs := s.SignIn + c.p.AbsoluteTimeout.Milliseconds()
	idle := s.LastActivity + c.p.IdleTimeout.Milliseconds()
	d := Decision{
		Allow: true, User: c.claims.Subject,
		SessionExpiresAt: abs / 1000, IdleExpiresAt: idle / 1000,
	}
	// S11: inside the warning window the client is told too.
	if left := min(abs, idle) - c.nowMs; c.p.WarnBefore > 0 && left <= c.p.WarnBefore.Milliseconds() {
		d.Warn, d.ExpiresIn = true, max(left, 0)/1000
	}
	return d
}

// deny builds a denial: browsers are redirected to the login page, others get
// 401 with a Bearer challenge (S7).
func (c *check) deny(reason Reason, reauth bool) Decision {
	d := Decision{Reason: reason}
	if c.r.IsBrowser() {
		if si := c.p.Login.SignIn; si != nil {
			return c.startSignIn(c.ctx, si, ReturnURL(c.r), reason, reauth)
		}
		d.Status = 302
		d.Location = LoginURL(c.p, c.r, reauth)
		return d
	}
	d.Status = 401
	d.Authenticate = challenge(reason, reauth)
	return d
}

// challenge is the WWW-Authenticate value: RFC 6750 for token problems, and
// the RFC 9470 step-up challenge when the user must sign in again.
func challenge(reason Reason, reauth bool) string {
	switch {
	case reason == ReasonNoToken:
		return `Bearer realm="sessiongate"`
	case reauth:
		return `Bearer realm="sessiongate", error="insufficient_user_authentication", error_description="` + reason.String() + `", max_age=0`
	}
	return `Bearer realm="sessiongate", error="invalid_token", error_description="` + reason.String() + `"`
}

func (c *check) sessionCookie(id string) string {
	// Rounded up: a sub-second lifetime must not become Max-Age=0 (delete).
	maxAge := int64((c.p.AbsoluteTimeout + time.Second - 1) / time.Second)
	return c.p.Cookie.Name + "=" + id + "; Path=/; Max-Age=" + strconv.FormatInt(maxAge, 10) +
		"; Secure; HttpOnly; SameSite=" + c.p.Cookie.SameSite
}

func (c *check) clearCookie() string {
	return c.p.Cookie.Name + "=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=" + c.p.Cookie.SameSite
}

func (c *check) event(s *Session, cause EndCause) SessionEvent {
	ev := SessionEvent{
		At: c.now, Policy: c.p.Name, Subject: s.Subject, SessionID: s.ID, Scope: s.Scope, Cause: cause,
		Method: s.Method, SourceAddr: c.r.SourceAddr, RequestID: c.r.RequestID,
	}
	if cause == CauseIdentityMismatch && c.claims != nil {
		ev.Presented = c.claims.Subject
	}
	return ev
}

func (e *Engine) newID() (string, error) {
	var b [sessionIDBytes]byte
	if _, err := io.ReadFull(e.rand, b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
