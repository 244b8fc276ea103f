package test

import (
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// TestS19StolenLaptop: an operator lists a user's sessions and ends every
// one of them in one command, through the admin API of the built binary;
// the user's tokens are refused afterwards everywhere, another user's are
// not. A wrong token ends nothing.
func TestS19StolenLaptop(t *testing.T) {
	t.Parallel()
	adminAddr := freeAddr(t)
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	writeFile(t, tokenFile, "an-admin-token-of-32-characters!\n")
	wrongFile := filepath.Join(t.TempDir(), "wrong")
	writeFile(t, wrongFile, "not-the-admin-token-at-all-here\n")
	s := startServerOpts(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}}.yaml(),
		"crm": pol{Hosts: []string{"crm.test"}}.yaml(),
	}, serverOpts{extraArgs: []string{"--admin-addr", adminAddr, "--admin-token-file", tokenFile}})
	c := s.client(t)
	alice := s.token(t, "alice", claim("sid", "laptop"))
	alicePhone := s.token(t, "alice", claim("sid", "phone"))
	bob := s.token(t, "bob")
	wantAllowed(t, c.Check("app.test", "/", alice, true))
	wantAllowed(t, c.Check("crm.test", "/", alice, true))
	wantAllowed(t, s.client(t).Check("app.test", "/", alicePhone, true))
	wantAllowed(t, s.client(t).Check("app.test", "/", bob, true))

	out, errOut, code := runBin(t, "sessions", "list", "--user", "alice", "--admin-addr", adminAddr, "--admin-token-file", tokenFile)
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "app") || !strings.Contains(out, "crm") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	for _, secret := range []string{alice, alicePhone} {
		if strings.Contains(out, secret) {
			t.Fatal("list shows a token")
		}
	}
	if _, errOut, code := runBin(t, "sessions", "end", "--user", "alice", "--admin-addr", adminAddr, "--admin-token-file", wrongFile); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("end with a wrong token: exit %d, %s", code, errOut)
	}
	wantAllowed(t, c.Check("app.test", "/", alice, true))

	out, errOut, code = runBin(t, "sessions", "end", "--user", "alice", "--admin-addr", adminAddr, "--admin-token-file", tokenFile)
	if code != 0 || !strings.HasPrefix(out, "ended 3 sessions") {
		t.Fatalf("end: exit %d\n%s%s", code, out, errOut)
	}
	wantLoginRedirect(t, c.Check("app.test", "/", alice, true), "reauth_required", "https://app.test/", true)
	wantLoginRedirect(t, c.Check("crm.test", "/", alice, true), "reauth_required", "https://crm.test/", true)
	wantLoginRedirect(t, s.client(t).Check("app.test", "/", alicePhone, true), "reauth_required", "https://app.test/", true)
	wantAllowed(t, s.client(t).Check("app.test", "/", bob, true))
	if n := len(s.waitEvents(t, 3, map[string]string{"event": "session_ended", "cause": "admin", "subject": "alice"})); n != 3 {
		t.Errorf("%d session_ended cause=admin events", n)
	}
	if ev := s.waitEvents(t, 1, map[string]string{"event": "admin", "operation": "end", "result": "ok"}); len(ev) != 1 || ev[0]["ended"] != float64(3) || !strings.HasPrefix(ev[0]["who"].(string), "token:") {
		t.Errorf("admin audit event: %v", ev)
	}
	m := s.metrics(t)
	for _, want := range []string{`sessiongate_admin_requests_total{operation="end",result="ok"} 1`, `sessiongate_admin_requests_total{operation="end",result="unauthorized"} 1`,
		`sessiongate_sessions_ended_total{cause="admin",policy="app"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The admin API's ends go through the store like the engine's: counted.
	if got := metricValue(m, "sessiongate_store_operations_total", map[string]string{"op": "end"}); got < 3 {
		t.Errorf("store_operations_total{op=end} = %v after 3 sessions ended by the admin API, want at least 3", got)
	}
}

// TestS19AdminAddrNeedsAToken: serve refuses a non-loopback admin address
// without a token.
func TestS19AdminAddrNeedsAToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), pol{Hosts: []string{"app.test"}}.yaml())
	if err := newIDP(t).WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBin(t, "serve", "--policies", dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t), "--admin-addr", "0.0.0.0:0")
	if code != 2 || !strings.Contains(errOut, "--admin-token-file") {
		t.Errorf("exit %d, %s", code, errOut)
	}
}

// TestS19AdminMTLSThroughTheBinary: with TLS and client certificates the
// admin API listens without a token; the CLI reaches it with the CA and a
// client certificate, and the audit event names the certificate. Plain
// HTTP, no client certificate and another CA's certificate get nothing.
func TestS19AdminMTLSThroughTheBinary(t *testing.T) {
	t.Parallel()
	ca, other := testutil.NewCA(t, "admin CA"), testutil.NewCA(t, "other CA")
	serverCert, serverKey := ca.Server(t)
	cert, key := ca.Client(t, "ops-alice")
	otherCert, otherKey := other.Client(t, "ops-alice")
	adminAddr := freeAddr(t)
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()},
		serverOpts{extraArgs: []string{"--admin-addr", adminAddr, "--admin-tls-cert-file", serverCert, "--admin-tls-key-file", serverKey,
			"--admin-client-ca-file", ca.File}})
	c := s.client(t)
	alice := s.token(t, "alice")
	wantAllowed(t, c.Check("app.test", "/", alice, true))

	list := []string{"sessions", "list", "--user", "alice", "--admin-addr", adminAddr}
	for name, extra := range map[string][]string{
		"plain HTTP":                 nil,
		"no client certificate":      {"--admin-ca-file", ca.File},
		"another CA's certificate":   {"--admin-ca-file", ca.File, "--admin-cert-file", otherCert, "--admin-key-file", otherKey},
		"a server it does not trust": {"--admin-ca-file", other.File, "--admin-cert-file", cert, "--admin-key-file", key},
	} {
		if out, errOut, code := runBin(t, append(list, extra...)...); code != 1 || strings.Contains(out, "app") {
			t.Errorf("%s: exit %d\n%s%s", name, code, out, errOut)
		}
	}
	out, errOut, code := runBin(t, append(list, "--admin-ca-file", ca.File, "--admin-cert-file", cert, "--admin-key-file", key)...)
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "app") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runBin(t, "sessions", "end", "--user", "alice", "--admin-addr", "https://"+adminAddr,
		"--admin-ca-file", ca.File, "--admin-cert-file", cert, "--admin-key-file", key)
	if code != 0 || !strings.HasPrefix(out, "ended 1 session") {
		t.Fatalf("end: exit %d\n%s%s", code, out, errOut)
	}
	wantLoginRedirect(t, c.Check("app.test", "/", alice, true), "reauth_required", "https://app.test/", true)
	if ev := s.waitEvents(t, 1, map[string]string{"event": "admin", "operation": "end", "result": "ok"}); len(ev) != 1 ||
		!strings.HasPrefix(ev[0]["who"].(string), "cert:") || !strings.HasSuffix(ev[0]["who"].(string), " cn=ops-alice") {
		t.Errorf("admin audit event: %v", ev)
	}
}

// TestS19AdminTLSFlags: serve refuses admin TLS flags that do not go
// together, naming them, before anything listens.
func TestS19AdminTLSFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), pol{Hosts: []string{"app.test"}}.yaml())
	if err := newIDP(t).WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	ca := testutil.NewCA(t, "admin CA")
	cert, key := ca.Server(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-tls-cert-file", cert}, "--admin-tls-key-file"},
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-tls-key-file", key}, "--admin-tls-cert-file"},
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-client-ca-file", ca.File}, "--admin-tls-cert-file"},
		{[]string{"--admin-tls-cert-file", cert, "--admin-tls-key-file", key}, "without --admin-addr"},
		// TLS alone authenticates nobody: a non-loopback address still needs
		// a token or client certificates.
		{[]string{"--admin-addr", "0.0.0.0:0", "--admin-tls-cert-file", cert, "--admin-tls-key-file", key}, "--admin-client-ca-file"},
	} {
		args := append([]string{"serve", "--policies", dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}, c.args...)
		if _, errOut, code := runBin(t, args...); code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %s", c.args, code, errOut)
		}
	}
}

// TestS18BackChannelThroughTheBinary: a token-mode policy with
// token.logout_audience takes the issuer's logout token on --http-addr and
// ends that provider session; a replay is refused.
func TestS18BackChannelThroughTheBinary(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}, TokenExtra: "  logout_audience: web\n"}.yaml(),
	})
	c := s.client(t)
	tok := s.token(t, "alice", claim("sid", "op-session"))
	wantAllowed(t, c.Check("app.test", "/", tok, true))
	now := time.Now().Unix()
	lt, err := s.idp.MintWith(map[string]any{"typ": "logout+jwt"}, map[string]any{"iss": testIssuer, "aud": "web", "iat": now, "exp": now + 120,
		"jti": randHex(8), "sid": "op-session", "events": map[string]any{authz.BackChannelEvent: map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	post := func() (int, string) {
		resp, err := http.PostForm("http://"+s.httpAddr+"/oidc/backchannel-logout", url.Values{"logout_token": {lt}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(); code != 200 {
		t.Fatalf("logout: %d %s", code, body)
	}
	wantLoginRedirect(t, c.Check("app.test", "/", tok, true), "reauth_required", "https://app.test/", true)
	if code, body := post(); code != 400 || !strings.Contains(body, "replayed") {
		t.Errorf("replay: %d %s", code, body)
	}
	m := s.metrics(t)
	for _, want := range []string{`sessiongate_backchannel_logouts_total{result="ok"} 1`, `sessiongate_backchannel_logouts_total{result="replayed"} 1`,
		`sessiongate_sessions_ended_total{cause="idp_logout",policy="app"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestS19SessionsFileErrors: the sessions command exits 1 for a file its
// flags name that cannot be read, as for the token file, and 2 for flags
// that do not go together, naming the flag either way.
func TestS19SessionsFileErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--admin-ca-file", missing}, 1, "--admin-ca-file"},
		{[]string{"--admin-token-file", missing}, 1, "--admin-token-file"},
		{[]string{"--admin-cert-file", missing}, 2, "--admin-key-file"},
	} {
		args := append([]string{"sessions", "list", "--user", "alice", "--admin-addr", "https://127.0.0.1:1"}, c.args...)
		_, errOut, code := runBin(t, args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %q; want exit %d naming %s", c.args, code, errOut, c.code, c.want)
		}
	}
}
