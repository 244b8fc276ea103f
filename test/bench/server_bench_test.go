package bench

import (
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

// BenchmarkServer is the whole server path over real gRPC on loopback, in
// one process so that `-cpuprofile` and `-memprofile` show it end to end:
// unmarshal, ToRequest, engine.Check (verifier cache, store, metrics),
// ToResponse, marshal. 50 concurrent streams over one connection, as the
// load harness drives the built binary (test/load). Client and server share
// the process: ns/op is for comparing versions, not a throughput figure.
func BenchmarkServer(b *testing.B) {
	g := newGate(b, nil, 0)
	srv := envoy.NewServer(g.engine)
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	b.Cleanup(func() { srv.Stop(context.Background()) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	api := authv3.NewAuthorizationClient(conn)
	cases := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"live-session", g.signIn(b, "alice")},
		{"oidc-session", g.signedIn(b)},
		{"deny-302-browser", fixture.Request(appPath, "", "", true)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(25) // × GOMAXPROCS 2 = 50 streams
			b.ReportAllocs()
			defer reportCPU(b)()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := api.Check(ctx, c.req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
