package test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// Two applications of one provider, each its own policy and client.
const (
	bcAppHost = "app.localhost"
	bcCRMHost = "crm.localhost"
)

// bcPolicy is a login.oidc policy for host with the provider's client.
func bcPolicy(op *oidcProvider, host, client, auth, base string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hosts: [%q]\nmode: enforce\n", host)
	b.WriteString("session:\n  absolute_timeout: 1h\n  idle_timeout: 10m\n")
	fmt.Fprintf(&b, "login:\n  oidc:\n    issuer: %s\n    client_id: %s\n", op.issuer, client)
	fmt.Fprintf(&b, "    client_secret_file: client.secret\n    client_auth: %s\n", auth)
	b.WriteString("    scopes: [openid, profile, email, offline_access]\n")
	b.WriteString("  reauth_params: {prompt: login, max_age: \"0\"}\n")
	fmt.Fprintf(&b, "logout:\n  path: %s\n  redirect_url: %s%s\n", logoutPath, base, opSignedOut)
	b.WriteString("bypass: [/public/]\n")
	return b.String()
}

// TestS18ProviderSignOutEndsEverySession: a person signs in through a real
// browser to two applications of the same provider (two policies, two
// clients), served by two replicas on a real Redis; then signs out at the
// provider's own end-session page. The provider (oidc-provider) sends its
// back-channel logout tokens to one replica; both sessions end on both
// replicas, and the next request to either application, on either
// replica, goes to the provider's login form with prompt=login.
func TestS18ProviderSignOutEndsEverySession(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)

	// The provider's back-channel requests reach replica A through a relay
	// whose address is known before A starts (A's policies need the
	// provider's issuer first), as a proxy in front of it would.
	var gateA atomic.Pointer[url.URL]
	var mu sync.Mutex
	var posts []time.Time
	relay := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(gateA.Load()) },
		ModifyResponse: func(resp *http.Response) error {
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode == http.StatusOK {
				posts = append(posts, time.Now())
			}
			return nil
		},
	})
	t.Cleanup(relay.Close)
	op := startProvider(t, providerOpts{Hosts: []string{bcAppHost, bcCRMHost}, BackchannelLogoutURI: relay.URL + "/oidc/backchannel-logout"})

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "session.keys")
	writeFile(t, keyFile, base64.StdEncoding.EncodeToString(key)+"\n")
	listenA, listenB := freeAddr(t), freeAddr(t)
	_, portA, _ := net.SplitHostPort(listenA)
	_, portB, _ := net.SplitHostPort(listenB)
	start := func() *server {
		return startServerOpts(t, map[string]string{
			"app": bcPolicy(op, bcAppHost, opClientID, "basic", "http://"+bcAppHost+":"+portA),
			"crm": bcPolicy(op, bcCRMHost, opClientPost, "post", "http://"+bcCRMHost+":"+portA),
		}, serverOpts{
			extraArgs: []string{"--store", srv.URL(), "--session-key-file", keyFile},
			setup:     func(dir string) { writeFile(t, filepath.Join(dir, "client.secret"), opClientSecret+"\n") },
		})
	}
	a, b := start(), start()
	logGateMetricsOnFailure(t, a)
	gateA.Store(&url.URL{Scheme: "http", Host: a.httpAddr})
	app := startRecordingUpstream(t)
	startEnvoyProxy(t, a.grpcAddr, app.addr(), listenA)
	startEnvoyProxy(t, b.grpcAddr, app.addr(), listenB)
	at := func(host, port, path string) string { return "http://" + host + ":" + port + path }

	tb := newBrowser(t).firstTab(t)
	atLogin := func(what string) {
		t.Helper()
		tb.waitURL(t, what+": the provider's login form", func(u *url.URL) bool {
			return strings.HasPrefix(u.String(), op.issuer+"/interaction/")
		})
		tb.waitVisible(t, "#username")
	}
	atPage := func(u string) {
		t.Helper()
		tb.waitURL(t, "the application at "+u, func(got *url.URL) bool { return got.String() == u })
		waitText(t, tb, appPage)
	}

	// Sign in to the first application; the second one gets the provider's
	// single sign-on (or its form, if it asks).
	tb.navigate(t, at(bcAppHost, portA, "/inbox"))
	atLogin("first sign-in")
	tb.signIn(t, "alice", opPassword)
	atPage(at(bcAppHost, portA, "/inbox"))
	tb.navigate(t, at(bcCRMHost, portA, "/accounts"))
	tb.waitURL(t, "the second application or the form", func(u *url.URL) bool {
		return u.String() == at(bcCRMHost, portA, "/accounts") || strings.HasPrefix(u.String(), op.issuer+"/interaction/")
	})
	if strings.HasPrefix(tb.location(), op.issuer) {
		tb.signIn(t, "alice", opPassword)
	}
	atPage(at(bcCRMHost, portA, "/accounts"))
	for _, h := range []string{bcAppHost, bcCRMHost} {
		if c := tb.cookies(t, at(h, portA, "/"))[gateCookie]; c != nil {
			a.remember(c.Value)
			b.remember(c.Value)
		}
	}
	// Replica B serves both sessions too (through Redis).
	for _, u := range []string{at(bcAppHost, portB, "/inbox"), at(bcCRMHost, portB, "/accounts")} {
		tb.navigate(t, u)
		atPage(u)
	}

	// The person signs out at the provider itself.
	tb.navigate(t, op.issuer+"/session/end")
	tb.waitVisible(t, `button[name="logout"]`)
	signedOutAt := time.Now()
	tb.run(t, "sign out at the provider", chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
	if !waitFor(15*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(posts) == 2 }) {
		mu.Lock()
		var m []string
		for _, l := range strings.Split(a.metrics(t), "\n") {
			if strings.HasPrefix(l, "sessiongate_backchannel") && !strings.HasSuffix(l, " 0") {
				m = append(m, l)
			}
		}
		t.Fatalf("%d back-channel logouts answered 200, want one per client (2); gate A: %v\nprovider log:\n%s", len(posts), m, tail(op.log.String(), 3000))
	}
	mu.Lock()
	t.Logf("back-channel logouts answered %v and %v after the sign-out click", posts[0].Sub(signedOutAt), posts[1].Sub(signedOutAt))
	mu.Unlock()

	// Both sessions are over on both replicas: the next request to either
	// application goes to the provider's form, asking for credentials.
	pages := func() int {
		app.mu.Lock()
		defer app.mu.Unlock()
		n := 0
		for _, r := range app.got {
			if r.uri != "/favicon.ico" {
				n++
			}
		}
		return n
	}
	hits := pages()
	for _, u := range []string{at(bcAppHost, portB, "/inbox"), at(bcCRMHost, portB, "/accounts"),
		at(bcAppHost, portA, "/inbox"), at(bcCRMHost, portA, "/accounts")} {
		tb.navigations()
		// Chromium may report the provider's interaction page, reached by
		// redirects, as an aborted load while the previous one's scripts
		// wind down; where the browser ends up is what counts.
		ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
		_ = chromedp.Do(ctx, chromedp.Navigate(u))
		cancel()
		atLogin(u)
		prompted := false
		for _, n := range tb.navigations() {
			if strings.HasPrefix(n, op.issuer) && strings.Contains(n, "prompt=login") {
				prompted = true
			}
		}
		if !prompted {
			t.Errorf("%s: the provider was not asked for prompt=login", u)
		}
	}
	if pages() != hits {
		t.Errorf("the applications got %d requests after the provider's sign-out", pages()-hits)
	}
	if n := len(a.findEvents(t, map[string]string{"event": "session_ended", "cause": "idp_logout"})); n != 2 {
		t.Errorf("%d session_ended events with cause idp_logout on replica A, want 2", n)
	}
	if n := len(a.findEvents(t, map[string]string{"event": "backchannel_logout", "result": "ok"})); n != 2 {
		t.Errorf("%d backchannel_logout audit events, want 2", n)
	}
}
