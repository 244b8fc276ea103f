package envoy

import (
	"context"
	"net"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/sessiongate/sessiongate/authz"
)

// MaxMessageBytes bounds a CheckRequest. It is far above any sane request so
// that oversized headers or tokens reach the engine and get a denial with a
// reason, never a transport error.
const MaxMessageBytes = 8 << 20

// Checker is the engine as the adapter sees it.
type Checker interface {
	Check(ctx context.Context, r *authz.Request) authz.Decision
}

// Service implements envoy.service.auth.v3.Authorization.
type Service struct {
	authv3.UnimplementedAuthorizationServer
	checker Checker
}

// NewService wraps a checker.
func NewService(c Checker) *Service { return &Service{checker: c} }

// Check implements the ext_authz v3 Check RPC. A request it cannot decide is
// denied (S9); it returns an error only for a request over the limits
// (RESOURCE_EXHAUSTED, as the transport does for an oversized message) and
// for a caller that has gone (its context's error: nobody reads the answer,
// so no work is spent on it). Envoy fails either closed (status_on_error).
func (s *Service) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if err := refused(ctx, HeaderFields(req)); err != nil {
		return nil, err
	}
	r := ToRequest(req)
	d := s.checker.Check(ctx, &r)
	return respond(&d, r.Headers.(authz.HeaderMap)), nil
}

// respond is ToResponse with the aliases among the request's header names
// to remove. Out of line, as encodeAnswer.
//
//go:noinline
func respond(d *authz.Decision, headers authz.HeaderMap) *authv3.CheckResponse {
	var a answer
	a.build(d)
	for k := range headers {
		a.removeAlias(k)
	}
	return a.proto()
}

// checkWire is Check for a request the server decoded itself (wire.go). It
// answers with the answer's bytes (encodeAnswer), which the server's codec
// sends as they are.
func (s *Service) checkWire(ctx context.Context, req *wireRequest) (any, error) {
	if err := refused(ctx, req.headerFields()); err != nil {
		return nil, err
	}
	r := req.toRequest()
	d := s.checker.Check(ctx, &r)
	return encodeAnswer(&d, req.fields()), nil
}

// encodeAnswer returns the encoding of d's answer, with the aliases among
// the request's header fields to remove, as a gRPC buffer: pooled for a
// large answer (a sign-in session's, with its access token), which gRPC
// frees once it has sent it. An answer with a string that is not UTF-8 is
// returned as the CheckResponse, which the generic encoder refuses, as it
// refuses Service.Check's. Kept out of line, so that the answer is never on
// the stack below the engine's frames.
//
//go:noinline
func encodeAnswer(d *authz.Decision, fields []field) any {
	var a answer
	a.build(d)
	for _, f := range fields {
		a.removeAlias(f.k)
	}
	if !a.valid() {
		return a.proto()
	}
	status, body, n := a.sizes()
	if mem.IsBelowBufferPoolingThreshold(n) {
		return mem.SliceBuffer(a.appendTo(make([]byte, 0, n), status, body))
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(n)
	*buf = a.appendTo((*buf)[:0], status, body)
	return mem.NewBuffer(buf, pool)
}

// refused is the error Check answers a request over the limits, or one
// whose caller has gone, with; nil for a request to decide.
//
// The error paths are functions of their own, kept out of line, so that
// Check's stack frame stays small: a check runs on a fresh goroutine, whose
// stack is copied each time the deepest call of the decision outgrows it.
//
//go:noinline
func refused(ctx context.Context, n int) error {
	if n > MaxHeaderFields {
		return grpcstatus.Errorf(codes.ResourceExhausted, "%d header fields, more than %d", n, MaxHeaderFields)
	}
	if err := ctx.Err(); err != nil {
		return gone(err)
	}
	return nil
}

//go:noinline
func gone(err error) error { return grpcstatus.FromContextError(err).Err() }

// Server is the gRPC server: ext_authz plus grpc.health.v1.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
}

// ServerOptions are the transport options of the gRPC server: message
// limits, and keepalive that accepts Envoy's HTTP/2 pings (Envoy may ping
// idle connections every few seconds) without GOAWAY. Exported so that the
// load harness's no-op floor server runs with exactly the same transport.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
	}
}

// NewServer builds the gRPC server with ServerOptions and then opts.
func NewServer(c Checker, opts ...grpc.ServerOption) *Server {
	opts = append(append(ServerOptions(), grpc.ForceServerCodecV2(newWireCodec())), opts...)
	g := grpc.NewServer(opts...)
	h := health.NewServer()
	g.RegisterService(&checkDesc, NewService(c))
	healthpb.RegisterHealthServer(g, h)
	s := &Server{grpc: g, health: h}
	s.SetServing(false)
	return s
}

// AuthorizationService is the name Envoy's gRPC health check may ask about.
const AuthorizationService = "envoy.service.auth.v3.Authorization"

// SetServing flips grpc.health.v1 for "" and the ext_authz service.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(AuthorizationService, st)
}

// Drain turns health to NOT_SERVING for good (later SetServing calls are
// ignored) while checks are still answered: the start of a shutdown.
func (s *Server) Drain() { s.health.Shutdown() }

// Serve serves on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Stop turns health to NOT_SERVING first so that Envoy drains, then stops
// gracefully, and forcibly once ctx is done.
func (s *Server) Stop(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}
