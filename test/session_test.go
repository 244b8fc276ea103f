package test

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// unixWindow returns the Unix seconds a server-side millisecond timestamp
// taken between before and after can truncate to, shifted by d.
func unixWindow(before, after time.Time, d time.Duration) (int64, int64) {
	return before.Add(d).UnixMilli() / 1000, after.Add(d).UnixMilli() / 1000
}

func wantBetween(t *testing.T, what string, got, lo, hi int64) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s = %d, want in [%d, %d]", what, got, lo, hi)
	}
}

// TestAllowedRequest: a valid token opens a session with the documented
// cookie and upstream headers; the cookie then continues it.
func TestAllowedRequest(t *testing.T) {
	t.Parallel()
	const abs, idle = time.Hour, 30 * time.Minute
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: idle}.yaml()})
	at := time.Now().Unix() - 5 // signed in a little earlier
	tok := s.token(t, "alice", authTime(at))
	c := s.client(t)

	before := time.Now()
	r := c.Check("app.test", "/dashboard?tab=1", tok, true, "x-sessiongate-user: admin")
	after := time.Now()
	wantAllowed(t, r)
	if got := r.Upstream[userHeader]; got != "alice" {
		t.Errorf("%s = %q, want alice", userHeader, got)
	}
	if a := r.UpstreamActions[userHeader]; a != overwriteOrAdd {
		t.Errorf("%s append_action = %v, want %v", userHeader, a, overwriteOrAdd)
	}
	if got, want := unixHeader(t, r, expiresHeader), at+int64(abs/time.Second); got != want {
		t.Errorf("%s = %d, want auth_time + absolute_timeout = %d", expiresHeader, got, want)
	}
	lo, hi := unixWindow(before, after, idle)
	wantBetween(t, idleHeader, unixHeader(t, r, idleHeader), lo, hi)
	if len(r.Upstream) != 3 {
		t.Errorf("upstream headers = %v, want exactly user and the two deadlines", r.Upstream)
	}
	for _, h := range []string{expiresInHdr, reasonHeader} {
		if !slices.Contains(r.Remove, h) {
			t.Errorf("headers_to_remove %v lacks %s (S10)", r.Remove, h)
		}
	}
	if _, ok := r.Client[expiresInHdr]; ok {
		t.Errorf("no warn_before configured, yet %s sent to the client", expiresInHdr)
	}
	cookie := wantNewSessionCookie(t, r, abs)
	if v, _ := c.cookie("app.test", cookieName); v != cookie {
		t.Fatalf("jar holds %q, want %q", v, cookie)
	}

	// The cookie continues the session: no new cookie, same deadlines.
	r2 := c.Check("app.test", "/next", tok, false)
	wantAllowed(t, r2)
	wantNoSetCookie(t, r2)
	if got, want := unixHeader(t, r2, expiresHeader), at+int64(abs/time.Second); got != want {
		t.Errorf("second request %s = %d, want %d", expiresHeader, got, want)
	}
	// Host matching folds case and strips the port (S8).
	r3 := c.Check("APP.Test:443", "/", tok, false)
	wantAllowed(t, r3)
	wantNoSetCookie(t, r3)

	m := s.metrics(t)
	wantMetric(t, m, "sessiongate_checks_total", map[string]string{"policy": "app", "decision": "allow", "reason": ""}, 3)
	wantMetric(t, m, "sessiongate_sessions_active", map[string]string{"policy": "app"}, 1)
	evs := s.waitEvents(t, 1, map[string]string{"event": "session_started", "policy": "app", "subject": "alice"})
	if len(evs) != 1 {
		t.Fatalf("want one session_started audit event for alice, got %d:\n%s", len(evs), s.stdout.String())
	}
	if sid, _ := evs[0]["session"].(string); sid == "" || sid == cookie {
		t.Errorf("audit session field %q: want a non-empty hash, never the cookie", sid)
	}
}

// TestNoToken: a request without a token is denied — a redirect without
// re-authentication parameters for a browser, a bare Bearer challenge for API
// clients — and a session cookie alone is never a credential.
func TestNoToken(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	c := s.client(t)
	wantLoginRedirect(t, c.Check("app.test", "/reports/q3?year=2024", "", true), "no_token", "https://app.test/reports/q3?year=2024", false)
	wantAPIDenied(t, c.Check("app.test", "/api/items", "", false), "no_token", false)
	wantAPIDenied(t, c.Check("app.test", "/api/items", "", false, "authorization: Basic YWxpY2U6c2VjcmV0"), "no_token", false)
	wantAPIDenied(t, c.Check("app.test", "/api/items", "", false, "authorization: Bearer"), "no_token", false)

	// Open a session, then present only the cookie.
	tok := s.token(t, "alice")
	wantAllowed(t, c.Check("app.test", "/", tok, true))
	if _, ok := c.cookie("app.test", cookieName); !ok {
		t.Fatal("no session cookie after sign-in")
	}
	wantLoginRedirect(t, c.Check("app.test", "/", "", true), "no_token", "https://app.test/", false)
	wantAPIDenied(t, c.Check("app.test", "/", "", false), "no_token", false)
}

// TestIdleTimeout (S2, S3, S7): after idle_timeout without activity the next
// request is denied with idle_timeout — a login redirect with re-auth
// parameters and the request's own URL for browsers, a 401 step-up challenge
// for API clients — and later requests get reauth_required.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: 20 * time.Second, Idle: idle}.yaml()})
	alice := s.client(t)  // a browser with a cookie jar
	bob := s.apiClient(t) // never sends cookies
	aliceTok, bobTok := s.token(t, "alice"), s.token(t, "bob")

	r := alice.Check("app.test", "/", aliceTok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, 20*time.Second)
	wantAllowed(t, bob.Check("app.test", "/api/x", bobTok, false))
	wantAllowed(t, bob.Check("app.test", "/api/x", bobTok, false))

	time.Sleep(idle + 500*time.Millisecond)

	r = alice.Check("app.test", "/reports?q=1&lang=en", aliceTok, true)
	wantLoginRedirect(t, r, "idle_timeout", "https://app.test/reports?q=1&lang=en", true)
	wantCookieCleared(t, r)
	if _, ok := alice.cookie("app.test", cookieName); ok {
		t.Error("browser still holds the session cookie after the idle denial")
	}
	wantAPIDenied(t, bob.Check("app.test", "/api/x", bobTok, false), "idle_timeout", true)

	// Ended stays ended: with the same token, with or without the cookie.
	wantLoginRedirect(t, alice.Check("app.test", "/", aliceTok, true), "reauth_required", "https://app.test/", true)
	wantLoginRedirect(t, alice.Check("app.test", "/", aliceTok, true, "cookie: "+cookieName+"="+cookie), "reauth_required", "https://app.test/", true)
	wantAPIDenied(t, bob.Check("app.test", "/api/x", bobTok, false), "reauth_required", true)
	// A silently refreshed token (same auth_time) is no new sign-in either.
	refreshed := s.token(t, "alice", authTime(mustClaimInt(t, aliceTok, "auth_time")))
	wantLoginRedirect(t, alice.Check("app.test", "/", refreshed, true), "reauth_required", "https://app.test/", true)

	// A new sign-in after the idle end opens a new session.
	nextSecond()
	r = alice.Check("app.test", "/", s.token(t, "alice"), true)
	wantAllowed(t, r)
	if nc := wantNewSessionCookie(t, r, 20*time.Second); nc == cookie {
		t.Error("the new session reuses the idled-out session's cookie value")
	}
	wantAllowed(t, bob.Check("app.test", "/api/x", s.token(t, "bob"), false))

	for _, sub := range []string{"alice", "bob"} {
		if n := len(s.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "idle", "subject": sub})); n != 1 {
			t.Errorf("want one session_ended cause=idle audit event for %s, got %d", sub, n)
		}
	}
	wantMetric(t, s.metrics(t), "sessiongate_sessions_ended_total", map[string]string{"policy": "app", "cause": "idle"}, 2)
}

// TestAbsoluteTimeout (S1): a session ends absolute_timeout after sign-in even
// with constant activity, for a browser (sign-in = auth_time) and for an API
// client whose token has no auth_time (sign-in = session start).
func TestAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	const abs, idle = 3 * time.Second, 2 * time.Second
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: idle}.yaml()})
	at := time.Now().Unix()
	aliceTok := s.token(t, "alice", authTime(at))
	bobTok := s.token(t, "bob", claim("auth_time", nil))
	alice, bob := s.client(t), s.client(t)

	aliceDeadline := time.UnixMilli(at*1000 + abs.Milliseconds())
	before := time.Now()
	r := bob.Check("app.test", "/", bobTok, false)
	after := time.Now()
	wantAllowed(t, r)
	lo, hi := unixWindow(before, after, abs)
	wantBetween(t, "bob "+expiresHeader, unixHeader(t, r, expiresHeader), lo, hi)
	bobDeadlineLo, bobDeadlineHi := before.Add(abs), after.Add(abs)

	type party struct {
		name           string
		c              *client
		tok            string
		browser        bool
		deadLo, deadHi time.Time
		allows         int
		sawAbsolute    bool
	}
	parties := []*party{
		{name: "alice", c: alice, tok: aliceTok, browser: true, deadLo: aliceDeadline, deadHi: aliceDeadline},
		{name: "bob", c: bob, tok: bobTok, deadLo: bobDeadlineLo, deadHi: bobDeadlineHi},
	}
	const margin = 80 * time.Millisecond
	end := bobDeadlineHi.Add(700 * time.Millisecond)
	if e := aliceDeadline.Add(700 * time.Millisecond); e.After(end) {
		end = e
	}
	for time.Now().Before(end) {
		for _, p := range parties {
			sent := time.Now()
			r := p.c.Check("app.test", "/work", p.tok, p.browser)
			got := time.Now()
			switch {
			case got.Before(p.deadLo.Add(-margin)):
				if !r.Allowed {
					t.Fatalf("%s denied %.2fs before the absolute deadline: %v", p.name, p.deadLo.Sub(got).Seconds(), r)
				}
				p.allows++
				if p.name == "alice" {
					if got, want := unixHeader(t, r, expiresHeader), at+int64(abs/time.Second); got != want {
						t.Errorf("alice %s = %d, want %d", expiresHeader, got, want)
					}
				}
			case sent.After(p.deadHi.Add(margin)):
				if r.Allowed {
					t.Fatalf("%s allowed %.2fs after the absolute deadline: %v", p.name, sent.Sub(p.deadHi).Seconds(), r)
				}
				if !p.sawAbsolute {
					p.sawAbsolute = true
					if p.browser {
						wantLoginRedirect(t, r, "absolute_timeout", "https://app.test/work", true)
					} else {
						wantAPIDenied(t, r, "absolute_timeout", true)
					}
				} else if r.Reason != "reauth_required" {
					t.Errorf("%s after the absolute end: reason %q, want reauth_required", p.name, r.Reason)
				}
			default:
				// Within the margin around the deadline: either answer is fine,
				// but a denial must be the absolute one.
				if !r.Allowed {
					if r.Reason != "absolute_timeout" && r.Reason != "reauth_required" {
						t.Errorf("%s at the deadline: reason %q", p.name, r.Reason)
					}
					if r.Reason == "absolute_timeout" {
						p.sawAbsolute = true
					}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range parties {
		if p.allows < 4 || !p.sawAbsolute {
			t.Errorf("%s: %d allows, absolute_timeout seen %v", p.name, p.allows, p.sawAbsolute)
		}
		// Ended stays ended, whatever the loop's timing let it see.
		r := p.c.Check("app.test", "/work", p.tok, p.browser)
		if p.browser {
			wantLoginRedirect(t, r, "reauth_required", "https://app.test/work", true)
		} else {
			wantAPIDenied(t, r, "reauth_required", true)
		}
	}
	if n := len(s.waitEvents(t, 2, map[string]string{"event": "session_ended", "cause": "absolute"})); n != 2 {
		t.Errorf("want 2 session_ended cause=absolute audit events, got %d", n)
	}
}

// TestSlidingActivity (S2): requests every idle/2 keep a session alive well
// past 3× idle_timeout, with the idle deadline moving forward; then silence
// ends it.
func TestSlidingActivity(t *testing.T) {
	t.Parallel()
	const idle = 1500 * time.Millisecond
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: 30 * time.Second, Idle: idle}.yaml()})
	tok := s.token(t, "alice")
	c := s.client(t)
	start := time.Now()
	var first, last int64
	var prevSent time.Time
	n := 0
	for time.Since(start) < 3*idle+300*time.Millisecond {
		sent := time.Now()
		r := c.Check("app.test", "/edit", tok, true)
		got := time.Now()
		if !r.Allowed {
			if n > 0 && got.Sub(prevSent) > idle-50*time.Millisecond {
				t.Skipf("host too slow to test: %v between two requests, idle_timeout %v", got.Sub(prevSent), idle)
			}
			t.Fatalf("request %d at %.1fs denied: %v", n, time.Since(start).Seconds(), r)
		}
		v := unixHeader(t, r, idleHeader)
		if n == 0 {
			first = v
		} else if v < last {
			t.Errorf("idle deadline went back from %d to %d", last, v)
		}
		last, prevSent = v, sent
		n++
		sleepUntil(sent.Add(idle / 2))
	}
	if last-first < 3 {
		t.Errorf("idle deadline moved from %d to %d over %d requests, want +3s at least", first, last, n)
	}
	time.Sleep(idle + 500*time.Millisecond)
	wantLoginRedirect(t, c.Check("app.test", "/edit", tok, true), "idle_timeout", "https://app.test/edit", true)
}

// TestPassivePaths: passive paths are allowed but do not extend the idle
// deadline, so a page that only polls times out; a path that merely starts
// like a passive one is activity.
func TestPassivePaths(t *testing.T) {
	t.Parallel()
	const idle = 2 * time.Second
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: 30 * time.Second, Idle: idle,
		Passive: []string{"/api/poll"}}.yaml()})
	tok := s.token(t, "alice")
	c := s.client(t)
	start := time.Now()
	r := c.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	idle0 := unixHeader(t, r, idleHeader)
	for i, p := range []string{"/api/poll", "/api/poll/notifications", "/api/poll?since=42"} {
		sleepUntil(start.Add(time.Duration(i+1) * 300 * time.Millisecond))
		r := c.Check("app.test", p, tok, false)
		wantAllowed(t, r)
		if got := unixHeader(t, r, idleHeader); got != idle0 {
			t.Errorf("passive %s moved the idle deadline from %d to %d", p, idle0, got)
		}
	}
	// Only polls since the first request: idle_timeout after idle_timeout.
	sleepUntil(start.Add(idle + 600*time.Millisecond))
	wantAPIDenied(t, c.Check("app.test", "/api/poll", tok, false), "idle_timeout", true)

	// Segment boundary: /api/polling is not under /api/poll, so it counts as
	// activity and keeps the session alive past idle_timeout.
	bob := s.client(t)
	bobTok := s.token(t, "bob")
	start = time.Now()
	wantAllowed(t, bob.Check("app.test", "/", bobTok, false))
	for i := 1; i <= 5; i++ {
		sleepUntil(start.Add(time.Duration(i) * 600 * time.Millisecond))
		if r := bob.Check("app.test", "/api/polling", bobTok, false); !r.Allowed {
			t.Fatalf("/api/polling at %.1fs: %v (it is not a passive path, so it is activity)", time.Since(start).Seconds(), r)
		}
	}
}

// TestSignOut (S3, S6): the logout path ends the session, clears the cookie
// and redirects to the post-logout URL; nothing but a new sign-in revives it.
func TestSignOut(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app":   pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml(),
		"other": pol{Hosts: []string{"other.test"}}.yaml(),
	})
	c := s.client(t)
	at := time.Now().Unix()
	tok := s.token(t, "alice", authTime(at))
	r := c.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)
	wantAllowed(t, c.Check("other.test", "/", tok, true))

	r = c.Check("app.test", "/logout", tok, true)
	wantDenied(t, r, 302, "signed_out")
	if r.Location != signedOutURL {
		t.Errorf("logout location = %q, want %q", r.Location, signedOutURL)
	}
	wantCookieCleared(t, r)
	if _, ok := c.cookie("app.test", cookieName); ok {
		t.Fatal("cookie not removed from the jar by the logout response")
	}

	// Replays: the old cookie, the token alone, a silently refreshed token.
	wantLoginRedirect(t, c.Check("app.test", "/", tok, true, "cookie: "+cookieName+"="+cookie), "reauth_required", "https://app.test/", true)
	wantLoginRedirect(t, c.Check("app.test", "/", tok, true), "reauth_required", "https://app.test/", true)
	wantAPIDenied(t, c.Check("app.test", "/api", tok, false), "reauth_required", true)
	refreshed := s.token(t, "alice", authTime(at), claim("iat", time.Now().Unix()), claim("exp", time.Now().Unix()+1200))
	wantLoginRedirect(t, c.Check("app.test", "/", refreshed, true), "reauth_required", "https://app.test/", true)
	// The logout path with only the old cookie still answers the same way.
	r = c.Check("app.test", "/logout", "", true, "cookie: "+cookieName+"="+cookie)
	wantDenied(t, r, 302, "signed_out")

	// Sign-out is per policy: the session on other.test lives on.
	wantAllowed(t, c.Check("other.test", "/", tok, true))

	// A fresh sign-in, after the logout, opens a new session.
	nextSecond()
	fresh := s.token(t, "alice")
	r = c.Check("app.test", "/", fresh, true)
	wantAllowed(t, r)
	if nc := wantNewSessionCookie(t, r, time.Hour); nc == cookie {
		t.Error("fresh sign-in reuses the ended session's cookie value")
	}
	wantAllowed(t, c.Check("app.test", "/", fresh, true))

	if n := len(s.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "signed_out", "subject": "alice", "policy": "app"})); n < 1 {
		t.Errorf("no session_ended cause=signed_out audit event:\n%s", s.stdout.String())
	}
}

// TestIdentityMismatch (S4): a session presented with another user's token
// is denied and ended, and a security event is logged.
func TestIdentityMismatch(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	aliceTok, bobTok := s.token(t, "alice"), s.token(t, "bob")
	alice := s.client(t)
	r := alice.Check("app.test", "/", aliceTok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)

	// Bob's token with alice's cookie (credential sharing).
	r = alice.Check("app.test", "/inbox", bobTok, false)
	wantAPIDenied(t, r, "identity_mismatch", true)
	wantCookieCleared(t, r)

	// Alice's own token with her (ended) cookie is now refused.
	wantLoginRedirect(t, alice.Check("app.test", "/", aliceTok, true, "cookie: "+cookieName+"="+cookie), "reauth_required", "https://app.test/", true)
	wantAPIDenied(t, alice.Check("app.test", "/", aliceTok, false), "reauth_required", true)

	// The same as a browser: the redirect carries the re-auth parameters.
	carol, dave := s.client(t), s.client(t)
	carolTok, daveTok := s.token(t, "carol"), s.token(t, "dave")
	wantAllowed(t, carol.Check("app.test", "/", carolTok, true))
	carolCookie, _ := carol.cookie("app.test", cookieName)
	wantLoginRedirect(t, dave.Check("app.test", "/x", daveTok, true, "cookie: "+cookieName+"="+carolCookie), "identity_mismatch", "https://app.test/x", true)

	evs := s.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "identity_mismatch", "subject": "alice"})
	if len(evs) != 1 {
		t.Fatalf("want one identity_mismatch audit event for alice, got %d:\n%s", len(evs), s.stdout.String())
	}
	if evs[0]["level"] != "WARN" || evs[0]["presented_subject"] != "bob" {
		t.Errorf("identity_mismatch audit event = %v, want level WARN and presented_subject bob", evs[0])
	}
	if !s.waitLog("another identity") {
		t.Errorf("no security warning in the log:\n%s", s.stderr.String())
	}
	wantMetric(t, s.metrics(t), "sessiongate_sessions_ended_total", map[string]string{"policy": "app", "cause": "identity_mismatch"}, 2)
}

// TestRefreshedTokens: tokens refreshed silently within a live session (new
// iat/exp, same auth_time) are accepted and keep the absolute deadline; a
// newer auth_time (the user signed in again) restarts it.
func TestRefreshedTokens(t *testing.T) {
	t.Parallel()
	const abs = time.Minute
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: 30 * time.Second}.yaml()})
	at := time.Now().Unix() - 2
	c := s.client(t)
	r := c.Check("app.test", "/", s.token(t, "alice", authTime(at)), true)
	wantAllowed(t, r)
	wantNewSessionCookie(t, r, abs)

	nextSecond()
	now := time.Now().Unix()
	refreshed := s.token(t, "alice", authTime(at), claim("iat", now), claim("nbf", now), claim("exp", now+300))
	r = c.Check("app.test", "/", refreshed, true)
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
	if got, want := unixHeader(t, r, expiresHeader), at+int64(abs/time.Second); got != want {
		t.Errorf("after refresh %s = %d, want unchanged %d", expiresHeader, got, want)
	}

	// A newer sign-in within the session moves the absolute deadline.
	at2 := time.Now().Unix()
	r = c.Check("app.test", "/", s.token(t, "alice", authTime(at2)), true)
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
	if got, want := unixHeader(t, r, expiresHeader), at2+int64(abs/time.Second); got != want {
		t.Errorf("after re-sign-in %s = %d, want %d", expiresHeader, got, want)
	}
	if n := len(s.waitEvents(t, 1, map[string]string{"event": "session_reauthenticated", "subject": "alice"})); n != 1 {
		t.Errorf("want one session_reauthenticated audit event, got %d", n)
	}
}

// TestWarningWindow (S11): inside warn_before the client is told the seconds
// left; outside it, not.
func TestWarningWindow(t *testing.T) {
	t.Parallel()
	const abs = 5 * time.Second
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: 4 * time.Second,
		WarnBefore: 2 * time.Second}.yaml()})
	c := s.client(t)
	at := time.Now().Unix()
	tok := s.token(t, "alice", authTime(at))
	// Absolute deadline at+5s; the idle one (4s) keeps moving ahead of the
	// 2s window. Outside the window no warning; inside, the seconds left.
	deadline := time.UnixMilli(at*1000 + abs.Milliseconds())
	for time.Until(deadline) > 2300*time.Millisecond {
		r := c.Check("app.test", "/", tok, true)
		wantAllowed(t, r)
		if v, ok := r.Client[expiresInHdr]; ok {
			t.Errorf("%.1fs before the deadline, outside the warning window, the client got %s: %s", time.Until(deadline).Seconds(), expiresInHdr, v)
		}
		time.Sleep(400 * time.Millisecond)
	}
	sleepUntil(deadline.Add(-1500 * time.Millisecond))
	r := c.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	v, ok := r.Client[expiresInHdr]
	if !ok {
		t.Fatalf("inside the warning window, no %s: %v", expiresInHdr, r)
	}
	left, err := strconv.ParseInt(v, 10, 64)
	if err != nil || left < 1 || left > 2 {
		t.Errorf("%s = %q 1.5s before the deadline, want the whole seconds left (1)", expiresInHdr, v)
	}
	if a := r.ClientActions[expiresInHdr]; a != overwriteOrAdd {
		t.Errorf("%s append_action = %v, want %v", expiresInHdr, a, overwriteOrAdd)
	}
}

// TestSignOutScope (S3): sign-out ends the IdP session named by the token's
// sid — other sids of the same user live on — and, for tokens without sid,
// every session of the user under the policy.
func TestSignOutScope(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()})

	// With sid: laptop (sid A) signs out, phone (sid B) stays signed in.
	laptop, phone := s.client(t), s.client(t)
	laptopTok := s.token(t, "alice", claim("sid", "sid-A"))
	phoneTok := s.token(t, "alice", claim("sid", "sid-B"))
	wantAllowed(t, laptop.Check("app.test", "/", laptopTok, true))
	wantAllowed(t, phone.Check("app.test", "/", phoneTok, true))
	wantDenied(t, laptop.Check("app.test", "/logout", laptopTok, true), 302, "signed_out")
	wantLoginRedirect(t, laptop.Check("app.test", "/", laptopTok, true), "reauth_required", "https://app.test/", true)
	wantAllowed(t, phone.Check("app.test", "/", phoneTok, true))

	// Without sid: the scope is the user; signing out on one browser ends
	// the other browser's session too.
	b1, b2 := s.client(t), s.client(t)
	bobTok1, bobTok2 := s.token(t, "bob"), s.token(t, "bob")
	wantAllowed(t, b1.Check("app.test", "/", bobTok1, true))
	wantAllowed(t, b2.Check("app.test", "/", bobTok2, true))
	wantDenied(t, b1.Check("app.test", "/logout", bobTok1, true), 302, "signed_out")
	wantLoginRedirect(t, b2.Check("app.test", "/", bobTok2, true), "reauth_required", "https://app.test/", true)
}

// TestSignOutWithoutValidToken (S6): the logout path ends the session its
// cookie names even when the token is missing, invalid or expired.
func TestSignOutWithoutValidToken(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()})
	now := time.Now().Unix()
	for i, badTok := range []string{"", "garbage", s.token(t, "x", claim("exp", now-3600), claim("iat", now-7200))} {
		c := s.client(t)
		sub := "user-" + strconv.Itoa(i)
		tok := s.token(t, sub)
		wantAllowed(t, c.Check("app.test", "/", tok, true))
		cookie, _ := c.cookie("app.test", cookieName)
		r := c.Check("app.test", "/logout?next=/", badTok, true)
		wantDenied(t, r, 302, "signed_out")
		if r.Location != signedOutURL {
			t.Errorf("logout location %q, want %q", r.Location, signedOutURL)
		}
		wantCookieCleared(t, r)
		wantLoginRedirect(t, c.Check("app.test", "/", tok, true, "cookie: "+cookieName+"="+cookie), "reauth_required", "https://app.test/", true)
		wantLoginRedirect(t, c.Check("app.test", "/", tok, true), "reauth_required", "https://app.test/", true)
	}
}

// TestStaleSignIn (S1): a token whose auth_time is already older than the
// absolute lifetime opens no session, and its silent refreshes stay refused.
func TestStaleSignIn(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: time.Hour}.yaml()})
	old := time.Now().Unix() - 7200
	c := s.client(t)
	r := c.Check("app.test", "/start", s.token(t, "alice", authTime(old)), true)
	wantLoginRedirect(t, r, "absolute_timeout", "https://app.test/start", true)
	wantNoSetCookie(t, r)
	wantAPIDenied(t, c.Check("app.test", "/", s.token(t, "alice", authTime(old)), false), "reauth_required", true)
	// A real new sign-in works.
	nextSecond()
	wantAllowed(t, c.Check("app.test", "/", s.token(t, "alice"), true))
}

// TestSubSecondDurations: sub-second timeouts work, and the cookie of a
// 2.5s session gets Max-Age=3 (rounded up, never down towards 0 = delete).
func TestSubSecondDurations(t *testing.T) {
	t.Parallel()
	const abs, idle = 2500 * time.Millisecond, 800 * time.Millisecond
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: idle}.yaml()})
	c := s.client(t)
	tok := s.token(t, "alice", claim("auth_time", nil))
	r := c.Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	wantNewSessionCookie(t, r, abs) // Max-Age=3, rounded up
	time.Sleep(300 * time.Millisecond)
	wantAllowed(t, c.Check("app.test", "/", tok, true))
	time.Sleep(idle + 250*time.Millisecond)
	wantLoginRedirect(t, c.Check("app.test", "/", tok, true), "idle_timeout", "https://app.test/", true)
}

// TestForgedCookiesDoNotDodgeLimits (S1, S2): a client that sends a made-up
// session cookie with every request continues its sign-in's session rather
// than opening a fresh one each time, so the limits still apply.
func TestForgedCookiesDoNotDodgeLimits(t *testing.T) {
	t.Parallel()
	const abs = 2 * time.Second
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs, Idle: 1500 * time.Millisecond}.yaml()})
	c := s.apiClient(t)
	tok := s.token(t, "alice", claim("auth_time", nil))
	r := c.Check("app.test", "/", tok, false)
	wantAllowed(t, r)
	exp := unixHeader(t, r, expiresHeader)
	start := time.Now()
	for time.Since(start) < abs+700*time.Millisecond {
		forged := strings.Repeat("A", 8) + randHex(12) // 32 base64url chars, like a real id
		r := c.Check("app.test", "/", tok, false, "cookie: "+cookieName+"="+forged)
		if time.Since(start) < abs-300*time.Millisecond {
			wantAllowed(t, r)
			if got := unixHeader(t, r, expiresHeader); got != exp {
				t.Fatalf("a forged cookie opened a new session: %s %d, want %d", expiresHeader, got, exp)
			}
		} else if time.Since(start) > abs+300*time.Millisecond && r.Allowed {
			t.Fatalf("allowed %.1fs after the session's absolute deadline with a forged cookie", (time.Since(start) - abs).Seconds())
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// TestSignOutUnderConcurrency (S3): while one browser's tabs keep sending
// requests, no request sent after the sign-out answer is allowed.
func TestSignOutUnderConcurrency(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()})
	tok := s.token(t, "alice")
	c := s.client(t)
	wantAllowed(t, c.Check("app.test", "/", tok, true))
	cookie, _ := c.cookie("app.test", cookieName)

	var (
		mu        sync.Mutex
		loggedOut time.Time // zero until the sign-out answer arrived
		late      []string
		wg        sync.WaitGroup
		stop      = make(chan struct{})
		allowed   atomic.Int64
	)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tab := s.apiClient(t) // tabs share the cookie; the jar is not updated
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				r, err := tab.try("app.test", "/tab", tok, true, "cookie: "+cookieName+"="+cookie)
				mu.Lock()
				lo := loggedOut
				mu.Unlock()
				switch {
				case err != nil:
					mu.Lock()
					late = append(late, "gRPC error: "+err.Error())
					mu.Unlock()
				case r.Allowed && !lo.IsZero() && sent.After(lo):
					mu.Lock()
					late = append(late, fmt.Sprintf("allowed %v after the sign-out", sent.Sub(lo)))
					mu.Unlock()
				case r.Allowed:
					allowed.Add(1)
				}
			}
		}()
	}
	// The tabs are busy before the sign-out (however slow the machine).
	for deadline := time.Now().Add(20 * time.Second); allowed.Load() < 20 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	r := c.Check("app.test", "/logout", tok, true)
	mu.Lock()
	loggedOut = time.Now()
	mu.Unlock()
	wantDenied(t, r, 302, "signed_out")
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(late) > 0 {
		t.Errorf("%d problems after the sign-out, first: %s", len(late), late[0])
	}
	if allowed.Load() < 20 {
		t.Errorf("only %d allowed requests before the sign-out: the test exercised little", allowed.Load())
	}
}

// TestConcurrentUsersIsolation: many users at once over one gRPC connection;
// every answer is the asker's own — identity, deadlines, cookie, and (for
// denials large enough to use pooled buffers) the return URL.
func TestConcurrentUsersIsolation(t *testing.T) {
	t.Parallel()
	const abs = time.Hour
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: abs}.yaml()})
	const users, rounds = 12, 60
	base := time.Now().Unix() - 100
	toks := make([]string, users)
	for i := range toks {
		toks[i] = s.token(t, fmt.Sprintf("user-%02d", i), authTime(base+int64(i)))
	}
	var wg sync.WaitGroup
	errs := make(chan string, users*rounds)
	for i := 0; i < users; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.client(t)
			sub := fmt.Sprintf("user-%02d", i)
			wantExp := strconv.FormatInt(base+int64(i)+int64(abs/time.Second), 10)
			var cookie string
			for n := 0; n < rounds; n++ {
				r, err := c.try("app.test", fmt.Sprintf("/u/%s/%d", sub, n), toks[i], false)
				switch {
				case err != nil:
					errs <- sub + ": gRPC error " + err.Error()
					return
				case !r.Allowed || r.Upstream[userHeader] != sub || r.Upstream[expiresHeader] != wantExp:
					errs <- fmt.Sprintf("%s round %d: got %v", sub, n, r)
					return
				}
				if n == 0 {
					cookie, _ = c.cookie("app.test", cookieName)
				} else if len(r.SetCookies) != 0 {
					errs <- fmt.Sprintf("%s round %d: unexpected set-cookie %q", sub, n, r.SetCookies)
					return
				}
				// A denial with a long, user-specific path (> 1 KiB response).
				long := fmt.Sprintf("/deny/%s/%d/%s", sub, n, strings.Repeat(sub, 150))
				r, err = c.try("app.test", long, "", true)
				if err != nil {
					errs <- sub + ": gRPC error " + err.Error()
					return
				}
				if want := url.QueryEscape("https://app.test" + long); r.Reason != "no_token" || !strings.Contains(r.Location, "rd="+want) {
					errs <- fmt.Sprintf("%s round %d: denial for another request: %.200s", sub, n, r.Location)
					return
				}
			}
			if got, _ := c.cookie("app.test", cookieName); got != cookie || cookie == "" {
				errs <- sub + ": session cookie changed"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	wantMetric(t, s.metrics(t), "sessiongate_sessions_started_total", map[string]string{"policy": "app"}, users)
}
