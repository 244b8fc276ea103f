package kube

import (
	"os"
	"strings"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	contourv1 "github.com/projectcontour/contour/apis/projectcontour/v1"
	contourv1alpha1 "github.com/projectcontour/contour/apis/projectcontour/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/sessiongate/sessiongate/policy"
)

const (
	envoyGatewayFile = "../envoy-gateway/security-policy.yaml"
	contourFile      = "../contour/authorization.yaml"
	k8sServiceFile   = "../kubernetes/service.yaml"
	// What the examples point at: the Service of deploy/kubernetes (and of
	// the chart, released as "sessiongate"), in its namespace.
	sgNamespace = "sessiongate"
	sgService   = "sessiongate"
	// maxTimeout bounds the ext_authz timeout, as docs/deployment.md does
	// for Envoy: well above a decision, well below a user's patience.
	maxTimeout = 2 * time.Second
)

// docs splits a multi-document YAML file and decodes each document strictly
// into the API type its apiVersion and kind name.
func docs(t *testing.T, path string, types map[string]func() any) map[string][]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]any{}
	for _, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		kind := tm.APIVersion + "/" + tm.Kind
		mk, ok := types[kind]
		if !ok {
			t.Fatalf("%s: unexpected %s", path, kind)
		}
		obj := mk()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %s does not decode strictly into its API type: %v", path, kind, err)
		}
		out[kind] = append(out[kind], obj)
	}
	return out
}

// grpcPort is the port of the sessiongate Service named grpc.
func grpcPort(t *testing.T) int32 {
	t.Helper()
	b, err := os.ReadFile(k8sServiceFile)
	if err != nil {
		t.Fatal(err)
	}
	var svc corev1.Service
	if err := yaml.UnmarshalStrict([]byte(stripComments(string(b))), &svc); err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == "grpc" {
			return p.Port
		}
	}
	t.Fatalf("%s: no grpc port", k8sServiceFile)
	return 0
}

// TestEnvoyGatewaySecurityPolicy: the SecurityPolicy decodes into Envoy
// Gateway's own type, calls sessiongate over gRPC on its Service's gRPC port,
// fails closed with 503 on errors, with a bounded timeout, and the
// ReferenceGrant lets exactly that policy reach exactly that Service.
func TestEnvoyGatewaySecurityPolicy(t *testing.T) {
	got := docs(t, envoyGatewayFile, map[string]func() any{
		"gateway.envoyproxy.io/v1alpha1/SecurityPolicy":    func() any { return &egv1a1.SecurityPolicy{} },
		"gateway.networking.k8s.io/v1beta1/ReferenceGrant": func() any { return &gwapiv1beta1.ReferenceGrant{} },
	})
	sps, rgs := got["gateway.envoyproxy.io/v1alpha1/SecurityPolicy"], got["gateway.networking.k8s.io/v1beta1/ReferenceGrant"]
	if len(sps) != 1 || len(rgs) != 1 {
		t.Fatalf("%s: %d SecurityPolicy and %d ReferenceGrant, want one each", envoyGatewayFile, len(sps), len(rgs))
	}
	sp, rg := sps[0].(*egv1a1.SecurityPolicy), rgs[0].(*gwapiv1beta1.ReferenceGrant)
	if len(sp.Spec.TargetRefs) == 0 {
		t.Errorf("SecurityPolicy targets nothing")
	}
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil || ea.HTTP != nil {
		t.Fatalf("SecurityPolicy extAuth %+v: want the gRPC service only", ea)
	}
	refs := ea.GRPC.BackendRefs
	if len(refs) != 1 || ea.GRPC.BackendRef != nil {
		t.Fatalf("extAuth.grpc: want one backendRefs entry")
	}
	ref := refs[0].BackendObjectReference
	if ref.Name != sgService || ref.Namespace == nil || string(*ref.Namespace) != sgNamespace || ref.Port == nil || int32(*ref.Port) != grpcPort(t) ||
		(ref.Kind != nil && *ref.Kind != "Service") {
		t.Errorf("extAuth.grpc backend %+v, want Service %s/%s port %d", ref, sgNamespace, sgService, grpcPort(t))
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Errorf("extAuth.failOpen must be false (S9)")
	}
	if ea.StatusOnError == nil || *ea.StatusOnError != 503 {
		t.Errorf("extAuth.statusOnError %v, want 503: an outage is not a denial", ea.StatusOnError)
	}
	if ea.Timeout == nil {
		t.Errorf("extAuth.timeout unset")
	} else if d, err := time.ParseDuration(string(*ea.Timeout)); err != nil || d <= 0 || d > maxTimeout {
		t.Errorf("extAuth.timeout %v, want (0, %v]", *ea.Timeout, maxTimeout)
	}
	// The request's headers all go to sessiongate (it reads the cookie,
	// the token and the browser hints): no allow-list.
	if len(ea.HeadersToExtAuth) > 0 {
		t.Errorf("extAuth.headersToExtAuth %v: sessiongate needs every header", ea.HeadersToExtAuth)
	}

	if rg.Namespace != sgNamespace || len(rg.Spec.From) != 1 || len(rg.Spec.To) != 1 {
		t.Fatalf("ReferenceGrant %s/%s: want one from and one to in %s", rg.Namespace, rg.Name, sgNamespace)
	}
	from, to := rg.Spec.From[0], rg.Spec.To[0]
	if from.Group != "gateway.envoyproxy.io" || from.Kind != "SecurityPolicy" || string(from.Namespace) != sp.Namespace {
		t.Errorf("ReferenceGrant from %+v, want the SecurityPolicy's namespace %s", from, sp.Namespace)
	}
	if to.Group != "" || to.Kind != "Service" || to.Name == nil || string(*to.Name) != sgService {
		t.Errorf("ReferenceGrant to %+v, want Service %s", to, sgService)
	}
}

// TestContourAuthorization: the ExtensionService and HTTPProxy decode into
// Contour's own types; the ExtensionService speaks h2c to sessiongate's gRPC
// port; the HTTPProxy is TLS (Contour's condition for authorization), points
// at it, fails closed, and no route turns authorization off where the
// built-in sign-in's callback would be.
func TestContourAuthorization(t *testing.T) {
	got := docs(t, contourFile, map[string]func() any{
		"projectcontour.io/v1alpha1/ExtensionService": func() any { return &contourv1alpha1.ExtensionService{} },
		"projectcontour.io/v1/HTTPProxy":              func() any { return &contourv1.HTTPProxy{} },
	})
	ess, hps := got["projectcontour.io/v1alpha1/ExtensionService"], got["projectcontour.io/v1/HTTPProxy"]
	if len(ess) != 1 || len(hps) != 1 {
		t.Fatalf("%s: %d ExtensionService and %d HTTPProxy, want one each", contourFile, len(ess), len(hps))
	}
	es, hp := ess[0].(*contourv1alpha1.ExtensionService), hps[0].(*contourv1.HTTPProxy)
	if es.Namespace != sgNamespace || es.Spec.Protocol == nil || *es.Spec.Protocol != "h2c" || len(es.Spec.Services) != 1 ||
		es.Spec.Services[0].Name != sgService || int32(es.Spec.Services[0].Port) != grpcPort(t) {
		t.Errorf("ExtensionService %+v: want h2c to %s/%s:%d", es.Spec, sgNamespace, sgService, grpcPort(t))
	}
	vh := hp.Spec.VirtualHost
	if vh == nil || vh.TLS == nil || vh.Authorization == nil {
		t.Fatalf("HTTPProxy: want a TLS virtual host with authorization")
	}
	a := vh.Authorization
	if a.ExtensionServiceRef.Name != es.Name || a.ExtensionServiceRef.Namespace != es.Namespace {
		t.Errorf("authorization.extensionRef %+v, want %s/%s", a.ExtensionServiceRef, es.Namespace, es.Name)
	}
	if a.FailOpen {
		t.Errorf("authorization.failOpen must be false (S9)")
	}
	if d, err := time.ParseDuration(a.ResponseTimeout); err != nil || d <= 0 || d > maxTimeout {
		t.Errorf("authorization.responseTimeout %q, want (0, %v]", a.ResponseTimeout, maxTimeout)
	}
	if a.AuthPolicy != nil && a.AuthPolicy.Disabled {
		t.Errorf("authorization disabled for the whole virtual host")
	}
	for i, r := range hp.Spec.Routes {
		if r.AuthPolicy == nil || !r.AuthPolicy.Disabled {
			continue
		}
		for _, c := range r.Conditions {
			if c.Prefix != "" && strings.HasPrefix(policy.DefaultCallbackPath, c.Prefix) || c.Exact == policy.DefaultCallbackPath {
				t.Errorf("routes[%d] turns authorization off for %s, the built-in sign-in's callback, which sessiongate must see", i, policy.DefaultCallbackPath)
			}
		}
	}
}
