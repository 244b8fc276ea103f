package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// Paths of the configuration under test, relative to this package.
const (
	repoRoot       = ".."
	dockerfilePath = "../Dockerfile"
	envoyExample   = "../envoy/examples/envoy.yaml"
	kubernetesDir  = "kubernetes"
	composeFile    = "compose/compose.yaml"
	composeEnvoy   = "compose/envoy.yaml"
	istioDir       = "istio"
)

// stampArgs are the --build-arg values of the test build, which
// `sessiongate version` must show.
var stampArgs = map[string]string{"VERSION": "v0.0.0-deploy-test", "REVISION": "0123456789abcdef"}

// binPath is the sessiongate binary that TestMain builds with the
// Dockerfile's own build command: the binary the image would contain.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "sessiongate-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	df, err := parseDockerfileWith(dockerfilePath, stampArgs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	binPath = filepath.Join(tmp, "sessiongate")
	if err := df.build.run(repoRoot, binPath); err != nil {
		fmt.Fprintln(os.Stderr, "deploy: the Dockerfile's build command fails here:", err)
		return 1
	}
	return m.Run()
}

// run executes the go build command with its environment, writing the
// binary to out instead of the image path.
func (b goBuild) run(dir, out string) error {
	args := append([]string(nil), b.args...)
	args[b.outIndex] = out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), b.env...)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s go %s: %v\n%s", strings.Join(b.env, " "), strings.Join(args, " "), err, o)
	}
	return nil
}

// cleanEnv is the test's environment without SESSIONGATE_* variables, which
// the binary would read as flags, plus extra.
func cleanEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONGATE_") {
			env = append(env, kv)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// runBin runs the binary (not serve) and returns its output and exit status.
func runBin(t *testing.T, args ...string) (out string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = cleanEnv(nil)
	o, err := cmd.CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return string(o), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run sessiongate %v: %v", args, err)
	}
	return string(o), 0
}

// freePort picks a free loopback port by listening on :0 and closing.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// syncBuffer collects a process's output while it runs.
type syncBuffer = testutil.SyncBuffer

// process is a child process that the test stops (SIGTERM, then SIGKILL
// after 20s) when it ends.
type process struct {
	out  syncBuffer
	done chan struct{}
}

func startProcess(t *testing.T, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within 20s of SIGTERM", bin)
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) output() string { return p.out.String() }

// server is a running `sessiongate serve`.
type server struct {
	*process
	grpcAddr, httpAddr string
}

// startServe runs `sessiongate serve` with exactly the environment env (the
// configuration under test), except the listen addresses, which move to
// free loopback ports, and what override replaces. It waits until /readyz
// answers 200.
func startServe(t *testing.T, env, override map[string]string) *server {
	t.Helper()
	return startServeArgs(t, env, override, "serve")
}

// startServeArgs is startServe with the command line args (the image's CMD,
// a container's args) instead of plain serve.
func startServeArgs(t *testing.T, env, override map[string]string, args ...string) *server {
	t.Helper()
	s := &server{grpcAddr: "127.0.0.1:" + freePort(t), httpAddr: "127.0.0.1:" + freePort(t)}
	merged := maps.Clone(env)
	maps.Copy(merged, override)
	merged["SESSIONGATE_GRPC_ADDR"] = s.grpcAddr
	merged["SESSIONGATE_HTTP_ADDR"] = s.httpAddr
	s.process = startProcess(t, cleanEnv(merged), binPath, args...)
	// /readyz checks afresh, gRPC health follows it once a second: wait for
	// both, as Kubernetes and Envoy each ask one of them.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, err := s.get("/readyz")
		st := healthpb.HealthCheckResponse_UNKNOWN
		if err == nil {
			st, err = s.health("")
		}
		switch {
		case err == nil && code == http.StatusOK && st == healthpb.HealthCheckResponse_SERVING:
			return s
		case s.exited():
			t.Fatalf("sessiongate serve exited before it was ready:\n%s", s.output())
		case time.Now().After(deadline):
			t.Fatalf("sessiongate serve not ready within 15s (/readyz %d, health %v, %v):\n%s", code, st, err, s.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitPing waits up to 10s for a Redis server at addr to answer PING; a
// server that wants a password first answers too (NOAUTH).
func waitPing(addr string, p *process) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ping(addr, "")
		switch {
		case err == nil || errors.Is(err, errNoAuth):
			return nil
		case p.exited():
			return fmt.Errorf("exited: %v", err)
		case time.Now().After(deadline):
			return fmt.Errorf("no PONG within 10s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// errNoAuth is Redis refusing a command until the client authenticates.
var errNoAuth = errors.New("NOAUTH: Redis wants a password")

// ping sends PING to the Redis server at addr, after AUTH with password
// unless it is empty, and wants PONG.
func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+OK\r\n" {
			return fmt.Errorf("AUTH answered %q", line)
		}
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	switch {
	case err != nil:
		return err
	case strings.HasPrefix(line, "-NOAUTH"):
		return errNoAuth
	case line != "+PONG\r\n":
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// get sends GET path to the HTTP listener.
func (s *server) get(path string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + s.httpAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// health asks grpc.health.v1 about service on the gRPC listener.
func (s *server) health(service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

// requireExternal skips a test whose external binary is missing, unless
// SESSIONGATE_REQUIRE_EXTERNAL=1 (CI), where it fails.
func requireExternal(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (%s): %v", name, install, err)
	if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; set SESSIONGATE_REQUIRE_EXTERNAL=1 to make this a failure")
	return ""
}
