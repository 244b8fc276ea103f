package envoy

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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
	return authz.Decision{Allow: true}
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

// rawHeaders is a CheckRequest whose header_map holds n copies of one field.
func rawHeaders(n int, key, value string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, n)}
	for i := range hm.Headers {
		hm.Headers[i] = &corev3.HeaderValue{Key: key, RawValue: []byte(value)}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Host: "a", Path: "/", HeaderMap: hm}}}}
}

// TestRepeatedHeaderFieldsLinear: joining n copies of one field allocates
// in proportion to the joined value, not to its square. (Joining by
// concatenation copied the value so far per copy: about n² bytes, 16 MB
// for these 4,000 one-byte fields; one message of 160,000 cost seconds.)
func TestRepeatedHeaderFieldsLinear(t *testing.T) {
	const n = 4000
	for _, key := range []string{"accept", "cookie"} {
		req := rawHeaders(n, key, "x")
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := ToRequest(req)
		runtime.ReadMemStats(&after)
		if got := r.Headers.Get(key); len(got) < 2*n-1 {
			t.Fatalf("%s: joined value of %d bytes, want at least %d", key, len(got), 2*n-1)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("%s: %d copies of one field allocated %d bytes to join, want well under 1 MiB", key, n, alloc)
		}
	}
}

// countingChecker counts the requests that reach the engine.
type countingChecker struct{ n *int }

func (c countingChecker) Check(context.Context, *authz.Request) authz.Decision {
	*c.n++
	return authz.Decision{Allow: true}
}

// TestHeaderFieldBound: a CheckRequest with more than MaxHeaderFields
// fields is refused with RESOURCE_EXHAUSTED before any work, like an
// oversized message; one at the bound is decided.
func TestHeaderFieldBound(t *testing.T) {
	var n int
	s := NewService(countingChecker{&n})
	if _, err := s.Check(context.Background(), rawHeaders(MaxHeaderFields, "accept", "x")); err != nil {
		t.Fatalf("at the bound: %v", err)
	}
	_, err := s.Check(context.Background(), rawHeaders(MaxHeaderFields+1, "accept", "x"))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("over the bound: err %v, want RESOURCE_EXHAUSTED", err)
	}
	if n != 1 {
		t.Errorf("%d requests reached the engine, want only the one at the bound", n)
	}
}

// TestCanceledCheckDoesNoWork: a check whose caller has gone (Envoy timed
// out, the client cancelled) is not decided: nobody would read the answer.
func TestCanceledCheckDoesNoWork(t *testing.T) {
	var n int
	s := NewService(countingChecker{&n})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Check(ctx, rawHeaders(3, "cookie", "a=b"))
	if status.Code(err) != codes.Canceled {
		t.Errorf("err %v, want CANCELED", err)
	}
	if n != 0 {
		t.Errorf("a cancelled check reached the engine")
	}
}
