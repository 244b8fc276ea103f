package test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestHTTPFloodLeavesGRPC: with a low open-file limit (64), 200 HTTP
// keep-alive connections held open after one request each do not take the
// file descriptors the gRPC listener needs: a new gRPC connection is still
// accepted and answered, because the HTTP listener keeps at most half the
// limit open. (Before, every HTTP connection was accepted and held forever,
// the process ran out of descriptors and the gRPC port stopped answering.)
func TestHTTPFloodLeavesGRPC(t *testing.T) {
	t.Parallel()
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()}, serverOpts{fdLimit: 64})
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.Dial("tcp", s.httpAddr)
		if err != nil {
			t.Fatalf("after %d connections: %v", len(flood), err)
		}
		flood = append(flood, c)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	// The first ones were answered and are now idle; wait for one answer so
	// that the server has been busy with the flood.
	if _, err := http.ReadResponse(bufio.NewReader(flood[0]), nil); err != nil {
		t.Fatalf("first flood request: %v", err)
	}

	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("a new gRPC connection during the HTTP flood: %v %v", resp.GetStatus(), err)
	}
	c := &client{t: t, s: s, api: authv3.NewAuthorizationClient(conn), jar: map[string]map[string]string{}}
	wantAllowed(t, c.Check("app.test", "/", s.token(t, "alice"), false))

	// Once the flood is gone, HTTP answers again.
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	if !waitFor(10*time.Second, func() bool { code, _, err := s.httpGet("/healthz"); return err == nil && code == 200 }) {
		t.Error("/healthz does not answer after the flood")
	}
}

// TestHTTPIdleConnectionsClosed: keep-alive connections idle longer than
// --http-idle-timeout are closed by the gate (they used to stay open).
func TestHTTPIdleConnectionsClosed(t *testing.T) {
	t.Parallel()
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()},
		serverOpts{extraArgs: []string{"--http-idle-timeout", "500ms"}})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 20 {
		c, err := net.Dial("tcp", s.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	for i, c := range conns {
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		resp.Body.Close()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err = io.Copy(io.Discard, r)
		if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d: still open, idle for 15 s", i)
		}
	}
}
