// Command floor is the no-op ext_authz server that sessiongate's load harness
// measures against: the same grpc-go, the same go-control-plane messages and
// the same transport options (envoy.ServerOptions), answering OK to every
// Check without looking at it. Its cost per request is the cost of the gRPC
// call itself, the floor under any authorization server.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/envoy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

// allow answers every Check. One shared, never mutated response: marshalling
// only reads it.
type allow struct {
	authv3.UnimplementedAuthorizationServer
	ok *authv3.CheckResponse
}

func (a allow) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.ok, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("grpc-addr", "127.0.0.1:9101", "listen address (loopback for the harness)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "floor: --grpc-addr:", err)
		return 1
	}
	g := grpc.NewServer(envoy.ServerOptions()...)
	authv3.RegisterAuthorizationServer(g, allow{ok: &authv3.CheckResponse{
		Status:       &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}})
	h := health.NewServer() // SERVING for "" from the start
	healthpb.RegisterHealthServer(g, h)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
		g.GracefulStop()
		return 0
	case err := <-errc:
		fmt.Fprintln(stderr, "floor:", err)
		return 1
	}
}
