package test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
)

// capturesDir holds CheckRequests recorded from real Envoy and Istio
// deployments (see its README), kept with the code as test data.
const capturesDir = "../envoy/testdata/captures"

// captureWant is what each capture must get under a "*" default policy
// that bypasses /health: no capture carries a token this gate accepts.
var captureWant = map[string]struct {
	status   int // 200 = allowed
	reason   string
	location string // return URL for 302s
}{
	"01_opa_primer_post_bearer_body_http11.json":               {401, "invalid_token", ""}, // HS256 bearer
	"02_istio_sidecar_get_headers_denied_http11.json":          {401, "no_token", ""},
	"03_istio_sidecar_get_headers_allowed_http11.json":         {401, "no_token", ""},
	"04_istio_ingress_get_basic_auth_query_http11.json":        {401, "no_token", ""}, // Basic is not Bearer
	"05_grpc_over_http2_post_jwt_metadata_https.json":          {401, "no_token", ""}, // jwt_authn metadata is no token
	"06_https_tls_sni_post_body_envoy1372.json":                {401, "no_token", ""},
	"07_istio_mtls_post_graphql_body_http11.json":              {401, "no_token", ""},
	"08_kube_probe_get_health_query_http11.json":               {200, "", ""}, // bypass /health
	"09_istio_ingress_post_basic_auth_traceparent_http11.json": {401, "no_token", ""},
	"D1_from10_browser_get_with_session_cookie_http11.json":    {401, "no_token", ""}, // image fetch, not navigation
	"D2_from10_browser_navigate_no_cookie_http11.json":         {302, "no_token", "http://localhost:8080/app/dashboard?tab=2"},
	"D3_from05_http2_with_crumbled_cookies_rejoined.json":      {401, "no_token", ""},
}

func loadCaptures(t *testing.T) map[string]*authv3.CheckRequest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(capturesDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s: %v", capturesDir, err)
	}
	out := map[string]*authv3.CheckRequest{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		req := &authv3.CheckRequest{}
		if err := protojson.Unmarshal(b, req); err != nil {
			t.Errorf("%s: protojson: %v", filepath.Base(f), err)
			continue
		}
		out[filepath.Base(f)] = req
	}
	for name := range out {
		if _, ok := captureWant[name]; !ok {
			t.Errorf("capture %s has no expectation in captureWant: add one", name)
		}
	}
	return out
}

// TestEnvoyCaptures: every real Envoy CheckRequest loads with protojson and
// gets a well-formed CheckResponse, never a gRPC error: with a default
// policy, the decision each deserves; without one, 403 unknown_host.
func TestEnvoyCaptures(t *testing.T) {
	t.Parallel()
	caps := loadCaptures(t)
	names := make([]string, 0, len(caps))
	for n := range caps {
		names = append(names, n)
	}
	slices.Sort(names)

	t.Run("with default policy", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, map[string]string{
			"app":     pol{Hosts: []string{"app.test"}}.yaml(),
			"default": pol{Hosts: []string{"*"}, Bypass: []string{"/health"}}.yaml(),
		})
		c := s.client(t)
		for _, name := range names {
			r, err := c.send(caps[name])
			if err != nil {
				t.Errorf("%s: gRPC error %v", name, err)
				continue
			}
			want := captureWant[name]
			switch want.status {
			case 200:
				if !r.Allowed || len(r.Upstream) != 0 || !slices.Contains(r.Remove, userHeader) {
					t.Errorf("%s: want a bypass allow removing %s, got %v", name, userHeader, r)
				}
			case 302:
				wantLoginRedirect(t, r, want.reason, want.location, false)
			default:
				if r.Allowed || r.Code != codes.Unauthenticated || r.Status != want.status || r.Reason != want.reason ||
					r.Client["www-authenticate"] == "" {
					t.Errorf("%s: want %d %s with a challenge, got %v", name, want.status, want.reason, r)
				}
			}
		}
		// Degenerate requests Envoy could send get answers too: without an
		// authority there is no host to choose a policy by, not even the
		// default (authz.ParseAuthority): 403 unknown_host.
		for i, req := range []*authv3.CheckRequest{
			{},
			{Attributes: &authv3.AttributeContext{}},
			{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}},
			{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}},
		} {
			r, err := c.send(req)
			if err != nil {
				t.Errorf("degenerate request %d: gRPC error %v", i, err)
				continue
			}
			if r.Allowed || r.Code != codes.PermissionDenied || r.Status != 403 || r.Reason != "unknown_host" {
				t.Errorf("degenerate request %d: want 403 unknown_host, got %v", i, r)
			}
		}
	})

	t.Run("without default policy", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
		c := s.client(t)
		for _, name := range append(names, "") {
			req := caps[name]
			if name == "" {
				req = &authv3.CheckRequest{}
			}
			r, err := c.send(req)
			if err != nil {
				t.Errorf("%s: gRPC error %v", name, err)
				continue
			}
			if r.Allowed || r.Code != codes.PermissionDenied || r.Status != 403 || r.Reason != "unknown_host" || r.Message != "unknown_host" {
				t.Errorf("%s: want 403 unknown_host PERMISSION_DENIED, got %v", name, r)
			}
		}
	})
}
