// Package redistest starts real redis-server processes on free loopback
// ports for tests: a standalone server that can be stopped, killed and
// restarted on the same port and data, a Redis Cluster of masters, a master
// with replicas and sentinels (redis-server --sentinel), and a TLS-only
// server with a certificate made for the test. It is test infrastructure,
// never linked into the product.
//
// When redis-server (Debian package redis-server) is missing, tests are
// skipped, unless SESSIONGATE_REQUIRE_EXTERNAL=1 (CI), when they fail.
package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Require skips (or, in CI, fails) t when the Redis binaries are missing.
func Require(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			msg := bin + " not found: install the Debian package redis-server"
			if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// Server is one redis-server process. Its data (append-only file) lives in
// a temporary directory, so a restart finds what the server had written, as
// a production Redis with persistence would.
type Server struct {
	t    testing.TB
	Port int
	args []string
	tls  *tls.Config // nil: plain TCP

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *bytes.Buffer
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Start starts a standalone server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

func start(t testing.TB, cluster bool) *Server {
	t.Helper()
	dir := t.TempDir()
	return launch(t, cluster, nil, func(port int) []string {
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "yes", "--appendfsync", "always",
			"--protected-mode", "no", "--loglevel", "warning", "--daemonize", "no"}
		if cluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file",
				filepath.Join(dir, "nodes.conf"), "--cluster-node-timeout", "2000")
		}
		return args
	})
}

// launch starts redis-server with the arguments that args gives for a free
// port (trying a few ports, in case another process takes one first) and
// stops it when the test ends. tlsConf, when set, is how to reach it.
func launch(t testing.TB, cluster bool, tlsConf *tls.Config, args func(port int) []string) *Server {
	t.Helper()
	Require(t)
	var lastErr error
	for range 5 {
		s := &Server{t: t, Port: freePort(t, cluster), tls: tlsConf}
		s.args = args(s.Port)
		if lastErr = s.startProcess(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

func (s *Server) startProcess() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command("redis-server", s.args...)
	s.out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond, TLSConfig: s.tls})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server not answering: %v: %s", err, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server (SIGTERM: it writes its data and exits).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	s.cmd = nil
}

// Kill kills the server at once (SIGKILL), as a crash or a lost host would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Pause stops the server's process (SIGSTOP): connections stay open and
// nothing is answered, as with a Redis hung on a slow disk or a host frozen
// by its hypervisor. Resume (or the end of the test) continues it.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.t.Cleanup(s.Resume) // before Stop, which cleanups registered earlier run after
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart starts the stopped server again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.startProcess(); err != nil {
		s.t.Fatalf("redis-server restart: %v", err)
	}
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.tls})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*Server
}

// Addrs are the nodes' host:port.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.Addr())
	}
	return a
}

// URL is the cluster's redis+cluster:// URL.
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs(), ",") }

// StartCluster starts n cluster-enabled servers (n >= 3), joins them with
// redis-cli --cluster create and waits until every node reports the cluster
// ok and knows every other.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{}
	for range n {
		c.Nodes = append(c.Nodes, start(t, true))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, node := range c.Nodes {
		cl := node.Client()
		for {
			info, err := cl.ClusterInfo(ctx).Result()
			nodes, err2 := cl.ClusterNodes(ctx).Result()
			if err == nil && err2 == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Count(strings.TrimSpace(nodes), "\n")+1 == n && !strings.Contains(nodes, "handshake") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %v %v\n%s", node.Addr(), err, err2, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// freePort finds a free loopback port; for cluster nodes, the bus port
// (port+10000) must be free too.
func freePort(t testing.TB, cluster bool) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if !cluster {
			l.Close()
			return p
		}
		if p+10000 > 65535 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}
