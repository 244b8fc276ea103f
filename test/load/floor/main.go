// Command floor is the no-op ext_authz server that sessiongate's load harness
// measures against: the same grpc-go, the same go-control-plane messages and
// the same transport options (envoy.ServerOptions), answering OK to every
// Check without looking at it. Its cost per request is the cost of the gRPC
// call itself, the floor under any authorization server.
//
// With -answer-like-sessiongate its OK carries what sessiongate's answer to
// the harness's request carries, values of the same sizes built once at
// start from the harness's fixture by envoy.ToResponse, chosen by the
// request's host alone: for the sign-in host, a sign-in session's answer
// (session headers, access token, identity headers, the cookie header);
// for any other, a token session's (session headers). It decides nothing:
// the floor then measures the gRPC call with sessiongate's answer, so that
// what sessiongate costs beyond it is the gate's own work.
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
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/test/load/fixture"
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

// likeSessiongate answers every Check with the OK that sessiongate gives a
// request to its host, precomputed: signIn for fixture.SignInHost, token for
// any other. Shared and never mutated, like allow's.
type likeSessiongate struct {
	authv3.UnimplementedAuthorizationServer
	signIn, token *authv3.CheckResponse
}

func (l likeSessiongate) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if req.GetAttributes().GetRequest().GetHttp().GetHost() == fixture.SignInHost {
		return l.signIn, nil
	}
	return l.token, nil
}

// answersLikeSessiongate builds the answers of likeSessiongate with
// sessiongate's own rule (envoy.ToResponse) from decisions shaped like the
// ones sessiongate makes for the harness's requests, holding fixed values
// of the same lengths: the deadlines are Unix seconds as now's, the users
// and what a sign-in carries upstream are the fixture's.
func answersLikeSessiongate(now time.Time) likeSessiongate {
	sessionExpiry, idleExpiry := now.Add(8*time.Hour).Unix(), now.Add(30*time.Minute).Unix()
	upstream := append([]authz.Header{{Name: "authorization", Value: "Bearer " + fixture.SignInAccessToken}}, fixture.SignInIdentity...)
	return likeSessiongate{
		signIn: envoy.ToResponse(&authz.Decision{Allow: true, User: fixture.SignInSubject,
			SessionExpiresAt: sessionExpiry, IdleExpiresAt: idleExpiry,
			Upstream: upstream, StripCookies: true, UpstreamCookie: fixture.OtherCookies}),
		// The live scenario's one user, named as fixture.Tokens names it.
		token: envoy.ToResponse(&authz.Decision{Allow: true, User: fixture.LiveUserPrefix + "0",
			SessionExpiresAt: sessionExpiry, IdleExpiresAt: idleExpiry}),
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("grpc-addr", "127.0.0.1:9101", "listen address (loopback for the harness)")
	like := fs.Bool("answer-like-sessiongate", false, "answer OKs of the shape and size of sessiongate's answers to the harness's requests, chosen by host")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "floor: --grpc-addr:", err)
		return 1
	}
	g := grpc.NewServer(envoy.ServerOptions()...)
	if *like {
		authv3.RegisterAuthorizationServer(g, answersLikeSessiongate(time.Now()))
	} else {
		authv3.RegisterAuthorizationServer(g, allow{ok: &authv3.CheckResponse{
			Status:       &status.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		}})
	}
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
