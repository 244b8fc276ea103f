package envoy

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/token"
)

// The adapter is fuzzed through the whole decision — ToRequest, a real
// Engine with the real token verifier and memory store, ToResponse — since
// what matters is what Envoy would do with the answer.

const (
	fuzzIssuer = "https://idp.example.com"
	fuzzLogin  = "https://login.example.com/start"
	fuzzOut    = "https://login.example.com/signed-out"
)

// fuzzSubjects have a valid token each, until 2100 and without auth_time (a
// sign-in that old would be over its absolute lifetime). A fixed Ed25519 key
// signs them deterministically, so the seeds holding them stay valid.
var fuzzSubjects = []string{"alice", "bob"}

type fuzzGate struct {
	eng    *authz.Engine
	tokens map[string]string // token → subject
}

func newFuzzGate(f *testing.F) *fuzzGate {
	f.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	d, err := idp.FromPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		f.Fatal(err)
	}
	jwks := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, d.JWKS(), 0o644); err != nil {
		f.Fatal(err)
	}
	// The seed tokens stay valid until 2100 on the wall clock: a lifetime
	// far over the default max_lifetime, allowed here.
	v, err := token.NewProvider(token.Options{}).Verifier(token.Config{Issuer: fuzzIssuer, Audiences: []string{"app"}, JWKSFile: jwks,
		MaxLifetime: 100 * 365 * 24 * time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	g := &fuzzGate{tokens: map[string]string{}}
	for _, sub := range fuzzSubjects {
		tok, err := d.Mint(map[string]any{"iss": fuzzIssuer, "aud": "app", "sub": sub, "sid": sub + "-sid",
			"iat": 1_700_000_000, "exp": 4_102_444_800})
		if err != nil {
			f.Fatal(err)
		}
		g.tokens[tok] = sub
	}
	store, err := memory.New(memory.Options{Shards: 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	p := &authz.Policy{
		Name: "app", Hosts: []string{"*"},
		AbsoluteTimeout: 8 * time.Hour, IdleTimeout: 30 * time.Minute, WarnBefore: 20 * time.Minute,
		ActivityGranularity: 18 * time.Second,
		PassivePaths:        []string{"/api/poll"}, Bypass: []string{"/public/"},
		TokenSources:  []authz.TokenSource{{Kind: authz.FromHeader, Name: "authorization"}, {Kind: authz.FromCookie, Name: "access_token"}},
		MaxTokenBytes: 16 << 10, Verifier: v,
		Login:  authz.Login{URL: fuzzLogin, ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"},
		Logout: authz.Logout{Path: "/logout", RedirectURL: fuzzOut},
		Cookie: authz.Cookie{Name: "__Host-sessiongate", SameSite: "Lax"},
	}
	// Every host gets the policy, so that hostile hosts reach the engine.
	if g.eng, err = authz.NewEngine(authz.Options{Policies: anyHost{p}, Store: store}); err != nil {
		f.Fatal(err)
	}
	return g
}

type anyHost struct{ p *authz.Policy }

func (a anyHost) Match(string) *authz.Policy { return a.p }

// check runs req through the gate and asserts what must hold whatever the
// request: an allow names the subject of a valid token the request carries
// (or is a bypassed path, with no identity), a denial has a status and a
// reason of the closed sets and a Location on the login or sign-out page,
// and no header value could split a header.
func (g *fuzzGate) check(t *testing.T, req *authv3.CheckRequest) {
	h := req.GetAttributes().GetRequest().GetHttp()
	var values []string
	for _, v := range h.GetHeaders() {
		values = append(values, v)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		values = append(values, hv.GetValue(), string(hv.GetRawValue()))
	}
	g.decide(t, ToRequest(req), values)
}

// checkWire is check for a request decoded by the gRPC server's own decoder.
func (g *fuzzGate) checkWire(t *testing.T, w *wireRequest) {
	var values []string
	for _, f := range append(slices.Clip(w.headers), w.headerMap...) {
		values = append(values, f.v)
	}
	g.decide(t, w.toRequest(), values)
}

// decide runs r through the engine and checks the answer; values are the
// request's header values.
func (g *fuzzGate) decide(t *testing.T, r authz.Request, values []string) {
	d := g.eng.Check(context.Background(), &r)
	resp := ToResponse(&d)
	sameAnswerBytes(t, &d, nil) // the server writes its bytes
	allowed := resp.GetStatus().GetCode() == int32(codes.OK)
	if allowed != d.Allow {
		t.Fatalf("status %v for decision %+v", resp.GetStatus(), d)
	}
	var headers []*corev3.HeaderValueOption
	if allowed {
		ok := resp.GetOkResponse()
		headers = append(slices.Clone(ok.GetHeaders()), ok.GetResponseHeadersToAdd()...)
		user := ""
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == HeaderUser {
				user = h.GetHeader().GetValue()
			}
		}
		if user == "" {
			path, _, _ := strings.Cut(r.Path, "?")
			if !strings.HasPrefix(path, "/public/") {
				t.Fatalf("allowed %q without an identity: not a bypass path", r.Path)
			}
		} else if !g.carriesTokenOf(values, user) {
			t.Fatalf("allowed as %q without a valid token of %q in the request", user, user)
		}
	} else {
		den := resp.GetDeniedResponse()
		headers = den.GetHeaders()
		if st := den.GetStatus().GetCode(); st != 302 && st != 401 && st != 403 && st != 503 {
			t.Fatalf("denial with HTTP status %d", st)
		}
		if !slices.Contains(authz.Reasons(), d.Reason) {
			t.Fatalf("denial with reason %v", d.Reason)
		}
		if d.Status == 302 && !strings.HasPrefix(d.Location, fuzzLogin) && d.Location != fuzzOut {
			t.Fatalf("redirect to %q", d.Location)
		}
	}
	for _, h := range headers {
		if strings.ContainsAny(h.GetHeader().GetValue(), "\r\n\x00") {
			t.Fatalf("header %s = %q could split the response", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
	}
}

// carriesTokenOf reports whether some header value holds a valid token of sub.
func (g *fuzzGate) carriesTokenOf(values []string, sub string) bool {
	for tok, s := range g.tokens {
		if s != sub {
			continue
		}
		for _, v := range values {
			if strings.Contains(v, tok) {
				return true
			}
		}
	}
	return false
}

// FuzzCheck builds a request from fuzzed parts, as Envoy would send it in
// headers or (raw) in header_map: hosts, paths and headers with CR/LF,
// NUL, non-UTF-8 and sheer size included.
func FuzzCheck(f *testing.F) {
	g := newFuzzGate(f)
	f.Fuzz(func(t *testing.T, host, path, scheme, authorization, cookie, accept, extra string, raw bool) {
		hs := map[string]string{":authority": host, ":path": path, ":scheme": scheme, ":method": "GET",
			"authorization": authorization, "cookie": cookie, "accept": accept}
		if k, v, ok := strings.Cut(extra, ":"); ok {
			hs[strings.ToLower(k)] = v
		}
		http := &authv3.AttributeContext_HttpRequest{Method: "GET"}
		if raw {
			http.HeaderMap = &corev3.HeaderMap{}
			for k, v := range hs {
				http.HeaderMap.Headers = append(http.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
			}
		} else {
			http.Host, http.Path, http.Scheme, http.Headers = host, path, scheme, hs
		}
		g.check(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: http}}})
	})
}

// FuzzCheckRequest decodes arbitrary bytes as a CheckRequest (what a broken
// or hostile client could send) and runs whatever decodes, with
// proto.Unmarshal and with the gRPC server's own decoder.
func FuzzCheckRequest(f *testing.F) {
	g := newFuzzGate(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if proto.Unmarshal(data, &req) == nil {
			g.check(t, &req)
		}
		// As the gRPC server decodes it: this decides some messages that
		// proto.Unmarshal refuses (malformed only where nothing is read).
		if w, err := wireDecode(data); err == nil {
			g.checkWire(t, w)
		}
	})
}
