package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// binPath is the sessiongate binary built once by TestMain: the only global.
var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	// These tests mostly wait (for timeouts to pass, processes to start):
	// run more of them at once than there are CPUs, unless told otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit && runtime.GOMAXPROCS(0) < 8 {
		_ = flag.Set("test.parallel", "8")
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "sessiongate-blackbox-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test: module root:", err)
		return 1
	}
	binPath = filepath.Join(tmp, "sessiongate")
	args := []string{"build", "-o", binPath}
	// Optional: a race-enabled binary, and build tags (e.g. vtprotobuf for
	// the fast response codec), to run the same tests against those builds.
	if os.Getenv("SESSIONGATE_TEST_RACE_BINARY") != "" {
		args = append(args, "-race")
	}
	if tags := os.Getenv("SESSIONGATE_TEST_TAGS"); tags != "" {
		args = append(args, "-tags", tags)
	}
	build := exec.Command("go", append(args, "./cmd/sessiongate")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "test: go build ./cmd/sessiongate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// ---------------------------------------------------------------------------
// Policies

const (
	testIssuer     = "https://idp.sessiongate.test/realms/app"
	testAudience   = "app"
	loginURL       = "https://login.sessiongate.test/start"
	signedOutURL   = "https://login.sessiongate.test/signed-out"
	cookieName     = "__Host-sessiongate"
	jwksFileName   = "jwks.json"
	reasonHeader   = "x-sessiongate-reason"
	userHeader     = "x-sessiongate-user"
	expiresHeader  = "x-sessiongate-session-expires-at"
	idleHeader     = "x-sessiongate-idle-expires-at"
	expiresInHdr   = "x-sessiongate-expires-in"
	overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
)

// pol is one policy file in the YAML schema of DESIGN §2.
type pol struct {
	Hosts          []string
	DryRun         bool
	Absolute, Idle time.Duration
	WarnBefore     time.Duration
	Passive        []string
	Bypass         []string
	LogoutPath     string // default none
	Audiences      []string
	From           []string // token.from; default the Authorization header
	Login          string   // login.url; default loginURL
	// SessionExtra and TokenExtra are raw lines ("  key: value\n") added
	// to the session and token sections.
	SessionExtra, TokenExtra string
}

func (p pol) yaml() string {
	var b strings.Builder
	q := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	fmt.Fprintf(&b, "hosts: %s\n", q(p.Hosts))
	if p.DryRun {
		b.WriteString("mode: dry-run\n")
	} else {
		b.WriteString("mode: enforce\n")
	}
	abs, idle := p.Absolute, p.Idle
	if abs == 0 {
		abs = time.Hour
	}
	if idle == 0 {
		idle = 30 * time.Minute
	}
	fmt.Fprintf(&b, "session:\n  absolute_timeout: %s\n  idle_timeout: %s\n", abs, idle)
	if p.WarnBefore > 0 {
		fmt.Fprintf(&b, "  warn_before: %s\n", p.WarnBefore)
	}
	if len(p.Passive) > 0 {
		fmt.Fprintf(&b, "  passive_paths: %s\n", q(p.Passive))
	}
	b.WriteString(p.SessionExtra)
	auds := p.Audiences
	if len(auds) == 0 {
		auds = []string{testAudience}
	}
	fmt.Fprintf(&b, "token:\n  issuer: %s\n  audiences: %s\n  jwks_file: %s\n", testIssuer, q(auds), jwksFileName)
	if len(p.From) > 0 {
		fmt.Fprintf(&b, "  from: %s\n", q(p.From))
	}
	b.WriteString(p.TokenExtra)
	login := p.Login
	if login == "" {
		login = loginURL
	}
	fmt.Fprintf(&b, "login:\n  url: %s\n  return_param: rd\n  reauth_params: {prompt: login, max_age: \"0\"}\n", login)
	if p.LogoutPath != "" {
		fmt.Fprintf(&b, "logout:\n  path: %s\n  redirect_url: %s\n", p.LogoutPath, signedOutURL)
	}
	if len(p.Bypass) > 0 {
		fmt.Fprintf(&b, "bypass: %s\n", q(p.Bypass))
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Server

// syncBuffer is an io.Writer safe for the exec copier and test readers.
type syncBuffer = testutil.SyncBuffer

// server is one running sessiongate process.
type server struct {
	t        *testing.T
	dir      string // policy directory
	idp      *idp.IDP
	grpcAddr string
	httpAddr string
	cmd      *exec.Cmd
	stdout   *syncBuffer // audit JSON lines
	stderr   *syncBuffer // logs
	done     chan struct{}
	waitErr  error // valid after done is closed
	conn     *grpc.ClientConn

	mu      sync.Mutex
	secrets map[string]bool // token and cookie values that must never be logged
}

type serverOpts struct {
	extraArgs []string
	// viaEnv passes --policies, --grpc-addr and --http-addr as SESSIONGATE_*
	// environment variables instead of flags.
	viaEnv bool
	// setup, if set, lays out the policy directory further before start.
	setup func(dir string)
	// fdLimit, if set, is the process's open-file limit (soft and hard).
	fdLimit int
	// cgroup, if set, is a cgroup directory the process joins (writing its
	// pid to cgroup.procs) before sessiongate starts.
	cgroup string
	// env: NAME=value set in the process's environment, replacing the
	// test's; unsetEnv: names taken out of it.
	env, unsetEnv []string
	// live waits only for the process to answer /healthz, not for it to
	// be ready, for tests of what makes it not ready.
	live bool
}

// startServer writes policies (name → YAML) and the JWKS of a fresh IdP into
// a temporary directory, starts the binary on free loopback ports and waits
// until it is ready (GET /readyz 200 and grpc health SERVING).
func startServer(t *testing.T, policies map[string]string) *server {
	t.Helper()
	return startServerOpts(t, policies, serverOpts{})
}

func startServerOpts(t *testing.T, policies map[string]string, o serverOpts) *server {
	t.Helper()
	d := newIDP(t)
	dir := t.TempDir()
	if err := d.WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	for name, body := range policies {
		writeFile(t, filepath.Join(dir, name+".yaml"), body)
	}
	if o.setup != nil {
		o.setup(dir)
	}
	s := &server{t: t, dir: dir, idp: d, secrets: map[string]bool{}}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		lastErr = s.start(o)
		if lastErr == nil {
			break
		}
		if !strings.Contains(lastErr.Error(), "address already in use") {
			t.Fatalf("sessiongate did not start: %v", lastErr)
		}
	}
	if lastErr != nil {
		t.Fatalf("sessiongate did not start after retries: %v", lastErr)
	}
	conn, err := grpc.NewClient(s.grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	s.conn = conn
	t.Cleanup(func() {
		// /metrics while the process runs; stdout and stderr once it has
		// exited, when the pipes are drained.
		metrics := s.scrapeForScan()
		conn.Close()
		s.stop()
		s.assertNoSecretsLeaked(metrics)
		if t.Failed() {
			t.Logf("sessiongate stderr:\n%s", tail(s.stderr.String(), 8000))
			t.Logf("sessiongate stdout:\n%s", tail(s.stdout.String(), 4000))
		}
	})
	if o.live {
		if !waitFor(15*time.Second, func() bool { code, _, err := s.httpGet("/healthz"); return err == nil && code == 200 }) {
			t.Fatalf("sessiongate not answering /healthz\nstderr:\n%s", s.stderr.String())
		}
		return s
	}
	if err := s.waitReady(15 * time.Second); err != nil {
		t.Fatalf("sessiongate not ready: %v\nstderr:\n%s", err, s.stderr.String())
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (s *server) start(o serverOpts) error {
	s.grpcAddr, s.httpAddr = freeAddr(s.t), freeAddr(s.t)
	args := []string{"serve", "--log-level", "debug", "--shutdown-timeout", "5s", "--drain-delay", "0s"}
	env := cleanEnv()
	if o.viaEnv {
		env = append(env, "SESSIONGATE_POLICIES="+s.dir, "SESSIONGATE_GRPC_ADDR="+s.grpcAddr, "SESSIONGATE_HTTP_ADDR="+s.httpAddr)
	} else {
		args = append(args, "--policies", s.dir, "--grpc-addr", s.grpcAddr, "--http-addr", s.httpAddr)
	}
	cmd := exec.Command(binPath, append(args, o.extraArgs...)...)
	// The shell sets the process up and execs, so the pid is the server's.
	var setup []string
	if o.fdLimit > 0 {
		setup = append(setup, fmt.Sprintf("ulimit -n %d", o.fdLimit))
	}
	if o.cgroup != "" {
		setup = append(setup, "echo $$ > "+shellQuote(filepath.Join(o.cgroup, "cgroup.procs")))
	}
	if len(setup) > 0 {
		script := strings.Join(setup, " && ") + ` && exec "$0" "$@"`
		cmd = exec.Command("sh", append([]string{"-c", script, binPath}, append(args, o.extraArgs...)...)...)
	}
	cmd.Env = editEnv(env, o.env, o.unsetEnv)
	s.stdout, s.stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	// A port taken between picking and binding makes the process exit at
	// once; notice that quickly so the caller can retry on other ports.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("exited early (%v): %s", s.waitErr, s.stderr.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", s.grpcAddr, 100*time.Millisecond); err == nil {
			c.Close()
			if c2, err := net.DialTimeout("tcp", s.httpAddr, 100*time.Millisecond); err == nil {
				c2.Close()
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-s.done:
		return fmt.Errorf("exited early (%v): %s", s.waitErr, s.stderr.String())
	default:
	}
	return nil // let waitReady report what is wrong
}

func newIDP(t *testing.T) *idp.IDP {
	t.Helper()
	d, err := idp.New(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runBin runs the binary with args (not serve) and returns its output and
// exit status.
func runBin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBinIn(t, "", args...)
}

// runBinIn is runBin in the working directory dir ("" for the test's).
func runBinIn(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run sessiongate %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// cleanEnv is the test's environment without SESSIONGATE_* variables, which
// the binary would read as flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// editEnv returns env with the NAME=value pairs of set (replacing any of
// the same name) and without the names of unset.
func editEnv(env, set, unset []string) []string {
	drop := map[string]bool{}
	for _, name := range unset {
		drop[name] = true
	}
	for _, kv := range set {
		name, _, _ := strings.Cut(kv, "=")
		drop[name] = true
	}
	var out []string
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !drop[name] {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// shellQuote quotes s as one word for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// freeAddr picks a free loopback port by listening on :0 and closing.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("process exited: %v", s.waitErr)
		default:
		}
		code, body, err := s.httpGet("/readyz")
		switch {
		case err != nil:
			last = err
		case code != 200:
			last = fmt.Errorf("/readyz: %d %s", code, body)
		default:
			st, err := s.healthStatus("")
			if err == nil && st == healthpb.HealthCheckResponse_SERVING {
				return nil
			}
			last = fmt.Errorf("grpc health: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func (s *server) healthStatus(service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn := s.conn
	if conn == nil {
		c, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return 0, err
		}
		defer c.Close()
		conn = c
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return resp.GetStatus(), nil
}

func (s *server) httpGet(path string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + s.httpAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (s *server) metrics(t *testing.T) string {
	t.Helper()
	code, body, err := s.httpGet("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	return body
}

// signal sends sig to the process.
func (s *server) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends SIGTERM and waits; the process must exit 0 within 10s.
func (s *server) stop() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.t.Errorf("sessiongate did not exit within 10s of SIGTERM; killing")
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if s.waitErr != nil {
		s.t.Errorf("sessiongate exited with %v, want status 0", s.waitErr)
	}
}

// remember records a value that must never appear in logs or metrics.
func (s *server) remember(v string) {
	if len(v) < 16 {
		return
	}
	s.mu.Lock()
	s.secrets[v] = true
	s.mu.Unlock()
}

// scrapeForScan returns /metrics, or "" when the process is gone.
func (s *server) scrapeForScan() string {
	select {
	case <-s.done:
		return ""
	default:
	}
	_, body, err := s.httpGet("/metrics")
	if err != nil {
		s.t.Errorf("GET /metrics for the secret scan: %v", err)
	}
	return body
}

// assertNoSecretsLeaked scans stdout, stderr and /metrics for every token
// minted and every session cookie value handed out during the test (S7).
func (s *server) assertNoSecretsLeaked(metrics string) {
	s.t.Helper()
	for _, l := range s.leaks(metrics) {
		s.t.Error(l)
	}
}

// leaks lists where remembered secrets appear in the process's output.
func (s *server) leaks(metrics string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	outputs := map[string]string{"stdout": s.stdout.String(), "stderr": s.stderr.String(), "/metrics": metrics}
	return findSecrets(s.secrets, outputs)
}

func findSecrets(secrets map[string]bool, outputs map[string]string) []string {
	var out []string
	for v := range secrets {
		for where, text := range outputs {
			if strings.Contains(text, v) {
				out = append(out, fmt.Sprintf("secret %.12s… (len %d) appears in %s", v, len(v), where))
				continue
			}
			// A signature alone identifies a token as well as the whole.
			if i := strings.LastIndexByte(v, '.'); i > 0 && len(v)-i > 20 && strings.Contains(text, v[i+1:]) {
				out = append(out, fmt.Sprintf("signature of token %.12s… appears in %s", v, where))
			}
		}
	}
	return out
}

// auditEvents parses stdout's JSON lines.
func (s *server) auditEvents(t *testing.T) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Errorf("stdout line is not JSON: %q", line)
			continue
		}
		evs = append(evs, m)
	}
	return evs
}

// findEvents returns the audit events whose fields equal every given pair.
func (s *server) findEvents(t *testing.T, want map[string]string) []map[string]any {
	t.Helper()
	var out []map[string]any
next:
	for _, ev := range s.auditEvents(t) {
		for k, v := range want {
			if fmt.Sprint(ev[k]) != v {
				continue next
			}
		}
		out = append(out, ev)
	}
	return out
}

// waitEvents waits up to 3s for at least n audit events matching want (the
// process's stdout reaches the test through a pipe, a little later than the
// response) and returns all that match.
func (s *server) waitEvents(t *testing.T, n int, want map[string]string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	waitFor(3*time.Second, func() bool {
		evs = s.findEvents(t, want)
		return len(evs) >= n
	})
	return evs
}

// waitLog waits up to 3s for stderr to contain substr.
func (s *server) waitLog(substr string) bool {
	return waitFor(3*time.Second, func() bool { return strings.Contains(s.stderr.String(), substr) })
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile swaps a file atomically, as ConfigMap updates and editors do.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp-" + randHex(4)
	writeFile(t, tmp, body)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// Tokens

type claimOpt func(map[string]any)

func authTime(ts int64) claimOpt { return func(c map[string]any) { c["auth_time"] = ts } }
func claim(k string, v any) claimOpt {
	return func(c map[string]any) {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
}

func baseClaims(sub string, opts ...claimOpt) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": sub,
		"iat": now, "nbf": now, "exp": now + 600, "auth_time": now,
		"jti": randHex(8),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// token mints a valid token for sub signed by the server's IdP; options
// edit the claims.
func (s *server) token(t *testing.T, sub string, opts ...claimOpt) string {
	t.Helper()
	tok, err := s.idp.Mint(baseClaims(sub, opts...))
	if err != nil {
		t.Fatal(err)
	}
	s.remember(tok)
	return tok
}

// mustClaimInt reads an integer claim from a token's payload (unverified).
func mustClaimInt(t *testing.T, tok, name string) int64 {
	t.Helper()
	f, ok := jwtClaims(t, tok)[name].(float64)
	if !ok {
		t.Fatalf("claim %s missing or not a number", name)
	}
	return int64(f)
}

// jwtClaims decodes the payload of a compact JWS without verifying it.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %.20s…", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
