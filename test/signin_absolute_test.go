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
			// The lifetime was over, not the idle timeout: the end was found on
			// the session, or on the provider's auth_time at the callback
			// (S1 on first sight) when the browser had dropped the cookie, or
			// the provider itself asked for credentials (max_age).
			if got := metricValue(e.gate.metrics(t), "sessiongate_checks_total",
				map[string]string{"policy": "app", "decision": "deny", "reason": "idle_timeout"}); got != 0 {
				t.Errorf("checks_total{reason=idle_timeout} = %v, want 0: the session idled out, the test proves nothing", got)
			}
			logins := e.op.stats(t).Logins
			tb.signIn(t, "alice", opPassword)
			e.atPage(t, tb, "/work")
			e.wantSignedInUpstream(t, "alice")
			if got := e.op.stats(t).Logins; got != logins+1 {
				t.Errorf("%d sign-ins with credentials after the lifetime, want 1", got-logins)
			}
			if c := e.sessionCookie(t, tb); c == "" || c == first {
				t.Error("signing in again must open a new session with a new cookie")
			}
		})
	}
}
