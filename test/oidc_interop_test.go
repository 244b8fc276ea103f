package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/oidc"
)

// TestOIDCAgainstProvider holds package oidc to the real provider, without
// the engine: in Chromium, for a confidential client with
// client_secret_basic, one with client_secret_post, one with
// private_key_jwt and a public client,
// Start's redirect is accepted and its callback finishes (RFC 9207 iss,
// PKCE, nonce, ID-token signature); a re-authentication shows the form
// again and proves a sign-in after the end (auth_time); the refresh token
// works until the grant is revoked (invalid_grant → ErrGrantRevoked); and
// the end-session URL signs the user out at the provider.
func TestOIDCAgainstProvider(t *testing.T) {
	t.Parallel()
	op := startProvider(t, providerOpts{})
	rp, err := oidc.New(oidc.Options{Keys: oidc.RandomKeyRing()})
	if err != nil {
		t.Fatal(err)
	}

	// The application host: /start begins a sign-in of the policy named by
	// ?client=, the callback finishes it.
	var mu sync.Mutex
	signIns := map[string]*oidc.SignIn{}
	var last struct {
		si  *authz.SignedIn
		err error
	}
	var took []time.Duration // Finish against the real provider, for the log
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := &authz.Request{Host: r.Host, Scheme: "http", Method: r.Method, Path: r.URL.RequestURI(),
			Headers: authz.HeaderMap{"cookie": r.Header.Get("Cookie")}}
		switch r.URL.Path {
		case "/start":
			mu.Lock()
			si := signIns[r.URL.Query().Get("client")]
			mu.Unlock()
			var ended int64
			if r.URL.Query().Has("ended") {
				ended = time.Now().UnixMilli()
			}
			loc, cookie, err := si.Start(r.Context(), req, "http://"+r.Host+"/app", ended)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Header().Add("Set-Cookie", cookie)
			http.Redirect(w, r, loc, http.StatusFound)
		case opCallbackPath:
			mu.Lock()
			si := signIns[r.URL.Query().Get("client")]
			if si == nil {
				for _, s := range signIns { // the callback carries no client: try the one in flight
					si = s
				}
			}
			mu.Unlock()
			start := time.Now()
			res, err := si.Finish(r.Context(), req)
			mu.Lock()
			took = append(took, time.Since(start))
			last.si, last.err = res, err
			mu.Unlock()
			if err != nil {
				fmt.Fprintf(w, "<!doctype html><p>refused: %s</p>", err)
				return
			}
			fmt.Fprint(w, "<!doctype html><p>signed in</p>")
		default:
			fmt.Fprint(w, "<!doctype html><p>page "+r.URL.Path+"</p>")
		}
	}))
	t.Cleanup(app.Close)
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	base := "http://" + faHost + ":" + port
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		t.Logf("callbacks (code exchange and ID-token validation against oidc-provider on loopback): %v", took)
	})

	for _, c := range []struct {
		client, secret, auth string
		key                  []byte
	}{
		{opClientID, opClientSecret, "basic", nil},
		{opClientPost, opClientSecret, "post", nil},
		{opPublicClient, "", "none", nil},
		{opClientJWT, "", "private_key_jwt", opClientKey},
	} {
		t.Run(c.auth, func(t *testing.T) {
			si, err := rp.SignIn(c.client, oidc.Config{Issuer: op.issuer, ClientID: c.client, ClientSecret: c.secret, ClientKey: c.key,
				ClientAuth: c.auth, Scopes: []string{"openid", "profile", "email"}, CallbackPath: opCallbackPath,
				ReauthParams:          map[string]string{"prompt": "login", "max_age": "0"},
				PostLogoutRedirectURL: base + opSignedOut, ClockSkew: 30 * time.Second,
				Headers: []oidc.HeaderClaim{{Header: "x-user-email", Claim: "email"}, {Header: "x-user-name", Claim: "name"},
					{Header: "x-user-groups", Claim: "groups"}}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rp.DiscoverNow(ctx)
			if err := si.Ready(); err != nil {
				t.Fatalf("discovery: %v", err)
			}
			mu.Lock()
			clear(signIns)
			signIns[c.client] = si
			mu.Unlock()
			finished := func(tb *tab) *authz.SignedIn {
				t.Helper()
				if !waitFor(browserTimeout, func() bool {
					return strings.Contains(tb.text(t), "signed in") || strings.Contains(tb.text(t), "refused")
				}) {
					t.Fatalf("no answer from the callback at %s", tb.location())
				}
				mu.Lock()
				defer mu.Unlock()
				if last.err != nil {
					t.Fatalf("Finish: %v", last.err)
				}
				return last.si
			}

			tb := newBrowser(t).firstTab(t) // a browser of its own: no single sign-on from the last client
			tb.navigate(t, base+"/start?client="+c.client)
			tb.signIn(t, "alice", opPassword)
			first := finished(tb)
			cl, g := first.Claims, first.Grant
			// (No auth_time yet: the provider sends it when asked with max_age.)
			if cl.Issuer != op.issuer || cl.Subject != "alice" || g.AccessToken == "" || g.RefreshToken == "" || g.IDToken == "" {
				t.Fatalf("sign-in: claims %+v, grant with access %v refresh %v id %v", cl, g.AccessToken != "", g.RefreshToken != "", g.IDToken != "")
			}
			want := []authz.Header{{Name: "x-user-email", Value: "alice@example.com"}, {Name: "x-user-name", Value: "Alice Example"},
				{Name: "x-user-groups", Value: "staff,admins"}}
			if fmt.Sprint(g.Headers) != fmt.Sprint(want) {
				t.Errorf("identity headers %v, want %v", g.Headers, want)
			}
			if first.ReturnURL != base+"/app" {
				t.Errorf("return URL %q", first.ReturnURL)
			}

			// After an end, the form again, and a sign-in after the end.
			endedAt := time.Now().UnixMilli()
			tb.navigate(t, base+"/start?ended=1&client="+c.client)
			// auth_time has whole seconds: a person takes more than the rest
			// of this second to type a password.
			time.Sleep(time.Until(time.UnixMilli(endedAt).Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
			tb.signIn(t, "alice", opPassword)
			again := finished(tb)
			if again.EndedAt < endedAt || again.Claims.AuthTime <= again.EndedAt {
				t.Errorf("re-authentication: auth_time %d not after the end %d", again.Claims.AuthTime, again.EndedAt)
			}
			if again.Claims.Identity != cl.Identity {
				t.Error("the same user signed in as another identity")
			}

			// Refresh keeps the identity; revocation is ErrGrantRevoked.
			ng, err := si.Refresh(context.Background(), again.Grant)
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if ng.AccessToken == "" || ng.AccessToken == again.Grant.AccessToken {
				t.Error("refresh gave no new access token")
			}

			// RP-Initiated Logout: the provider signs out and comes back to
			// post_logout_redirect_uri; the next sign-in shows the form.
			end, _ := url.Parse(si.EndSessionURL(&authz.Request{Host: faHost + ":" + port}, ng))
			if end.Query().Get("id_token_hint") == "" || end.Query().Get("post_logout_redirect_uri") != base+opSignedOut {
				t.Fatalf("end-session URL lacks id_token_hint or post_logout_redirect_uri: %v", end.Query())
			}
			tb.navigate(t, end.String())
			if tb.has(t, `button[name="logout"]`) {
				tb.run(t, "confirm sign-out", chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
			}
			tb.waitURL(t, "the post-logout page", func(u *url.URL) bool { return u.Path == opSignedOut })
			tb.navigate(t, base+"/start?client="+c.client)
			tb.waitVisible(t, "#username")

			op.revoke(t, "alice")
			_, err = si.Refresh(context.Background(), ng)
			if !errors.Is(err, authz.ErrGrantRevoked) {
				t.Errorf("refresh after revocation: %v, want ErrGrantRevoked", err)
			}
			if err != nil && strings.Contains(err.Error(), ng.RefreshToken) {
				t.Error("the error carries the refresh token")
			}
		})
	}
}
