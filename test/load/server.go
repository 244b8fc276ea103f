package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// server is one server process under load and the client connection the
// harness drives it through: one connection, many concurrent streams, as
// Envoy's ext_authz filter keeps one connection per worker.
type server struct {
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	conn   *grpc.ClientConn
	api    authv3.AuthorizationClient
	redis  *redisStore // sessiongate's store when it is Redis, else nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the start; it says why a server failed
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs bin with args plus --grpc-addr on a free loopback port and
// waits until its gRPC health check answers SERVING. A port taken between
// picking and binding is retried on another.
func start(name, bin string, args []string) (*server, error) {
	var last error
	for range 5 {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s, err := startOn(name, bin, append(args, "--grpc-addr", addr), addr)
		if err == nil {
			return s, nil
		}
		last = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("%s: %w", name, last)
}

func startOn(name, bin string, args []string, addr string) (*server, error) {
	s := &server{name: name, stderr: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = cleanEnv()
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.conn, s.api = conn, authv3.NewAuthorizationClient(conn)
	if err := s.waitServing(15 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("not serving: %w\n%s", err, s.stderr.String())
	}
	return s, nil
}

func (s *server) waitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := healthpb.NewHealthClient(s.conn)
	for {
		select {
		case <-s.done:
			return errors.New("exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("health: %v %v", r.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 10s before killing.
func (s *server) stop() {
	if s.conn != nil {
		s.conn.Close()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// alive reports an error if the process has exited.
func (s *server) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited: %v\n%s", s.name, s.cmd.ProcessState, s.stderr.String())
	default:
		return nil
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cleanEnv drops SESSIONGATE_* variables, which sessiongate reads as flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONGATE_") {
			env = append(env, kv)
		}
	}
	return env
}
