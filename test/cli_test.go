package test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestCheckAndHealthCommands: "sessiongate check" prints the decision of a
// running server with the documented exit codes; "sessiongate health" exits
// 0 while it serves.
func TestCheckAndHealthCommands(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	tok := s.token(t, "alice")

	out, errOut, code := runBin(t, "check", "--addr", s.grpcAddr, "--host", "app.test", "--path", "/x", "--token", tok)
	if code != 0 {
		t.Fatalf("check allow: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{"decision: allow\n", "status:   200 (forwarded upstream)\n", "upstream header: x-sessiongate-user: alice\n",
		"upstream header: x-sessiongate-session-expires-at: ", "client header: set-cookie: " + cookieName + "="} {
		if !strings.Contains(out, want) {
			t.Errorf("check allow: stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, tok) {
		t.Errorf("check prints the token it was given")
	}

	out, _, code = runBin(t, "check", "--addr", s.grpcAddr, "--host", "app.test", "--path", "/api")
	if code != 3 {
		t.Errorf("check deny: exit %d, want 3", code)
	}
	for _, want := range []string{"decision: deny\n", "status:   401\n", "reason:   no_token\n",
		`client header: www-authenticate: Bearer realm="sessiongate"` + "\n", "client header: x-sessiongate-reason: no_token\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("check deny: stdout lacks %q:\n%s", want, out)
		}
	}

	out, _, code = runBin(t, "check", "--addr", s.grpcAddr, "--host", "app.test", "--path", "/x?y=1", "--browser")
	wantLoc := "client header: location: " + loginURL + "?rd=" + url.QueryEscape("https://app.test/x?y=1") + "\n"
	if code != 3 || !strings.Contains(out, "status:   302\n") || !strings.Contains(out, wantLoc) {
		t.Errorf("check browser deny: exit %d, want 3 and %q in:\n%s", code, wantLoc, out)
	}

	out, _, code = runBin(t, "check", "--addr", s.grpcAddr, "--host", "nowhere.test")
	if code != 3 || !strings.Contains(out, "status:   403\n") || !strings.Contains(out, "reason:   unknown_host\n") {
		t.Errorf("check unknown host: exit %d:\n%s", code, out)
	}

	out, errOut, code = runBin(t, "health", "--addr", s.grpcAddr)
	if code != 0 || strings.TrimSpace(out) != "SERVING" {
		t.Errorf("health: exit %d, stdout %q, stderr %q; want 0 and SERVING", code, out, errOut)
	}
	// Nothing listening: both fail with status 1.
	dead := freeAddr(t)
	if _, _, code := runBin(t, "health", "--addr", dead, "--timeout", "1s"); code != 1 {
		t.Errorf("health against nothing: exit %d, want 1", code)
	}
	if _, _, code := runBin(t, "check", "--addr", dead, "--host", "app.test", "--timeout", "1s"); code != 1 {
		t.Errorf("check against nothing: exit %d, want 1", code)
	}
	if _, _, code := runBin(t, "check", "--addr", s.grpcAddr); code != 2 {
		t.Errorf("check without --host: exit %d, want 2", code)
	}
	if out, _, code := runBin(t, "version"); code != 0 || !strings.HasPrefix(out, "sessiongate ") {
		t.Errorf("version: exit %d, stdout %q", code, out)
	}
}

// TestServeRefusesBadPolicies: serve does not start on a broken policy
// directory; it says where the problem is and exits 1.
func TestServeRefusesBadPolicies(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := newIDP(t).WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "app.yaml"), strings.Replace(pol{Hosts: []string{"app.test"}}.yaml(), "idle_timeout: 30m0s", "idle_timeout: 2h", 1))
	_, errOut, code := runBin(t, "serve", "--policies", dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t))
	if code != 1 {
		t.Fatalf("serve with a bad policy: exit %d, want 1; stderr %q", code, errOut)
	}
	if !strings.Contains(errOut, filepath.Join(dir, "app.yaml")+":5: session.idle_timeout: ") {
		t.Errorf("serve's error does not name file, line and field:\n%s", errOut)
	}
	// It says what happens: nothing to keep, no start.
	if strings.Contains(errOut, "keeping the last good policies") || !strings.Contains(errOut, "no valid policies to start with") {
		t.Errorf("serve's log does not say that it does not start:\n%s", errOut)
	}
	if _, _, code := runBin(t, "serve"); code != 2 {
		t.Errorf("serve without --policies: exit %d, want 2", code)
	}
}

// TestDrainOnSIGTERM: for --drain-delay after SIGTERM the process is out of
// rotation (gRPC health NOT_SERVING, /readyz 503) and still answers checks,
// on open connections and new ones, as a load balancer that has not moved
// away yet sends them; a second SIGTERM cuts the drain short.
func TestDrainOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()},
		serverOpts{extraArgs: []string{"--drain-delay", "1m"}})
	tok := s.token(t, "alice")
	c := s.client(t)
	wantAllowed(t, c.Check("app.test", "/", tok, false))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(s.conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v, want SERVING", m.GetStatus(), err)
	}
	s.signal(t, syscall.SIGTERM)
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health watch after SIGTERM: %v %v, want NOT_SERVING", m.GetStatus(), err)
	}
	cancel()
	if code, body, err := s.httpGet("/readyz"); err != nil || code != 503 || body != "not ready: shutting down\n" {
		t.Errorf("GET /readyz while draining: %d %q %v, want 503 shutting down", code, body, err)
	}
	if !s.waitLog("draining") {
		t.Errorf("no drain log line")
	}
	// Still answering, on the open connection and on a new one.
	for range 20 {
		wantAllowed(t, c.Check("app.test", "/", tok, false))
	}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c2 := &client{t: t, s: s, api: authv3.NewAuthorizationClient(conn), jar: c.jar}
	wantAllowed(t, c2.Check("app.test", "/", tok, false))
	select {
	case <-s.done:
		t.Fatalf("exited during the drain delay: %v", s.waitErr)
	default:
	}
	// A second SIGTERM (stop sends it and waits 10s at most, far less than
	// the minute of drain left) ends the drain.
	s.stop()
}

// TestGracefulShutdown: on SIGTERM, grpc health turns NOT_SERVING first,
// then the process stops and exits 0 within a few seconds.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	tok := s.token(t, "alice")
	wantAllowed(t, s.client(t).Check("app.test", "/", tok, false))

	// A separate connection watches health, as a load balancer would.
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		st, err := s.healthStatus(svc)
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q before shutdown: %v %v", svc, st, err)
		}
	}
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: first status %v %v, want SERVING", m.GetStatus(), err)
	}

	sent := time.Now()
	s.signal(t, syscall.SIGTERM)
	m, err := watch.Recv()
	if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health watch after SIGTERM: %v %v, want NOT_SERVING", m.GetStatus(), err)
	}
	cancel() // end the watch, so that the graceful stop does not wait for it
	select {
	case <-s.done:
	case <-time.After(4 * time.Second):
		t.Fatalf("still running 4s after SIGTERM")
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if s.waitErr != nil {
		t.Errorf("exit: %v, want status 0", s.waitErr)
	}
	if !s.waitLog("shutting down") {
		t.Errorf("no shutdown log line")
	}
	if _, err := s.client(t).try("app.test", "/", tok, false); err == nil {
		t.Errorf("a check succeeded after the process exited")
	}
}

// TestSIGINTAlsoStops: Ctrl-C in a terminal stops the server cleanly.
func TestSIGINTAlsoStops(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	s.signal(t, os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(4 * time.Second):
		t.Fatalf("still running 4s after SIGINT")
	}
	if s.waitErr != nil {
		t.Errorf("exit after SIGINT: %v, want status 0", s.waitErr)
	}
}

// TestServeFromEnvironment (§2): serve's flags are also read from
// SESSIONGATE_* variables; --audit-log sends audit events to a file.
func TestServeFromEnvironment(t *testing.T) {
	t.Parallel()
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()}, serverOpts{
		viaEnv: true, extraArgs: []string{"--audit-log", auditFile},
	})
	wantAllowed(t, s.client(t).Check("app.test", "/", s.token(t, "alice"), false))
	if !waitFor(3*time.Second, func() bool {
		b, _ := os.ReadFile(auditFile)
		return strings.Contains(string(b), `"event":"session_started"`) && strings.Contains(string(b), `"subject":"alice"`)
	}) {
		b, _ := os.ReadFile(auditFile)
		t.Errorf("audit file lacks the session_started event: %q", b)
	}
	if out := s.stdout.String(); strings.Contains(out, "session_started") {
		t.Errorf("audit events still on stdout with --audit-log FILE: %q", out)
	}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		if code, body, err := s.httpGet(path); err != nil || code != 200 || body != want {
			t.Errorf("GET %s: %d %q %v, want 200 %q", path, code, body, err, want)
		}
	}
	if _, _, code := runBin(t, "serve", "--policies", s.dir, "--no-such-flag"); code != 2 {
		t.Errorf("serve with an unknown flag: exit %d, want 2", code)
	}
}

// TestCheckShowsDryRunReason: on a dry-run policy, check prints what
// enforcement would have answered, since that is what operators run it for.
func TestCheckShowsDryRunReason(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, DryRun: true}.yaml()})
	out, errOut, code := runBin(t, "check", "--addr", s.grpcAddr, "--host", "app.test", "--path", "/api")
	if code != 0 {
		t.Fatalf("check on a dry-run policy: exit %d, want 0 (allowed); stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{"decision: allow (dry-run: enforcement would deny)\n", "status:   200 (forwarded upstream)\n", "reason:   no_token\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("check dry-run: stdout lacks %q:\n%s", want, out)
		}
	}
	// An allow that enforcement would allow too names no reason.
	out, _, code = runBin(t, "check", "--addr", s.grpcAddr, "--host", "app.test", "--token", s.token(t, "alice"))
	if code != 0 || !strings.Contains(out, "decision: allow\n") || strings.Contains(out, "reason:") {
		t.Errorf("check dry-run, valid token: exit %d:\n%s", code, out)
	}
}

// TestValidateMessages: validate warns about a policy without sign-out and
// still exits 0, explains a tab in the indentation, names a missing file
// without a line, and counts in the singular.
func TestValidateMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := newIDP(t).WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "app.yaml")
	writeFile(t, app, pol{Hosts: []string{"app.test"}}.yaml())
	out, errOut, code := runBin(t, "validate", dir)
	if code != 0 || out != "ok: 1 policy valid: app\n" {
		t.Errorf("validate one policy: exit %d, stdout %q; want 0 and %q", code, out, "ok: 1 policy valid: app\n")
	}
	if want := "warning: " + app + ": logout: not set: users cannot sign out through sessiongate"; !strings.HasPrefix(errOut, want) {
		t.Errorf("validate without logout: stderr %q, want it to start with %q", errOut, want)
	}
	writeFile(t, app, pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml())
	if out, errOut, code := runBin(t, "validate", app); code != 0 || errOut != "" || out != "ok: 1 policy valid: app\n" {
		t.Errorf("validate with logout: exit %d, stdout %q, stderr %q; want no warning", code, out, errOut)
	}

	tab := filepath.Join(dir, "tab.yaml")
	writeFile(t, tab, "hosts: [tab.test]\nsession:\n\tabsolute_timeout: 8h\n")
	_, errOut, code = runBin(t, "validate", tab)
	if want := tab + ":3: yaml: a tab in the indentation: YAML indents with spaces only\n"; code != 1 || errOut != want {
		t.Errorf("validate with a tab: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	missing := filepath.Join(dir, "missing.yaml")
	_, errOut, code = runBin(t, "validate", missing)
	if want := missing + ": cannot read: no such file or directory\n"; code != 1 || errOut != want {
		t.Errorf("validate a missing file: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
}

// TestMintAnywhereInTheClone: mint finds the demo key from any directory of
// the repository, says what to do outside it, and writes the claims that S3
// cases need (--auth-time, --sid). The usage line marks only --sub required.
func TestMintAnywhereInTheClone(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"", "bench", ".."} {
		if _, err := os.Stat(filepath.Join(".", dir)); err != nil {
			continue
		}
		out, errOut, code := runBinIn(t, dir, "mint", "--sub", "alice", "--sid", "s-1", "--auth-time", "none")
		if code != 0 {
			t.Fatalf("mint in %q: exit %d, stderr %q", dir, code, errOut)
		}
		claims := jwtClaims(t, strings.TrimSpace(out))
		if claims["sub"] != "alice" || claims["sid"] != "s-1" || claims["auth_time"] != nil {
			t.Errorf("mint in %q: claims %v, want sub alice, sid s-1 and no auth_time", dir, claims)
		}
	}
	_, errOut, code := runBinIn(t, t.TempDir(), "mint", "--sub", "alice")
	if code != 2 || !strings.Contains(errOut, "run inside a clone of the repository, or pass --key PEM") {
		t.Errorf("mint outside the clone: exit %d, stderr %q", code, errOut)
	}
	out, _, _ := runBin(t, "help")
	if !strings.Contains(out, "sessiongate mint --sub SUB [--key PEM] [--iss URL] [--aud AUD] [--sid SID] [--auth-time now|none|UNIX]") {
		t.Errorf("usage does not show mint's optional flags as optional:\n%s", out)
	}
}

// TestVersion: version names the module version, the VCS revision (or says
// it is unknown) and the Go release.
func TestVersion(t *testing.T) {
	t.Parallel()
	out, _, code := runBin(t, "version")
	if code != 0 || !regexp.MustCompile(`^sessiongate \S+ \(revision (unknown|[0-9a-f]+( \(modified\))?( of \S+)?), go1\.\S+\)\n$`).MatchString(out) {
		t.Errorf("version: exit %d, %q", code, out)
	}
}
