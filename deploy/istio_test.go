package deploy

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1 "istio.io/api/security/v1"

	"github.com/sessiongate/sessiongate/policy"
)

const (
	istioProviderFile = "extension-provider.yaml"
	istioPolicyFile   = "authorization-policy.yaml"
)

// istioDoc reads the single document of an Istio file: its kind and its
// spec, which Istio decodes with protobuf JSON rules.
func istioDoc(t *testing.T, file, apiVersion, kind string) *yaml.Node {
	t.Helper()
	path := filepath.Join(istioDir, file)
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	var head struct {
		APIVersion string    `yaml:"apiVersion"`
		Kind       string    `yaml:"kind"`
		Spec       yaml.Node `yaml:"spec"`
	}
	if err := docs[0].Decode(&head); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if head.APIVersion != apiVersion || head.Kind != kind {
		t.Fatalf("%s: %s %s, want %s %s", path, head.APIVersion, head.Kind, apiVersion, kind)
	}
	return &head.Spec
}

// meshProvider returns the extension provider named name, the mesh config
// read strictly into Istio's own MeshConfig type.
func meshProvider(t *testing.T) *meshv1alpha1.MeshConfig_ExtensionProvider {
	t.Helper()
	spec := istioDoc(t, istioProviderFile, "install.istio.io/v1alpha1", "IstioOperator")
	// Only meshConfig is ours to set, and only it can be checked here.
	var s map[string]yaml.Node
	if err := spec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	mc, ok := s["meshConfig"]
	if len(s) != 1 || !ok {
		t.Fatalf("%s: spec must hold meshConfig only", istioProviderFile)
	}
	var m meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(yamlToJSON(t, &mc), &m); err != nil {
		t.Fatalf("%s: spec.meshConfig is not an Istio MeshConfig: %v", istioProviderFile, err)
	}
	ps := m.GetExtensionProviders()
	if len(ps) != 1 {
		t.Fatalf("%s: %d extension providers, want the one for sessiongate", istioProviderFile, len(ps))
	}
	return ps[0]
}

func TestIstioExtensionProvider(t *testing.T) {
	p := meshProvider(t)
	g := p.GetEnvoyExtAuthzGrpc()
	if g == nil {
		t.Fatalf("%s: provider %q is not envoyExtAuthzGrpc", istioProviderFile, p.GetName())
	}
	// The Service of the Kubernetes manifests, and its gRPC port.
	c := loadCluster(t)
	if want := fmt.Sprintf("%s.%s.svc.cluster.local", k8sName, c.namespace); g.GetService() != want {
		t.Errorf("%s: service %q, want %q (deploy/kubernetes)", istioProviderFile, g.GetService(), want)
	}
	var s service
	c.get(t, "Service", k8sName).decode(t, &s)
	var ok bool
	for _, sp := range s.Spec.Ports {
		ok = ok || (sp.Port == int(g.GetPort()) && sp.TargetPort == k8sGRPCPortName && sp.AppProtocol == "grpc")
	}
	if !ok {
		t.Errorf("%s: port %d is not the grpc port of Service %s", istioProviderFile, g.GetPort(), k8sName)
	}
	if g.GetFailOpen() {
		t.Errorf("%s: failOpen: true; sessiongate must fail closed (S9)", istioProviderFile)
	}
	if g.GetIncludeRequestBodyInCheck() != nil {
		t.Errorf("%s: includeRequestBodyInCheck set; sessiongate decides on headers, never buffer bodies", istioProviderFile)
	}
	// The same timeout as the plain Envoy example, for the same reason.
	ea := parts(t, envoyExample, loadBootstrap(t, envoyExample)).extAuthz
	if got, want := g.GetTimeout().AsDuration(), ea.GetGrpcService().GetTimeout().AsDuration(); got != want {
		t.Errorf("%s: timeout %v, want %v as in %s", istioProviderFile, got, want, envoyExample)
	}
	if code, err := strconv.Atoi(g.GetStatusOnError()); err != nil || code != int(ea.GetStatusOnError().GetCode()) {
		t.Errorf("%s: statusOnError %q, want %d as in %s", istioProviderFile, g.GetStatusOnError(), ea.GetStatusOnError().GetCode(), envoyExample)
	}
}

func TestIstioAuthorizationPolicy(t *testing.T) {
	spec := istioDoc(t, istioPolicyFile, "security.istio.io/v1", "AuthorizationPolicy")
	var ap securityv1.AuthorizationPolicy
	if err := protojson.Unmarshal(yamlToJSON(t, spec), &ap); err != nil {
		t.Fatalf("%s: spec is not an Istio AuthorizationPolicy: %v", istioPolicyFile, err)
	}
	if ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
		t.Errorf("%s: action %v, want CUSTOM", istioPolicyFile, ap.GetAction())
	}
	if got, want := ap.GetProvider().GetName(), meshProvider(t).GetName(); got != want {
		t.Errorf("%s: provider %q, but the mesh's provider is %q", istioPolicyFile, got, want)
	}
	// Every request goes to sessiongate, the built-in sign-in's callback
	// included (sessiongate finishes the sign-in there): one rule, which may
	// narrow the hosts but exempts no path, method or caller.
	rules := ap.GetRules()
	if len(rules) != 1 || len(rules[0].GetFrom()) > 0 || len(rules[0].GetWhen()) > 0 {
		t.Fatalf("%s: want one rule without from or when", istioPolicyFile)
	}
	for _, to := range rules[0].GetTo() {
		op := to.GetOperation()
		if len(op.GetPaths())+len(op.GetNotPaths())+len(op.GetMethods())+len(op.GetNotMethods())+len(op.GetPorts())+len(op.GetNotPorts())+len(op.GetNotHosts()) > 0 {
			t.Errorf("%s: operation %v exempts some requests; sign-in needs every path checked", istioPolicyFile, op)
		}
		for _, p := range op.GetNotPaths() {
			if istioPathMatches(p, policy.DefaultCallbackPath) {
				t.Errorf("%s: notPaths %q exempts %s, the built-in sign-in's callback, which sessiongate must see", istioPolicyFile, p, policy.DefaultCallbackPath)
			}
		}
	}
	if len(ap.GetSelector().GetMatchLabels()) == 0 {
		t.Errorf("%s: no selector: the policy would apply to every workload of its namespace", istioPolicyFile)
	}
}

// istioPathMatches applies an Istio operation path pattern: exact, "prefix*"
// or "*suffix".
func istioPathMatches(pattern, path string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(path, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(path, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == path
}
