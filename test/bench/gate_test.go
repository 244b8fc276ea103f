package bench

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessiongate/sessiongate/audit"
	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/test/load/fixture"
	"github.com/sessiongate/sessiongate/token"
)

// gate is sessiongate's engine wired as cmd/sessiongate's serve wires it.
type gate struct {
	fx     *fixture.Fixture
	engine *authz.Engine
	store  *memory.Store
	reg    *prometheus.Registry
	keys   *oidc.KeyRing // the login.oidc policy's session keys
}

// newGate wires a gate on the policy directory of fx; a nil fx gets a new
// one. cacheSize 0 is the default verified-token cache.
func newGate(tb testing.TB, fx *fixture.Fixture, cacheSize int) *gate {
	tb.Helper()
	if fx == nil {
		var err error
		if fx, err = fixture.New(tb.TempDir()); err != nil {
			tb.Fatal(err)
		}
	}
	// Beside the fixture's policy, the login.oidc policy whose session
	// signedIn presents, as the load harness serves it.
	_, keys, err := fixture.WriteSignIn(fx.Dir, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	rp, err := oidc.New(oidc.Options{Keys: keys})
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	tokens := token.NewProvider(token.Options{Observer: m, CacheSize: cacheSize})
	w, err := policy.NewWatcher(fx.Dir, policy.WatcherOptions{Options: policy.Options{
		NewVerifier: func(_ string, tc policy.TokenConfig) (authz.Verifier, error) {
			return tokens.Verifier(token.Config(tc))
		},
		NewSignIn: func(name string, _ policy.OIDCConfig) (authz.SignIn, authz.Verifier, error) {
			si, err := rp.SignIn(name, fixture.SignInConfig())
			if err != nil {
				return nil, nil, err
			}
			return si, si.AccessVerifier(func(uri string) (authz.Verifier, error) {
				return tokens.VerifierFor(name, token.Config{JWKSURI: uri})
			}), nil
		},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	m.Policies(w.Current().Names())
	store, err := memory.New(memory.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	engine, err := authz.NewEngine(authz.Options{
		Policies: w,
		Store:    metrics.InstrumentStore(store, m),
		Events:   authz.Fanout{m, audit.New(io.Discard, audit.Options{})},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &gate{fx: fx, engine: engine, store: store, reg: reg, keys: keys}
}

// check runs one CheckRequest through the adapter and the engine, as the
// gRPC service does.
func (g *gate) check(ctx context.Context, req *authv3.CheckRequest) *authv3.CheckResponse {
	r := envoy.ToRequest(req)
	d := g.engine.Check(ctx, &r)
	return envoy.ToResponse(&d)
}

// signIn opens a session for a new token of sub and returns the request
// that presents token and session cookie.
func (g *gate) signIn(tb testing.TB, sub string) *authv3.CheckRequest {
	tb.Helper()
	tok, err := g.fx.Token(sub, time.Now().Add(-time.Minute))
	if err != nil {
		tb.Fatal(err)
	}
	resp := g.check(context.Background(), fixture.Request(appPath, tok, "", false))
	id, ok := fixture.SessionCookie(resp)
	if !ok {
		tb.Fatalf("sign-in of %s: no session cookie in %v", sub, resp)
	}
	return fixture.Request(appPath, tok, id, false)
}

// apiClient signs sub in and returns the request of an API client with
// that session: the token, no session cookie (the engine continues the
// token's scope's current session).
func (g *gate) apiClient(tb testing.TB, sub string) *authv3.CheckRequest {
	tb.Helper()
	h := g.signIn(tb, sub).GetAttributes().GetRequest().GetHttp().GetHeaders()
	return fixture.Request(appPath, strings.TrimPrefix(h["authorization"], "Bearer "), "", false)
}

// signedIn begins a live session of the login.oidc policy, as its callback
// would have, and returns the request of the browser that presents its
// cookie: the answer carries the access token and identity headers
// upstream, and the request's other cookies.
func (g *gate) signedIn(tb testing.TB) *authv3.CheckRequest {
	tb.Helper()
	s, err := fixture.NewSignIn(g.keys)
	if err != nil {
		tb.Fatal(err)
	}
	if err := g.store.Begin(context.Background(), s); err != nil {
		tb.Fatal(err)
	}
	req := fixture.Request(appPath, "", s.ID, true)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Host, h.Headers[":authority"] = fixture.SignInHost, fixture.SignInHost
	return req
}

const appPath = "/app/orders?page=2"
