package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sessiongate/sessiongate/authz"
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
	minExtAuthzTimeout  = 250 * time.Millisecond
	maxExtAuthzTimeout  = 2 * time.Second
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

	// Every request is checked: no virtual host or route turns ext_authz
	// off, the built-in sign-in's callback least of all (sessiongate
	// finishes the sign-in there), and the filter runs for all requests.
	for _, vh := range p.hcm.GetRouteConfig().GetVirtualHosts() {
		if extAuthzDisabled(t, vh.GetTypedPerFilterConfig()) {
			t.Errorf("virtual host %s turns ext_authz off: its requests, %s included, would never reach sessiongate", vh.GetName(), policy.DefaultCallbackPath)
		}
		for _, r := range vh.GetRoutes() {
			if extAuthzDisabled(t, r.GetTypedPerFilterConfig()) {
				t.Errorf("route %v turns ext_authz off: a request there reaches the application with the identity headers its client wrote (S10), and sign-in's callback %s must be checked", r.GetMatch(), policy.DefaultCallbackPath)
			}
		}
	}
	if fe := ea.GetFilterEnabled().GetDefaultValue(); fe != nil {
		denom := map[typev3.FractionalPercent_DenominatorType]uint32{typev3.FractionalPercent_HUNDRED: 100,
			typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000}[fe.GetDenominator()]
		if fe.GetNumerator() < denom {
			t.Errorf("ext_authz filter_enabled %v: some requests would skip sessiongate", fe)
		}
	}
	checkSignInHeaders(t, p)
	// The sign-in's redirect_uri is the request's scheme and host plus the
	// callback path: a port Envoy strips would send the browser back to
	// another port.
	if p.hcm.GetStripAnyHostPort() || p.hcm.GetStripMatchingHostPort() {
		t.Error("http_connection_manager strips the host's port: sign-in's redirect_uri and return URLs would lose it")
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

// extAuthzDisabled reports whether a typed_per_filter_config turns the
// ext_authz filter off.
func extAuthzDisabled(t *testing.T, cfg map[string]*anypb.Any) bool {
	t.Helper()
	a, ok := cfg[extAuthzFilter]
	return ok && unpack(t, a, &extauthzv3.ExtAuthzPerRoute{}).GetDisabled()
}

// What built-in sign-in (login.oidc) needs to pass through Envoy.
var (
	// signInRequestHeaders are what sessiongate reads of a request: the
	// session and login-attempt cookies, bearer tokens, whether a browser
	// asks (accept, sec-fetch-mode), and the scheme of the callback's
	// redirect_uri.
	signInRequestHeaders = []string{"cookie", "authorization", "accept", "sec-fetch-mode", "x-forwarded-proto"}
	// signInUpstreamHeaders are what an allowed answer sets on the request
	// to the application: identity and deadlines, the access token
	// (upstream.access_token: authorization), the identity headers of
	// upstream.headers' default, and the cookies without the gate's own.
	signInUpstreamHeaders = []string{envoy.HeaderUser, envoy.HeaderSessionExpiry, envoy.HeaderIdleExpiry,
		"authorization", authz.HeaderName, authz.HeaderEmail, authz.HeaderGroups, "cookie"}
)

// checkSignInHeaders fails an Envoy configuration that would filter what
// sign-in needs. Over gRPC Envoy applies sessiongate's answer as it is
// (allowed: headers upstream, response_headers_to_add to the client;
// denied: status, headers and body to the client), so what can go wrong is
// a restriction added around it: the HTTP flavour's allow-lists, request
// headers withheld from the check, header mutation rules that refuse the
// upstream headers, or a route that strips them after the check.
func checkSignInHeaders(t *testing.T, p envoyParts) {
	t.Helper()
	ea := p.extAuthz
	if ea.GetHttpService() != nil {
		t.Errorf("ext_authz http_service: the example uses gRPC, where no allowed_upstream_headers / allowed_client_headers list can drop the access token, identity headers, set-cookie, location or error pages")
	}
	for _, h := range signInRequestHeaders {
		if al := ea.GetAllowedHeaders(); al != nil && !anyMatch(t, al.GetPatterns(), h) {
			t.Errorf("ext_authz allowed_headers does not send %q to sessiongate, which sign-in needs", h)
		}
		if dl := ea.GetDisallowedHeaders(); dl != nil && anyMatch(t, dl.GetPatterns(), h) {
			t.Errorf("ext_authz disallowed_headers withholds %q from sessiongate, which sign-in needs", h)
		}
	}
	if r := ea.GetDecoderHeaderMutationRules(); r != nil {
		for _, h := range signInUpstreamHeaders {
			if !mutationAllowed(t, r.GetAllowExpression().GetRegex(), r.GetDisallowExpression().GetRegex(), r.GetDisallowAll().GetValue(), h) {
				t.Errorf("ext_authz decoder_header_mutation_rules refuse %q, which an allowed sign-in answer sets for the application", h)
			}
		}
	}
	// Route-level removals run in the router, after the check: they would
	// drop what sessiongate set.
	rc := p.hcm.GetRouteConfig()
	removed := slices.Clone(rc.GetRequestHeadersToRemove())
	for _, vh := range rc.GetVirtualHosts() {
		removed = append(removed, vh.GetRequestHeadersToRemove()...)
		for _, r := range vh.GetRoutes() {
			removed = append(removed, r.GetRequestHeadersToRemove()...)
		}
	}
	for _, h := range removed {
		if slices.Contains(signInUpstreamHeaders, strings.ToLower(h)) {
			t.Errorf("the route configuration removes %q after ext_authz set it for the application", h)
		}
	}
}

// anyMatch applies Envoy string matchers to a lower-case header name.
func anyMatch(t *testing.T, ms []*matcherv3.StringMatcher, h string) bool {
	t.Helper()
	for _, m := range ms {
		v := h
		fold := func(s string) string { return s }
		if m.GetIgnoreCase() {
			fold = strings.ToLower
		}
		var ok bool
		switch {
		case m.GetExact() != "" || m.MatchPattern == nil:
			ok = fold(m.GetExact()) == fold(v)
		case m.GetPrefix() != "":
			ok = strings.HasPrefix(fold(v), fold(m.GetPrefix()))
		case m.GetSuffix() != "":
			ok = strings.HasSuffix(fold(v), fold(m.GetSuffix()))
		case m.GetContains() != "":
			ok = strings.Contains(fold(v), fold(m.GetContains()))
		case m.GetSafeRegex() != nil:
			ok = fullMatch(t, m.GetSafeRegex().GetRegex(), v)
		default:
			t.Fatalf("string matcher %v: not understood here", m)
		}
		if ok {
			return true
		}
	}
	return false
}

// mutationAllowed applies HeaderMutationRules' precedence to header h:
// disallow_expression wins, then allow_expression, then disallow_all.
func mutationAllowed(t *testing.T, allow, disallow string, disallowAll bool, h string) bool {
	t.Helper()
	switch {
	case disallow != "" && fullMatch(t, disallow, h):
		return false
	case allow != "" && fullMatch(t, allow, h):
		return true
	}
	return !disallowAll
}

func fullMatch(t *testing.T, expr, s string) bool {
	t.Helper()
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		t.Fatalf("regex %q: %v", expr, err)
	}
	return re.MatchString(s)
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
