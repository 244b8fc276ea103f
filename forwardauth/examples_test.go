package forwardauth

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3" // resolves the router's typed_config
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// The nginx and Caddy examples run for real in test/forwardauth_test.go;
// the Traefik and Envoy ones are checked here against their schemas.

// upstreamGateHeaders are the names a client must never get past the proxy.
var upstreamGateHeaders = []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, HeaderExpiresIn, HeaderReason}

// traefikDynamic is the part of Traefik's dynamic configuration the example
// uses; decoding with KnownFields makes a misspelt option an error.
type traefikDynamic struct {
	HTTP struct {
		Routers map[string]struct {
			Rule        string   `yaml:"rule"`
			EntryPoints []string `yaml:"entryPoints"`
			Middlewares []string `yaml:"middlewares"`
			Service     string   `yaml:"service"`
		} `yaml:"routers"`
		Middlewares map[string]struct {
			ForwardAuth *struct {
				Address                  string   `yaml:"address"`
				TrustForwardHeader       *bool    `yaml:"trustForwardHeader"`
				AuthResponseHeaders      []string `yaml:"authResponseHeaders"`
				AddAuthCookiesToResponse []string `yaml:"addAuthCookiesToResponse"`
			} `yaml:"forwardAuth"`
		} `yaml:"middlewares"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `yaml:"url"`
				} `yaml:"servers"`
			} `yaml:"loadBalancer"`
		} `yaml:"services"`
	} `yaml:"http"`
}

func TestTraefikExample(t *testing.T) {
	b, err := os.ReadFile("examples/traefik.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c traefikDynamic
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("examples/traefik.yaml: %v", err)
	}
	for name, r := range c.HTTP.Routers {
		for _, m := range r.Middlewares {
			if _, ok := c.HTTP.Middlewares[m]; !ok {
				t.Errorf("router %s: middleware %q not defined", name, m)
			}
		}
		if _, ok := c.HTTP.Services[r.Service]; !ok {
			t.Errorf("router %s: service %q not defined", name, r.Service)
		}
		if len(r.Middlewares) == 0 {
			t.Errorf("router %s: no forward-auth middleware", name)
		}
	}
	fa := c.HTTP.Middlewares["sessiongate"].ForwardAuth
	if fa == nil {
		t.Fatal("middleware sessiongate: no forwardAuth")
	}
	if u, err := url.Parse(fa.Address); err != nil || u.Path != ForwardPath {
		t.Errorf("forwardAuth.address %q: want the %s endpoint", fa.Address, ForwardPath)
	}
	if fa.TrustForwardHeader == nil || *fa.TrustForwardHeader {
		t.Error("forwardAuth.trustForwardHeader must be false: Traefik then overwrites the client's X-Forwarded-*")
	}
	for _, h := range upstreamGateHeaders {
		if !slices.Contains(fa.AuthResponseHeaders, h) {
			t.Errorf("forwardAuth.authResponseHeaders lacks %s: a client's copy would reach the application (S10)", h)
		}
	}
	if !slices.Contains(fa.AddAuthCookiesToResponse, "__Host-sessiongate") {
		t.Error("forwardAuth.addAuthCookiesToResponse lacks the session cookie")
	}
}

func TestEnvoyHTTPExample(t *testing.T) {
	b, err := os.ReadFile("examples/envoy-http.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("examples/envoy-http.yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's own schema: unknown fields and unknown typed_config types fail.
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("examples/envoy-http.yaml is not an Envoy bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("examples/envoy-http.yaml: %v", err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if !hcm.GetUseRemoteAddress().GetValue() {
		t.Error("use_remote_address must be set: x-forwarded-proto and -for then describe the real client")
	}
	var ea extauthzv3.ExtAuthz
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatalf("first HTTP filter is not ext_authz: %v", err)
	}
	if ea.GetFailureModeAllow() {
		t.Error("failure_mode_allow must be false (S9)")
	}
	hs := ea.GetHttpService()
	clusters := map[string]bool{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
	}
	if c := hs.GetServerUri().GetCluster(); !clusters[c] {
		t.Errorf("http_service cluster %q is not defined", c)
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); !clusters[c] {
				t.Errorf("route cluster %q is not defined", c)
			}
		}
	}
	if hs.GetPathPrefix() != EnvoyPrefix {
		t.Errorf("path_prefix = %q, want %q", hs.GetPathPrefix(), EnvoyPrefix)
	}
	wantExact(t, "allowed_headers", patterns(ea.GetAllowedHeaders().GetPatterns()),
		"cookie", "accept", "sec-fetch-mode", "x-forwarded-proto")
	resp := hs.GetAuthorizationResponse()
	wantExact(t, "allowed_upstream_headers", patterns(resp.GetAllowedUpstreamHeaders().GetPatterns()),
		lower(HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry)...)
	wantExact(t, "allowed_client_headers_on_success", patterns(resp.GetAllowedClientHeadersOnSuccess().GetPatterns()),
		"set-cookie", lower(HeaderExpiresIn)[0])
	wantExact(t, "allowed_client_headers", patterns(resp.GetAllowedClientHeaders().GetPatterns()),
		"set-cookie", "cache-control", lower(HeaderReason)[0])
}

// patterns lists the exact values of a ListStringMatcher's patterns.
func patterns(ms []*matcherv3.StringMatcher) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetExact())
	}
	return out
}

func wantExact(t *testing.T, field string, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s %v lacks %q", field, got, w)
		}
	}
}

func lower(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}
