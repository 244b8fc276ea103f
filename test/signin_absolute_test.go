package test

import (
	"strings"
	"testing"
	"time"
)

// TestSignInAbsoluteWhileActive: a person who keeps working is still asked
// for credentials when the session's absolute lifetime is over (S1), and
// lands back on the page.
func TestSignInAbsoluteWhileActive(t *testing.T) {
	t.Parallel()
	for _, p := range signInPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			const absolute = 12 * time.Second
			e := newSignInEnv(t, p, signInOpts{idle: 8 * time.Second, absolute: absolute})
			tb := newBrowser(t).firstTab(t)
			tb.navigate(t, e.url("/work"))
			e.signIn(t, tb, "alice", "/work")
			first := e.sessionCookie(t, tb)
			signedIn := time.Now()

			// Absolute lifetime while active: requests every second keep
			// the session from idling, until its lifetime is over.
			for {
				tb.navigate(t, e.url("/work"))
				if strings.HasPrefix(tb.location(), e.op.issuer) {
					break
				}
				if time.Since(signedIn) > absolute+30*time.Second {
					t.Fatalf("still on the page %s after the absolute lifetime\n%s\nnavigations: %q", time.Since(signedIn), tb.lastResponses(), tb.navigations())
				}
				time.Sleep(time.Second)
			}
			// The end was the absolute lifetime: found on the session, or, when
			// the browser had dropped the cookie (its Max-Age), on the
			// provider's auth_time at the callback (S1 on first sight).
			m := e.gate.metrics(t)
			deny := func(reason string) float64 {
				return metricValue(m, "sessiongate_checks_total", map[string]string{"policy": "app", "decision": "deny", "reason": reason})
			}
			if got := deny("absolute_timeout"); got != 1 {
				t.Errorf("checks_total{reason=absolute_timeout} = %v, want 1", got)
			}
			if got := deny("idle_timeout"); got != 0 {
				t.Errorf("checks_total{reason=idle_timeout} = %v, want 0: the session idled out, the test proves nothing", got)
			}
			tb.signIn(t, "alice", opPassword)
			e.atPage(t, tb, "/work")
			e.wantSignedInUpstream(t, "alice")
			if c := e.sessionCookie(t, tb); c == "" || c == first {
				t.Error("signing in again must open a new session with a new cookie")
			}
		})
	}
}
