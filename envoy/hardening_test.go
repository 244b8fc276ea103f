package envoy

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/authz"
)

// slowChecker allows everything; a request for /slow waits for release.
type slowChecker struct {
	entered, release chan struct{}
}

func (c slowChecker) Check(_ context.Context, r *authz.Request) authz.Decision {
	if r.Path == "/slow" {
		c.entered <- struct{}{}
		<-c.release
	}
	return authz.Decision{Allow: true, ExpiresIn: -1}
}

// TestServerStormLeavesNothing: after a storm of short-lived connections and
// a graceful stop that lets an in-flight check finish, the server has left
// no goroutine behind.
func TestServerStormLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := slowChecker{entered: make(chan struct{}), release: make(chan struct{})}
	srv := NewServer(c)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	srv.SetServing(true)

	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	check := func(conn *grpc.ClientConn, path string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "a", Path: path}}}})
		if err == nil && resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Errorf("check %s: %v", path, resp.GetStatus())
		}
		return err
	}
	for range 300 {
		conn := dial()
		if err := check(conn, "/"); err != nil {
			t.Fatal(err)
		}
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}

	slow := dial()
	defer slow.Close()
	inflight := make(chan error, 1)
	go func() { inflight <- check(slow, "/slow") }()
	<-c.entered
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Stop(ctx)
		close(stopped)
	}()
	// GracefulStop closes the listener first: once it refuses connections,
	// the stop is under way with the check still in flight.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		conn, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts 5s into the stop")
		}
	}
	close(c.release)
	if err := <-inflight; err != nil {
		t.Errorf("the check in flight during the graceful stop: %v", err)
	}
	<-stopped
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestRawCookieCrumbs: cookie fields repeated in header_map (HTTP/2 crumbs,
// RFC 9113 §8.2.3) join with "; ", so that a cookie in any crumb is found;
// other repeated fields join with ",".
func TestRawCookieCrumbs(t *testing.T) {
	hm := &corev3.HeaderMap{}
	for _, kv := range [][2]string{{"cookie", "theme=dark"}, {"cookie", "__Host-sessiongate=abc"}, {"accept", "text/html"}, {"accept", "*/*"}} {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	r := ToRequest(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{HeaderMap: hm}}}})
	if v, ok := authz.CookieValue(r.Headers.Get("cookie"), "__Host-sessiongate"); !ok || v != "abc" {
		t.Errorf("cookie %q: the second crumb's cookie is lost", r.Headers.Get("cookie"))
	}
	if got := r.Headers.Get("accept"); got != "text/html,*/*" {
		t.Errorf("accept = %q, want the fields joined with a comma", got)
	}
}
