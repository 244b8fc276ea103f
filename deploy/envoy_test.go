package deploy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/policy"
	redisstore "github.com/sessiongate/sessiongate/store/redis"
)

// What the Envoy configuration must name and respect.
const (
	extAuthzFilter      = "envoy.filters.http.ext_authz"
	routerFilter        = "envoy.filters.http.router"
	hcmFilter           = "envoy.filters.network.http_connection_manager"
	httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	sessiongateCluster  = "sessiongate"
	loginCallbackPath   = "/oauth2/callback"
	minExtAuthzTimeout  = 250 * time.Millisecond
	maxExtAuthzTimeout  = time.Second
)

// loadBootstrap reads an Envoy configuration file strictly: unknown fields
// and unresolvable typed_config types are errors, then every constraint
// Envoy declares on its protos (ValidateAll), typed_config contents included.
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d YAML documents, want 1", path, len(docs))
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(yamlToJSON(t, docs[0]), &b); err != nil {
		t.Fatalf("%s: not an Envoy v3 Bootstrap: %v", path, err)
	}
	if err := validateDeep(&b); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &b
}

// validateDeep runs ValidateAll on m and on every message packed in an Any
// below it (typed_config and friends), which m's own ValidateAll does not
// look into.
func validateDeep(m proto.Message) error {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	if a, ok := m.(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		if err := validateDeep(inner); err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		return nil
	}
	var err error
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = validateDeep(v.List().Get(i).Message().Interface())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = validateDeep(mv.Message().Interface())
				return err == nil
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			err = validateDeep(v.Message().Interface())
		}
		return err == nil
	})
	return err
}

func unpack[M proto.Message](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("typed_config %s: %v", a.GetTypeUrl(), err)
	}
	return m
}

// envoyParts are the pieces of a Bootstrap that the checks look at.
type envoyParts struct {
	hcm      *hcmv3.HttpConnectionManager
	extAuthz *extauthzv3.ExtAuthz
	clusters map[string]*clusterv3.Cluster
}

func parts(t *testing.T, path string, b *bootstrapv3.Bootstrap) envoyParts {
	t.Helper()
	p := envoyParts{clusters: map[string]*clusterv3.Cluster{}}
	for _, c := range b.GetStaticResources().GetClusters() {
		p.clusters[c.GetName()] = c
	}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || len(ls[0].GetFilterChains()) != 1 || len(ls[0].GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("%s: want one listener with one filter chain of one filter", path)
	}
	f := ls[0].GetFilterChains()[0].GetFilters()[0]
	if f.GetName() != hcmFilter {
		t.Fatalf("%s: listener filter %q, want %s", path, f.GetName(), hcmFilter)
	}
	p.hcm = unpack(t, f.GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	filters := p.hcm.GetHttpFilters()
	var names []string
	for _, hf := range filters {
		names = append(names, hf.GetName())
	}
	// ext_authz decides before anything reaches the router, which is last.
	if !slices.Equal(names, []string{extAuthzFilter, routerFilter}) {
		t.Fatalf("%s: http_filters %v, want [%s %s]", path, names, extAuthzFilter, routerFilter)
	}
	p.extAuthz = unpack(t, filters[0].GetTypedConfig(), &extauthzv3.ExtAuthz{})
	return p
}

func TestEnvoyExample(t *testing.T) {
	for _, path := range []string{envoyExample, composeEnvoy} {
		t.Run(path, func(t *testing.T) { checkEnvoy(t, path) })
	}
}

func checkEnvoy(t *testing.T, path string) {
	p := parts(t, path, loadBootstrap(t, path))

	ea := p.extAuthz
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("ext_authz transport_api_version %v, want V3", ea.GetTransportApiVersion())
	}
	if ea.GetFailureModeAllow() {
		t.Error("ext_authz failure_mode_allow: true; sessiongate must fail closed (S9)")
	}
	if ea.GetWithRequestBody() != nil {
		t.Error("ext_authz with_request_body is set; sessiongate decides on headers, never buffer bodies")
	}
	gs := ea.GetGrpcService()
	if gs.GetEnvoyGrpc().GetClusterName() != sessiongateCluster {
		t.Fatalf("ext_authz grpc_service %v, want envoy_grpc to cluster %q", gs, sessiongateCluster)
	}
	if d := gs.GetTimeout().AsDuration(); d < minExtAuthzTimeout || d > maxExtAuthzTimeout {
		t.Errorf("ext_authz timeout %v, want %v to %v (docs/deployment.md)", d, minExtAuthzTimeout, maxExtAuthzTimeout)
	}
	// A hung Redis must cost a 503 (or a fallback decision), not a timeout
	// at Envoy: the store gives up first.
	if d := gs.GetTimeout().AsDuration(); d <= redisstore.DefaultTimeout {
		t.Errorf("ext_authz timeout %v, not above the Redis store's default timeout %v", d, redisstore.DefaultTimeout)
	}

	// The login callback route skips ext_authz and strips every header that
	// sessiongate would otherwise overwrite (S10); no other route skips it.
	var disabled []*routev3.Route
	for _, vh := range p.hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if a, ok := r.GetTypedPerFilterConfig()[extAuthzFilter]; ok {
				if unpack(t, a, &extauthzv3.ExtAuthzPerRoute{}).GetDisabled() {
					disabled = append(disabled, r)
				}
			}
		}
	}
	for _, r := range disabled {
		if m := r.GetMatch(); m.GetPath() == policy.DefaultCallbackPath || (m.GetPrefix() != "" && strings.HasPrefix(policy.DefaultCallbackPath, m.GetPrefix())) {
			t.Errorf("route %v skips ext_authz for %s, the built-in sign-in's callback, which sessiongate must see", m, policy.DefaultCallbackPath)
		}
	}
	if len(disabled) != 1 || disabled[0].GetMatch().GetPath() != loginCallbackPath {
		t.Errorf("routes with ext_authz disabled: %v, want exactly the login callback (path %s)", disabled, loginCallbackPath)
	} else {
		for _, h := range []string{envoy.HeaderUser, envoy.HeaderSessionExpiry, envoy.HeaderIdleExpiry, envoy.HeaderExpiresIn, envoy.HeaderReason} {
			if !slices.Contains(disabled[0].GetRequestHeadersToRemove(), h) {
				t.Errorf("route %s skips ext_authz but does not remove %s: a client could spoof it", loginCallbackPath, h)
			}
		}
	}
	// bypass and logout paths are prefixes: sessiongate and the upstream must
	// see one normalised path.
	if !p.hcm.GetNormalizePath().GetValue() || !p.hcm.GetMergeSlashes() {
		t.Error("http_connection_manager: want normalize_path and merge_slashes, or /public/../x slips past a bypass prefix")
	}

	c := p.clusters[sessiongateCluster]
	if c == nil {
		t.Fatalf("no cluster %q", sessiongateCluster)
	}
	opts, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptions]
	if !ok {
		t.Fatalf("cluster %s: no typed_extension_protocol_options %s", sessiongateCluster, httpProtocolOptions)
	}
	if unpack(t, opts, &upstreamhttpv3.HttpProtocolOptions{}).GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("cluster %s: want explicit_http_config http2_protocol_options: gRPC needs HTTP/2", sessiongateCluster)
	}
	var hcOK bool
	for _, hc := range c.GetHealthChecks() {
		if hc.GetGrpcHealthCheck().GetServiceName() != envoy.AuthorizationService {
			continue
		}
		hcOK = true
		// Envoy stops sending to a draining replica once its health check
		// has seen NOT_SERVING unhealthy_threshold times: within the
		// binary's drain delay, or checks meet a closed port.
		n := max(int64(hc.GetUnhealthyThreshold().GetValue()), 1)
		if took := time.Duration(n)*hc.GetInterval().AsDuration() + hc.GetTimeout().AsDuration(); took >= serveFlagDefault(t, "drain-delay") {
			t.Errorf("cluster %s: the health check takes up to %v to see a drain, not within serve's default --drain-delay", sessiongateCluster, took)
		}
	}
	if !hcOK {
		t.Errorf("cluster %s: want a gRPC health check of service %q", sessiongateCluster, envoy.AuthorizationService)
	}
	df, err := parseDockerfile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	grpcPort := port(t, df.env(t)["SESSIONGATE_GRPC_ADDR"])
	if ep := endpoints(c); len(ep) != 1 || strconv.Itoa(int(ep[0].GetPortValue())) != grpcPort {
		t.Errorf("cluster %s: endpoints %v, want one on sessiongate's gRPC port %s", sessiongateCluster, ep, grpcPort)
	}
}

// endpoints returns the socket addresses of a static cluster.
func endpoints(c *clusterv3.Cluster) []*corev3.SocketAddress {
	var out []*corev3.SocketAddress
	for _, lle := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range lle.GetLbEndpoints() {
			out = append(out, lb.GetEndpoint().GetAddress().GetSocketAddress())
		}
	}
	return out
}

// TestEnvoyAdminLoopback: Envoy's admin interface can stop it and dump its
// configuration, so it never listens beyond loopback.
func TestEnvoyAdminLoopback(t *testing.T) {
	for _, path := range []string{envoyExample, composeEnvoy} {
		if a := loadBootstrap(t, path).GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" && a != "::1" {
			t.Errorf("%s: admin listens on %q, want loopback", path, a)
		}
	}
}

// TestComposeEnvoyMatchesExample keeps the two Envoy files from drifting:
// they may differ only in the addresses of the cluster endpoints and of the
// listener (loopback in the example; every interface of the container in
// Compose, which publishes the port on the host's loopback).
func TestComposeEnvoyMatchesExample(t *testing.T) {
	example, compose := loadBootstrap(t, envoyExample), loadBootstrap(t, composeEnvoy)
	if a := example.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" && a != "::1" {
		t.Errorf("%s: the example listens on %q, want loopback", envoyExample, a)
	}
	for _, b := range []*bootstrapv3.Bootstrap{example, compose} {
		for _, c := range b.GetStaticResources().GetClusters() {
			for _, sa := range endpoints(c) {
				sa.Address = "ADDRESS"
			}
		}
		for _, l := range b.GetStaticResources().GetListeners() {
			l.GetAddress().GetSocketAddress().Address = "ADDRESS"
		}
	}
	if !proto.Equal(example, compose) {
		t.Errorf("%s and %s differ beyond endpoint addresses", envoyExample, composeEnvoy)
	}
}
