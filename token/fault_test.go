package token

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestJWKSRetryBackoff: while the IdP fails, Run retries after 1s, 2s, 4s …
// up to the refresh interval, never more often; once it answers again the
// keys are taken and the normal interval resumes.
func TestJWKSRetryBackoff(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.ES256)
	srv := newJWKSServer(t, a.JWKS())
	cfg := urlConfig(srv.URL)
	cfg.RefreshInterval = 20 * time.Second
	v := e.verifier(cfg)
	start := e.clock.Now()
	var fetches []time.Duration // since start
	step := func(until time.Duration) {
		for e.clock.Now().Sub(start) <= until {
			before := srv.hits.Load()
			e.p.refreshDue(context.Background())
			if srv.hits.Load() != before {
				fetches = append(fetches, e.clock.Now().Sub(start))
			}
			e.clock.Advance(250 * time.Millisecond)
		}
	}
	step(0) // the first load succeeds
	srv.set(http.StatusServiceUnavailable, nil)
	step(80 * time.Second)
	want := []time.Duration{0, 20, 21, 23, 27, 35, 51, 71} // interval, then 1s, 2s, 4s, 8s, 16s, 20s (capped)
	if !equalSeconds(fetches, want) {
		t.Fatalf("fetches at %v, want at %v seconds", fetches, want)
	}
	if _, err := verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatalf("last good keys lost while the IdP is down: %v", err)
	}

	b := newIDP(t, idp.ES256)
	srv.set(http.StatusOK, idp.JWKSOf(a, b)) // back, with a new key
	fetches = nil
	step(140 * time.Second)
	if !equalSeconds(fetches, []time.Duration{91, 111, 131}) {
		t.Fatalf("after recovery: fetches at %v, want at 91, 111, 131 seconds", fetches)
	}
	if _, err := verify(v, mint(t, b, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatalf("the key published after the outage: %v", err)
	}
	if n := e.obs.refreshFailed.Load(); n != 7 {
		t.Errorf("%d failed refreshes counted, want 7", n)
	}
}

func equalSeconds(got, want []time.Duration) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i]*time.Second {
			return false
		}
	}
	return true
}

// TestSlowJWKS: an IdP that accepts the connection and never answers holds
// up neither a request (it returns when its context ends) nor the keys in
// use; the fetch itself gives up at the client's timeout.
func TestSlowJWKS(t *testing.T) {
	e := newEnv(t)
	a, b := newIDP(t, idp.ES256), newIDP(t, idp.ES256)
	srv := newJWKSServer(t, a.JWKS())
	cfg := urlConfig(srv.URL)
	v := e.verifier(cfg)
	if _, err := verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatal(err)
	}

	gate, seen := make(chan struct{}), make(chan struct{}, 1)
	srv.mu.Lock()
	srv.gate, srv.seen = gate, seen
	srv.mu.Unlock()
	defer close(gate)
	e.clock.Advance(2 * time.Minute) // past MinRefreshInterval: b's unknown kid refetches
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-seen // the fetch is hanging at the IdP
		cancel()
	}()
	_, err := v.Verify(ctx, mint(t, b, claims(e.clock.Now(), nil)), e.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "unknown key id")
	if n := e.obs.refreshFailed.Load() + e.obs.refreshOK.Load(); n != 1 {
		t.Fatalf("the request returned only after the hanging fetch ended (%d fetches done)", n)
	}
	if _, err := verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now()); err != nil {
		t.Fatalf("keys lost while a fetch hangs: %v", err)
	}

	// The fetch is bounded by the HTTP client's timeout, then counted.
	srv.mu.Lock()
	srv.seen = nil // nobody listens any more
	srv.mu.Unlock()
	e2 := newEnv(t)
	e2.p = NewProvider(Options{Clock: e2.clock, Observer: e2.obs, HTTPClient: &http.Client{Timeout: 50 * time.Millisecond}})
	v2 := e2.verifier(urlConfig(srv.URL))
	_, err = verify(v2, mint(t, a, claims(e2.clock.Now(), nil)), e2.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "no keys loaded")
	if n := e2.obs.refreshFailed.Load(); n != 1 {
		t.Errorf("%d failed refreshes, want the timed-out one", n)
	}
}
