package authz

import (
	"context"
	"errors"
	"html"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// The engine's side of a policy's own sign-in (Login.SignIn, login.oidc,
// S12–S17): the callback opens a session holding the sealed grant; a
// browser's session cookie backed by that grant is its credential; the
// access token is refreshed ahead of expiry, once per session; denials of
// browsers start a sign-in; the logout path ends the session at the
// provider too. SignIn (package oidc) speaks the protocol; this file
// decides.

// SignInCounter is implemented by event sinks that count sign-ins
// (metrics). The engine calls it for policies with Login.SignIn.
type SignInCounter interface {
	// SignInFinished counts one callback: result is "success" or the
	// reason it was refused.
	SignInFinished(policy, result string, elapsed time.Duration)
	// Refreshed counts one refresh: success, revoked or failure.
	Refreshed(policy, result string)
}

// SignInAuditor is implemented by event sinks that audit refused sign-ins
// (S14: a provider that ignored a request for re-authentication).
type SignInAuditor interface {
	SignInRefused(e SessionEvent)
}

const (
	// refreshLead is how long before its expiry an access token is
	// refreshed, at most; a short-lived token is refreshed in the last
	// quarter of its life.
	refreshLead = time.Minute
	// refreshLease bounds how long one replica may hold a session's
	// refresh before another may try.
	refreshLease = 30 * time.Second
	// refreshTimeout bounds one refresh at the provider.
	refreshTimeout = 10 * time.Second
	// maxOpenGrants bounds the cache of opened grants.
	maxOpenGrants = 1 << 16
)

// callback completes a sign-in (S13, S14) and opens its session.
func (c *check) callback(ctx context.Context, si SignIn) Decision {
	start := time.Now()
	d := c.finish(ctx, si)
	if sc, ok := c.e.events.(SignInCounter); ok {
		result := "success"
		if d.Reason != ReasonSignedIn {
			result = d.Reason.String()
		}
		sc.SignInFinished(c.p.Name, result, time.Since(start))
	}
	return d
}

func (c *check) finish(ctx context.Context, si SignIn) Decision {
	signed, err := si.Finish(ctx, c.r)
	if err != nil {
		var se *SignInError
		if !errors.As(err, &se) {
			se = &SignInError{Reason: ReasonProviderUnavailable, Detail: "the sign-in could not be completed"}
		}
		c.e.log.Info("sign-in refused", "policy", c.p.Name, "reason", se.Reason.String(), "err", err,
			"source", c.r.SourceAddr, "request_id", c.r.RequestID)
		return c.page(se.Reason, se.Detail)
	}
	cl := signed.Claims
	c.claims = cl
	lk, err := c.store.Load(ctx, c.p.Name, "", cl.Scope)
	if err != nil {
		c.e.log.Error("session store failure; sign-in not recorded", "policy", c.p.Name, "err", err)
		return c.page(ReasonStoreUnavailable, "")
	}
	f := Facts{Lookup: lk, Confirmed: true}
	if _, err := c.foldUserEnd(ctx, c.store, &f); err != nil {
		c.e.log.Error("session store failure; sign-in not recorded", "policy", c.p.Name, "err", err)
		return c.page(ReasonStoreUnavailable, "")
	}
	// S14: the new sign-in (auth_time, else now) must be after every end it
	// could be asked to follow: the scope's last end, and the end that made
	// this attempt ask for re-authentication. auth_time has whole seconds,
	// ends milliseconds: it counts as after only when auth_time×1000 is.
	signInAt := cl.AuthTime
	if signInAt == 0 {
		signInAt = c.nowMs
	}
	if bound := f.scopeEnd(); signed.EndedAt == 0 && bound != 0 && signInAt <= bound {
		// The attempt did not ask for credentials (the browser no longer
		// showed the ended session: its cookie expired or was dropped), and
		// the provider answered with a sign-in from before the end: ask
		// again, for credentials this time. The new attempt carries the
		// end, so a provider that ignores it meets the page below: one
		// more round trip, never a loop.
		c.endedAt = bound
		return c.startSignIn(ctx, si, sameHostURL(signed.ReturnURL, c.r), ReasonReauthRequired, true)
	}
	if bound := max(f.scopeEnd(), signed.EndedAt); bound != 0 && signInAt <= bound {
		ev := SessionEvent{At: c.now, Policy: c.p.Name, Subject: cl.Subject, Scope: cl.Scope,
			Method: MethodOIDC, Reason: ReasonReauthNotPerformed, SourceAddr: c.r.SourceAddr, RequestID: c.r.RequestID}
		if a, ok := c.e.events.(SignInAuditor); ok {
			a.SignInRefused(ev)
		}
		c.e.log.Warn("sign-in refused: the provider did not re-authenticate", "policy", c.p.Name, "subject", cl.Subject,
			"source", c.r.SourceAddr, "request_id", c.r.RequestID)
		return c.page(ReasonReauthNotPerformed, "")
	}
	o := Begin(c.p, cl, &f, c.nowMs)
	if o.Verdict != VerdictBegin {
		// S1 on first sight: the provider's session is older than the
		// policy's lifetime. Its end is recorded, and the browser asked to
		// sign in again with credentials; a provider that ignores that
		// meets S14 above on the next callback.
		if _, _, err := c.store.End(ctx, c.p.Name, "", cl.Scope, End{Cause: o.Cause, At: o.EndAt, KeepUntil: keepEnd(c.p, cl, nil, o.EndAt)}); err != nil {
			return c.page(ReasonStoreUnavailable, "")
		}
		c.endedAt = o.EndAt
		// Back to the page the user was on, not to the callback.
		return c.startSignIn(ctx, si, sameHostURL(signed.ReturnURL, c.r), o.Reason, true)
	}
	s := *o.New
	sealed, err := si.Seal(signed.Grant)
	if err != nil {
		c.e.log.Error("grant could not be sealed", "policy", c.p.Name, "err", err)
		return c.page(ReasonSignInFailed, "the sign-in could not be stored")
	}
	id, err := c.e.newID()
	if err != nil {
		return c.page(ReasonStoreUnavailable, "")
	}
	s.ID, s.SignIn, s.Method, s.Grant, s.GrantAt = id, signInAt, MethodOIDC, string(sealed), c.nowMs
	if err := c.store.Begin(ctx, &s); err != nil {
		c.e.log.Error("session store failure; sign-in not recorded", "policy", c.p.Name, "err", err)
		return c.page(ReasonStoreUnavailable, "")
	}
	c.e.events.SessionStarted(c.event(&s, CauseNone))
	to := sameHostURL(signed.ReturnURL, c.r)
	d := Decision{Reason: ReasonSignedIn, SetCookie: []string{c.sessionCookie(id)}}
	if strings.EqualFold(c.p.Cookie.SameSite, "Strict") {
		// The callback is a cross-site navigation: a redirect from it would
		// be one too, and carry no Strict cookie. A page of the site that
		// navigates on is same-site.
		d.Status, d.ContentType = 200, ContentTypeHTML
		e := html.EscapeString(to)
		d.Body = `<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">` +
			`<meta http-equiv="refresh" content="0;url=` + e + `"><title>Signed in</title></head>` +
			`<body><p><a href="` + e + `">Continue</a></p></body></html>`
		return d
	}
	d.Status, d.Location = 302, to
	return d
}

// sameHostURL returns u when it is an http(s) URL on the request's own
// host, else the host's root (S7: no open redirect, whatever a transaction
// says).
func sameHostURL(u string, r *Request) string {
	root := ReturnURL(&Request{Host: r.Host, Scheme: r.Scheme, Path: "/"})
	p, err := url.Parse(u)
	if err != nil || u == "" || (p.Scheme != "http" && p.Scheme != "https") || p.User != nil || !strings.EqualFold(p.Host, r.Host) {
		return root
	}
	return u
}

// page is a denial with a page (ErrorPage) and the reason's status.
func (c *check) page(reason Reason, detail string) Decision {
	body, ct := ErrorPage(c.r, reason, detail, "/")
	return Decision{Reason: reason, Status: reason.HTTPStatus(), Body: body, ContentType: ct}
}

// startSignIn answers a browser that needs a session (S12): a new login
// attempt at the provider, re-authenticating when a session ended (reauth;
// c.endedAt says when, or now).
func (c *check) startSignIn(ctx context.Context, si SignIn, returnURL string, reason Reason, reauth bool) Decision {
	var endedAt int64
	if reauth {
		if endedAt = c.endedAt; endedAt == 0 {
			endedAt = c.nowMs
		}
	}
	loc, cookie, err := si.Start(ctx, c.r, returnURL, endedAt)
	if err != nil {
		c.e.log.Warn("sign-in could not start", "policy", c.p.Name, "err", err)
		return c.page(ReasonProviderUnavailable, "")
	}
	d := Decision{Reason: reason, Status: 302, Location: loc}
	if cookie != "" {
		d.SetCookie = []string{cookie}
	}
	return d
}

// withSession decides a request that presents no token but a session
// cookie, on a policy with a sign-in: the session record, backed by the
// grant it holds, is the credential. Its claims are the session's own
// (identity, scope, the original sign-in, S1).
func (c *check) withSession(ctx context.Context) Decision {
	var lk Lookup
	st, degraded, ok := c.loadSession(ctx, &lk)
	if !ok {
		return Decision{Reason: ReasonStoreUnavailable, Status: 503}
	}
	s := &lk.Session
	if !lk.SessionFound || s.Method != MethodOIDC {
		return c.deny(ReasonNoToken, false)
	}
	if s.Ended() {
		c.endedAt = s.EndedAt
		return c.deny(ReasonReauthRequired, true)
	}
	c.claims = &Claims{Subject: s.Subject, Identity: s.Identity, Scope: s.Scope, AuthTime: s.SignIn, IssuedAt: s.SignIn}
	c.grantSession = true
	return c.decideOn(ctx, st, degraded, s)
}

// loadSession sets *lk to the Load of the cookie's session, from the
// engine's store, or from its fallback for a policy that fails open (S9)
// while the store is unavailable; st is the store that answered, ok false
// when none did. (Out of line: Engine.Check says why.)
func (c *check) loadSession(ctx context.Context, lk *Lookup) (st Store, degraded, ok bool) {
	st = c.e.store
	var err error
	if *lk, err = st.Load(ctx, c.p.Name, c.cookie, Digest{}); err == nil {
		return st, false, true
	}
	c.e.log.Error("session store failure", "policy", c.p.Name, "err", err)
	fb, isFallback := c.e.store.(FallbackStore)
	if !isFallback || !c.p.StoreFailOpen || !errors.Is(err, ErrStoreUnavailable) {
		return nil, false, false
	}
	// Opt-in fail-open (S9): the session as this replica knows it.
	st = fb.Fallback()
	if *lk, err = st.Load(ctx, c.p.Name, c.cookie, Digest{}); err != nil {
		return nil, false, false
	}
	return st, true, true
}

// withGrant completes an allowed request of a sign-in session: the access
// token (refreshed first when it is about to expire, S16) and the grant's
// identity headers go upstream, the gate's own cookies do not (S15).
func (c *check) withGrant(ctx context.Context, s *Session, d *Decision) Decision {
	si := c.p.Login.SignIn
	og, err := c.e.grants.open(si, c.p, s)
	if err != nil {
		c.e.log.Warn("session grant could not be opened; signing in again", "policy", c.p.Name, "err", err)
		return c.deny(ReasonNoToken, false)
	}
	if og.g.AccessExpiry != 0 {
		lead := min(refreshLead.Milliseconds(), max(og.g.AccessExpiry-s.GrantAt, 0)/4)
		if c.nowMs >= og.g.AccessExpiry-lead {
			var deny *Decision
			if og, deny = c.refresh(ctx, si, s, og); deny != nil {
				return *deny
			}
		}
	}
	d.Upstream = og.upstream
	d.StripCookies, d.UpstreamCookie = true, stripGateCookies(c.r.header("cookie"), c.p.Cookie.Name)
	return *d
}

// refresh redeems the grant's refresh token once per session (S16): one
// flight per session in this process, and a one-time claim in the store
// as the lease across replicas. The refreshed grant replaces the stored
// one; the session's sign-in stays what it was (S1).
func (c *check) refresh(ctx context.Context, si SignIn, s *Session, og *openGrant) (*openGrant, *Decision) {
	valid := c.nowMs < og.g.AccessExpiry
	if og.g.RefreshToken == "" {
		if valid {
			return og, nil
		}
		d := c.deny(ReasonTokenExpired, false)
		return nil, &d
	}
	r := c.e.flights.do(c.p.Name+"\x00"+s.ID, func() refreshResult { return c.redeem(ctx, si, s, og) })
	switch {
	case r.og != nil:
		return r.og, nil
	case r.revoked:
		// The provider refused the refresh token (revoked, user disabled):
		// the session ends (S16).
		if err := c.record(ctx, s, CauseIdPRevoked, c.nowMs); err != nil {
			d := c.storeFailure(ctx, err)
			return nil, &d
		}
		c.endedAt = c.nowMs
		d := c.deny(CauseIdPRevoked.Reason(), true)
		return nil, &d
	case r.ended:
		d := c.deny(ReasonReauthRequired, true)
		return nil, &d
	case valid:
		// The provider could not be asked: the session goes on while its
		// access token is valid.
		return og, nil
	}
	d := c.page(ReasonProviderUnavailable, "")
	return nil, &d
}

type refreshResult struct {
	og      *openGrant // the refreshed (or another replica's) grant
	revoked bool       // the provider refused the refresh token
	ended   bool       // the session ended meanwhile
}

// redeem runs one refresh for this process: the lease, the provider, the
// store. Its context outlives the request that happened to start it: the
// requests waiting for its result must not fail because that one left.
func (c *check) redeem(ctx context.Context, si SignIn, s *Session, og *openGrant) (r refreshResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	result := "failure"
	defer func() {
		if sc, ok := c.e.events.(SignInCounter); ok && result != "" {
			sc.Refreshed(c.p.Name, result)
		}
	}()
	lease := ClaimKey("refresh", c.p.Name+"/"+s.ID+"/"+time.UnixMilli(s.GrantAt).UTC().Format(time.RFC3339Nano))
	first, err := c.e.store.Claim(ctx, lease, c.nowMs+refreshLease.Milliseconds())
	if err != nil {
		c.e.log.Warn("refresh lease not taken", "policy", c.p.Name, "err", err)
		return r
	}
	if !first {
		// Another replica refreshes this grant, or did: take its result
		// from the store of record once it is there.
		result = "" // not this replica's refresh
		var st Store = c.e.store
		if fs, ok := st.(FallbackStore); ok {
			st = fs.Confirmed()
		}
		lk, err := st.Load(ctx, c.p.Name, s.ID, Digest{})
		switch {
		case err != nil:
		case !lk.SessionFound || lk.Session.Ended():
			r.ended = true
		case lk.Session.GrantAt > s.GrantAt:
			if ng, err := c.e.grants.open(si, c.p, &lk.Session); err == nil {
				r.og = ng
			}
		}
		return r
	}
	g, err := si.Refresh(ctx, og.g)
	if errors.Is(err, ErrGrantRevoked) {
		result, r.revoked = "revoked", true
		return r
	}
	if err != nil {
		c.e.log.Warn("refresh failed", "policy", c.p.Name, "err", err)
		return r
	}
	sealed, err := si.Seal(g)
	if err != nil {
		c.e.log.Error("refreshed grant could not be sealed", "policy", c.p.Name, "err", err)
		return r
	}
	at := max(c.nowMs, s.GrantAt+1)
	ns, found, err := c.e.store.Touch(ctx, c.p.Name, s.ID, Touch{Grant: string(sealed), GrantAt: at})
	switch {
	case err != nil:
		c.e.log.Error("refreshed grant not stored", "policy", c.p.Name, "err", err)
		return r
	case !found || ns.Ended():
		r.ended = true
		return r
	}
	result = "success"
	r.og = c.e.grants.put(c.p, &ns, g)
	return r
}

// flights runs one refresh per key at a time; callers arriving meanwhile
// wait for its result.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	r    refreshResult
}

func (f *flights) do(key string, fn func() refreshResult) refreshResult {
	f.mu.Lock()
	if fl, ok := f.m[key]; ok {
		f.mu.Unlock()
		<-fl.done
		return fl.r
	}
	if f.m == nil {
		f.m = map[string]*flight{}
	}
	fl := &flight{done: make(chan struct{})}
	f.m[key] = fl
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(fl.done)
	}()
	fl.r = fn()
	return fl.r
}

// openGrant is an opened grant and the upstream headers it makes.
type openGrant struct {
	g        *Grant
	upstream []Header // shared by every decision that uses it: never modified
}

// grants caches opened grants by policy, session and grant version, so
// that a live session's requests do not decrypt its grant each time.
type grants struct {
	mu sync.Mutex
	m  map[grantKey]*openGrant
}

type grantKey struct {
	p  *Policy
	id string
	at int64
}

func (gs *grants) open(si SignIn, p *Policy, s *Session) (*openGrant, error) {
	k := grantKey{p, s.ID, s.GrantAt}
	gs.mu.Lock()
	og, ok := gs.m[k]
	gs.mu.Unlock()
	if ok {
		return og, nil
	}
	g, err := si.Open([]byte(s.Grant))
	if err != nil {
		return nil, err
	}
	return gs.put(p, s, g), nil
}

func (gs *grants) put(p *Policy, s *Session, g *Grant) *openGrant {
	og := &openGrant{g: g, upstream: upstreamHeaders(p, g)}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil || len(gs.m) >= maxOpenGrants {
		gs.m = make(map[grantKey]*openGrant) // forget them all: they reopen
	}
	gs.m[grantKey{p, s.ID, s.GrantAt}] = og
	return og
}

// upstreamHeaders are the headers an allowed request of a sign-in session
// carries to the application: the access token per Upstream.AccessToken,
// then the grant's identity headers, and every other identity header of the
// policy empty, so that adapters remove a client-sent copy of it (S10): the
// provider may not have sent the claim, or its value was dropped because no
// header can carry it.
func upstreamHeaders(p *Policy, g *Grant) []Header {
	h := make([]Header, 0, 1+len(g.Headers)+len(p.Upstream.IdentityHeaders))
	switch name := p.Upstream.AccessToken; {
	case name == "" || g.AccessToken == "":
	case name == "authorization":
		h = append(h, Header{Name: name, Value: "Bearer " + g.AccessToken})
	default:
		h = append(h, Header{Name: name, Value: g.AccessToken})
	}
	h = append(h, g.Headers...)
	for _, name := range p.Upstream.IdentityHeaders {
		if !slices.ContainsFunc(h, func(x Header) bool { return x.Name == name }) {
			h = append(h, Header{Name: name})
		}
	}
	return h
}

// stripGateCookies returns the Cookie header without the gate's own
// cookies: the session cookie and the login transactions' (S15).
func stripGateCookies(header, session string) string {
	if header == "" {
		return ""
	}
	if !strings.Contains(header, session) && !strings.Contains(header, LoginCookiePrefix) {
		return header
	}
	var b strings.Builder
	b.Grow(len(header))
	for part := range strings.SplitSeq(header, ";") {
		name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
		if name == session || strings.HasPrefix(name, LoginCookiePrefix) || strings.TrimSpace(part) == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(strings.TrimSpace(part))
	}
	return b.String()
}
