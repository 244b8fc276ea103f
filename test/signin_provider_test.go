package test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSignInProviderOutage: a login.oidc policy whose provider cannot be
// reached keeps the replica ready (other policies, and live sessions, are
// served), says which policy cannot sign in on /readyz and in
// sessiongate_oidc_provider_up, and recovers on its own once the provider
// answers. A shared store without --session-key-file refuses to start.
func TestSignInProviderOutage(t *testing.T) {
	t.Parallel()
	idpAddr := freeAddr(t) // nothing listens there yet
	issuer := "http://" + idpAddr
	sso := "hosts: [sso.test]\nsession:\n  absolute_timeout: 1h\n  idle_timeout: 10m\n" +
		"login:\n  oidc:\n    issuer: " + issuer + "\n    client_id: sso\n" +
		"logout:\n  path: /logout\n  redirect_url: https://sso.test/bye\nbypass: [/bye]\n"
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml(), "sso": sso})

	if !s.waitLog("no --session-key-file") {
		t.Error("no warning that sign-in sessions use a per-process key")
	}
	code, body, err := s.httpGet("/readyz")
	if err != nil || code != 200 || !strings.HasPrefix(body, "ready\n") || !strings.Contains(body, "policy sso cannot sign in") {
		t.Errorf("GET /readyz with the provider down: %d %q %v", code, body, err)
	}
	m := scrape(t, s)
	if v, ok := m[`sessiongate_oidc_provider_up{policy="sso"}`]; !ok || v != 0 {
		t.Errorf("oidc_provider_up{sso} = %v (present %v), want 0", v, ok)
	}
	if _, ok := m[`sessiongate_oidc_provider_up{policy="app"}`]; ok {
		t.Error("oidc_provider_up reported for a login.url policy")
	}
	wantAllowed(t, s.client(t).Check("app.test", "/", s.token(t, "alice"), false))

	// The provider comes up; discovery retries with backoff and succeeds.
	lis, err := net.Listen("tcp", idpAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "authorization_endpoint": issuer + "/auth",
			"token_endpoint": issuer + "/token", "jwks_uri": issuer + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	}))
	srv.Listener.Close()
	srv.Listener = lis
	srv.Start()
	defer srv.Close()
	if !waitFor(20*time.Second, func() bool { return scrape(t, s)[`sessiongate_oidc_provider_up{policy="sso"}`] == 1 }) {
		t.Fatal("oidc_provider_up{sso} not 1 within 20s of the provider coming up")
	}
	if code, body, _ := s.httpGet("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("GET /readyz after recovery: %d %q", code, body)
	}
	if v := scrape(t, s)[`sessiongate_oidc_discoveries_total{result="success"}`]; v < 1 {
		t.Errorf("oidc_discoveries_total{success} = %v", v)
	}

	// Redis (any shared store) with a login.oidc policy needs the key file.
	_, stderr, code := runBin(t, "serve", "--policies", s.dir, "--store", "redis://127.0.0.1:1/0",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(stderr, "--session-key-file") {
		t.Errorf("serve with redis and no key file: exit %d, stderr %s", code, tail(stderr, 600))
	}
}
