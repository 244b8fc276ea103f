package kube

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/token"
)

const (
	chartDir   = "../helm/sessiongate"
	alertsFile = "../prometheus/sessiongate-alerts.yaml"
	release    = "gate"
	namespace  = "sessiongate"
	// minKube is the chart's kubeVersion floor: the preStop sleep action.
	minKube = "v1.30.0"
)

// valueSets are the configurations the chart must render, each a values
// file as an operator would write it.
var valueSets = map[string]string{
	"defaults": ``,
	"redis, everything on": `
store: {type: redis, redis: {existingSecret: sessiongate-redis-url}}
replicaCount: 3
sessionKey: {existingSecret: sessiongate-session-keys}
admin: {enabled: true, existingSecret: sessiongate-admin}
trustedProxies: 10.0.0.0/8
serviceMonitor: {enabled: true, labels: {release: prometheus}}
prometheusRule: {enabled: true}
networkPolicy:
  enabled: true
  clients:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: istio-system}}
  metrics:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  admin:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: operators}}
extraEnv: [{name: GOMEMLIMIT, value: 450MiB}]
`,
	"admin API over mTLS, no token": `
admin: {enabled: true, tls: {existingSecret: sessiongate-admin-tls}, clientCA: {existingSecret: sessiongate-admin-ca}}
`,
	"admin API over HTTPS with a token": `
admin: {enabled: true, existingSecret: sessiongate-admin, tls: {existingSecret: sessiongate-admin-tls}}
`,
	"redis URL in a chart Secret": `
store: {type: redis, redis: {url: "redis://:secret@redis.sessiongate:6379/0"}}
sessionKey: {existingSecret: sessiongate-session-keys}
`,
	"token mode only, no sign-in secrets": `
oidcSecrets: []
policies:
  files:
    app.yaml: null # Helm merges maps: drop the chart's example
    api.yaml: |
      hosts: [api.example.com]
      session: {absolute_timeout: 8h, idle_timeout: 30m}
      token:
        issuer: https://idp.example.com
        audiences: [api]
        jwks_uri: https://idp.example.com/jwks
      login: {url: https://login.example.com/start}
      logout: {}
`,
	"embedded on an existing claim and policies": `
persistence: {existingClaim: sessiongate-state, storageClass: fast}
policies: {existingConfigMap: my-policies, files: null}
podDisruptionBudget: {enabled: false}
`,
	"embedded, ephemeral on purpose": `
persistence: {enabled: false}
store: {allowEphemeral: true}
`,
}

// badValueSets must fail to render, with these words: each would break a
// promise (sign-outs forgotten at a restart) or not start.
var badValueSets = map[string]struct{ values, want string }{
	"embedded without persistence":           {`persistence: {enabled: false}`, "forgets every sign-out"},
	"redis without a URL":                    {`store: {type: redis}`, "store.type redis: set store.redis.existingSecret"},
	"no policies":                            {`policies: {files: null}`, "no policies"},
	"unknown store":                          {`store: {type: etcd}`, `store.type "etcd"`},
	"grace period too short":                 {`shutdown: {terminationGracePeriodSeconds: 20}`, "terminationGracePeriodSeconds"},
	"admin API without a token":              {`admin: {enabled: true}`, "admin.existingSecret"},
	"admin API, client CA without TLS":       {`admin: {enabled: true, existingSecret: a, clientCA: {existingSecret: ca}}`, "needs admin.tls.existingSecret"},
	"admin API, TLS alone":                   {`admin: {enabled: true, tls: {existingSecret: t}}`, "admin.existingSecret"},
	"redis and sign-in without session keys": {`store: {type: redis, redis: {existingSecret: sessiongate-redis-url}}`, "set sessionKey.existingSecret"},
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func capabilities(t *testing.T) *common.Capabilities {
	t.Helper()
	kv, err := common.ParseKubeVersion(minKube)
	if err != nil {
		t.Fatal(err)
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	return caps
}

func parseValues(t *testing.T, s string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("values: %v", err)
	}
	return v
}

// render renders the chart with values as `helm template` would.
func render(t *testing.T, ch *chartv2.Chart, values string) (map[string]string, error) {
	t.Helper()
	vals, err := util.ToRenderValues(ch, parseValues(t, values),
		common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, capabilities(t))
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, vals)
}

// objects is a rendering decoded into API types, by kind and name.
type objects struct {
	deployment  *appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	claims      map[string]*corev1.PersistentVolumeClaim
	pdb         *policyv1.PodDisruptionBudget
	netpol      *networkingv1.NetworkPolicy
	monitor     *monitoringv1.ServiceMonitor
	rule        *monitoringv1.PrometheusRule
	kinds       []string
	manifestsIn []string // template files that rendered an object
}

// decode reads every rendered manifest strictly into its API type: an
// unknown or misspelt field, or a value of the wrong type, fails.
func decode(t *testing.T, out map[string]string) *objects {
	t.Helper()
	o := &objects{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
	for _, file := range slices.Sorted(func(yield func(string) bool) {
		for k := range out {
			if !yield(k) {
				return
			}
		}
	}) {
		if strings.HasSuffix(file, "NOTES.txt") {
			continue
		}
		for i, doc := range strings.Split(out[file], "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s #%d: %v", file, i, err)
			}
			kind := tm.APIVersion + "/" + tm.Kind
			o.kinds = append(o.kinds, kind)
			o.manifestsIn = append(o.manifestsIn, filepath.Base(file))
			var obj any
			switch kind {
			case "apps/v1/Deployment":
				if o.deployment != nil {
					t.Fatalf("two Deployments")
				}
				o.deployment = &appsv1.Deployment{}
				obj = o.deployment
			case "v1/Service":
				s := &corev1.Service{}
				obj = s
				defer func() { o.services[s.Name] = s }()
			case "v1/ConfigMap":
				c := &corev1.ConfigMap{}
				obj = c
				defer func() { o.configMaps[c.Name] = c }()
			case "v1/Secret":
				s := &corev1.Secret{}
				obj = s
				defer func() { o.secrets[s.Name] = s }()
			case "v1/PersistentVolumeClaim":
				c := &corev1.PersistentVolumeClaim{}
				obj = c
				defer func() { o.claims[c.Name] = c }()
			case "policy/v1/PodDisruptionBudget":
				o.pdb = &policyv1.PodDisruptionBudget{}
				obj = o.pdb
			case "networking.k8s.io/v1/NetworkPolicy":
				o.netpol = &networkingv1.NetworkPolicy{}
				obj = o.netpol
			case "monitoring.coreos.com/v1/ServiceMonitor":
				o.monitor = &monitoringv1.ServiceMonitor{}
				obj = o.monitor
			case "monitoring.coreos.com/v1/PrometheusRule":
				o.rule = &monitoringv1.PrometheusRule{}
				obj = o.rule
			default:
				t.Fatalf("%s: kind %s is not one the test knows: add it", file, kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s: %s does not decode strictly into its API type: %v", file, kind, err)
			}
		}
	}
	return o
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestChartRenders renders every value set, decodes every manifest into
// its API type and checks what the chart promises: a store that keeps
// sign-outs, the restricted pod security profile, a drain that fits in the
// grace period, ports and probes that agree, the admin port off unless
// asked, and policies that `sessiongate validate` accepts.
func TestChartRenders(t *testing.T) {
	ch := loadChart(t)
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, ch, values)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			o := decode(t, out)
			vals := parseValues(t, values)
			checkDeployment(t, o, vals)
			checkPolicies(t, o, name == "defaults")
		})
	}
}

func TestChartRefusesBrokenValues(t *testing.T) {
	ch := loadChart(t)
	for name, tc := range badValueSets {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, ch, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestChartLints runs Helm's linter on every value set: no error, no
// warning.
func TestChartLints(t *testing.T) {
	kv, err := common.ParseKubeVersion(minKube)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			l := lint.RunAll(chartDir, parseValues(t, values), namespace, lint.WithKubeVersion(kv))
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %v", m)
				}
			}
		})
	}
}

// TestChartAlertsAreTheProjects: the PrometheusRule carries exactly
// deploy/prometheus/sessiongate-alerts.yaml (one owner; promtool tests it):
// the chart's files/sessiongate-alerts.yaml is a link to it, which Helm's
// loader follows.
func TestChartAlertsAreTheProjects(t *testing.T) {
	want, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chartDir, "files", "sessiongate-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s/files/sessiongate-alerts.yaml differs from %s: it should be a link to it", chartDir, alertsFile)
	}
	out, err := render(t, loadChart(t), valueSets["redis, everything on"])
	if err != nil {
		t.Fatal(err)
	}
	o := decode(t, out)
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(want, &file); err != nil {
		t.Fatal(err)
	}
	if o.rule == nil || len(o.rule.Spec.Groups) != len(file.Groups) || len(file.Groups) == 0 {
		t.Fatalf("PrometheusRule groups %v, want those of %s", o.rule, alertsFile)
	}
	for i, g := range file.Groups {
		if got := o.rule.Spec.Groups[i]; got.Name != g.Name || len(got.Rules) != len(g.Rules) {
			t.Errorf("PrometheusRule group %d: %s with %d rules, want %s with %d", i, got.Name, len(got.Rules), g.Name, len(g.Rules))
		}
	}
}

func env(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func durationEnv(t *testing.T, e map[string]corev1.EnvVar, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(e[name].Value)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, e[name].Value, err)
	}
	return d
}

func checkDeployment(t *testing.T, o *objects, vals map[string]any) {
	t.Helper()
	d := o.deployment
	if d == nil {
		t.Fatal("no Deployment")
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	e := env(c)
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	// mountedAt returns the volume holding path.
	mountedAt := func(path string) (corev1.Volume, bool) {
		for name, m := range mounts {
			if strings.HasPrefix(path, m.MountPath+"/") {
				v, ok := volumes[name]
				return v, ok
			}
		}
		return corev1.Volume{}, false
	}

	// The store keeps sign-outs across restarts: the embedded store's state
	// file on a claim, one replica, Recreate; or Redis from a Secret.
	store := e["SESSIONGATE_STORE"]
	state := e["SESSIONGATE_STATE_FILE"].Value
	switch {
	case store.Value == "memory":
		if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("embedded store: %d replicas, strategy %s; want 1 and Recreate (one process per state file)", *d.Spec.Replicas, d.Spec.Strategy.Type)
		}
		v, ok := mountedAt(state)
		switch {
		case state == "" && isEphemeralOnPurpose(vals):
		case state == "" || !ok || v.PersistentVolumeClaim == nil:
			t.Errorf("embedded store: SESSIONGATE_STATE_FILE=%q is not on a PersistentVolumeClaim: a restart forgets sign-outs", state)
		default:
			claim := v.PersistentVolumeClaim.ClaimName
			if _, made := o.claims[claim]; !made && claim != existingClaim(vals) {
				t.Errorf("state volume claims %q, which the chart neither makes nor was given", claim)
			}
		}
	case store.ValueFrom != nil && store.ValueFrom.SecretKeyRef != nil:
		ref := store.ValueFrom.SecretKeyRef
		if s, ok := o.secrets[ref.Name]; ok {
			if !strings.HasPrefix(s.StringData[ref.Key], "redis") {
				t.Errorf("Secret %s key %s: %q, want the Redis URL", ref.Name, ref.Key, s.StringData[ref.Key])
			}
		} else if ref.Name != "sessiongate-redis-url" {
			t.Errorf("SESSIONGATE_STORE from Secret %s, which is neither rendered nor the one given", ref.Name)
		}
		if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
			t.Errorf("Redis store: want a rolling update with maxUnavailable 0")
		}
	default:
		t.Errorf("SESSIONGATE_STORE %+v: want memory, or a Redis URL from a Secret", store)
	}

	// Restricted pod security, as the Kubernetes manifests.
	ps, cs := pod.SecurityContext, c.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
		cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("pod or container security context is not the restricted profile: %+v %+v", ps, cs)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("want automountServiceAccountToken and enableServiceLinks false")
	}

	// The drain fits in the grace period: preStop sleep, drain delay,
	// shutdown timeout.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("no preStop sleep")
	}
	need := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second + durationEnv(t, e, "SESSIONGATE_DRAIN_DELAY") + durationEnv(t, e, "SESSIONGATE_SHUTDOWN_TIMEOUT")
	if grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v, not above preStop + drain + shutdown = %v", grace, need)
	}

	// Ports: the Service's targets are container ports; probes on http.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, want := range []struct{ name, env string }{{"grpc", "SESSIONGATE_GRPC_ADDR"}, {"http", "SESSIONGATE_HTTP_ADDR"}} {
		if got := fmt.Sprintf(":%d", ports[want.name]); e[want.env].Value != got {
			t.Errorf("%s=%q, but container port %s is %s", want.env, e[want.env].Value, want.name, got)
		}
	}
	svc := o.services[d.Name]
	if svc == nil {
		t.Fatalf("no Service %s", d.Name)
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := ports[p.TargetPort.StrVal]; !ok {
			t.Errorf("Service port %s targets %q, not a container port", p.Name, p.TargetPort.StrVal)
		}
	}
	if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "http" {
			t.Errorf("%s probe %+v: want httpGet on port http", name, p)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe path %s, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}

	// The admin listener only when asked.
	_, adminPort := ports["admin"]
	_, adminEnv := e["SESSIONGATE_ADMIN_ADDR"]
	if asked := nested(vals, "admin", "enabled") == true; adminPort != asked || adminEnv != asked {
		t.Errorf("admin enabled=%v but container port %v, SESSIONGATE_ADMIN_ADDR %v", asked, adminPort, adminEnv)
	}

	// The admin API's token, certificate pair and client CAs: files in the
	// given Secrets, mounted; a token or client certificates, or nothing runs.
	for env, secret := range map[string][]string{
		"SESSIONGATE_ADMIN_TOKEN_FILE":     {"admin", "existingSecret"},
		"SESSIONGATE_ADMIN_TLS_CERT_FILE":  {"admin", "tls", "existingSecret"},
		"SESSIONGATE_ADMIN_TLS_KEY_FILE":   {"admin", "tls", "existingSecret"},
		"SESSIONGATE_ADMIN_CLIENT_CA_FILE": {"admin", "clientCA", "existingSecret"},
	} {
		f, set := e[env]
		given := adminEnv && nested(vals, secret...) != nil && nested(vals, secret...) != ""
		if set != given {
			t.Errorf("%s set: %v, but %s given: %v", env, set, strings.Join(secret, "."), given)
			continue
		}
		if !set {
			continue
		}
		if v, mounted := mountedAt(f.Value); !mounted || v.Secret == nil || v.Secret.SecretName != nested(vals, secret...) {
			t.Errorf("%s=%q is not in the given Secret, mounted: %+v", env, f.Value, v)
		}
	}
	if _, token := e["SESSIONGATE_ADMIN_TOKEN_FILE"]; adminEnv && !token {
		if _, ca := e["SESSIONGATE_ADMIN_CLIENT_CA_FILE"]; !ca {
			t.Errorf("the admin API runs with neither a token nor client certificates")
		}
	}

	// --session-key-file: a file in a mounted Secret.
	if kf, ok := e["SESSIONGATE_SESSION_KEY_FILE"]; ok {
		v, ok := mountedAt(kf.Value)
		if !ok || v.Secret == nil || v.Secret.SecretName != nested(vals, "sessionKey", "existingSecret") ||
			filepath.Base(kf.Value) != "keys" {
			t.Errorf("SESSIONGATE_SESSION_KEY_FILE=%q is not the key of the given Secret mounted: %+v", kf.Value, v)
		}
	} else if nested(vals, "sessionKey", "existingSecret") != nil {
		t.Errorf("sessionKey.existingSecret given, but no SESSIONGATE_SESSION_KEY_FILE")
	}

	// PDB, NetworkPolicy and ServiceMonitor select these pods and ports.
	if o.pdb != nil && !selects(o.pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget does not select the pods")
	}
	if o.netpol != nil {
		if !selects(o.netpol.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("NetworkPolicy does not select the pods")
		}
		for _, r := range o.netpol.Spec.Ingress {
			for _, p := range r.Ports {
				if _, ok := ports[p.Port.StrVal]; !ok {
					t.Errorf("NetworkPolicy allows port %v, not a container port", p.Port)
				}
			}
		}
	}
	if o.monitor != nil {
		if !selects(o.monitor.Spec.Selector.MatchLabels, svc.Labels) || len(o.monitor.Spec.Endpoints) != 1 ||
			o.monitor.Spec.Endpoints[0].Port != "http" || o.monitor.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor does not scrape the Service's http port /metrics: %+v", o.monitor.Spec)
		}
	}
}

// checkPolicies lays the policies' ConfigMap out as the kubelet mounts it
// and loads it as `sessiongate validate` does.
// Every login.oidc client_secret_file must be a file of a Secret the pod
// mounts read-only; here it is replaced by a local file. wantSignIn asks
// for at least one login.oidc policy with the sign-in wiring of the
// examples (a refresh token, the default callback, the access token for
// the application).
func checkPolicies(t *testing.T, o *objects, wantSignIn bool) {
	t.Helper()
	var cm *corev1.ConfigMap
	for _, v := range o.deployment.Spec.Template.Spec.Volumes {
		if v.Name == "policies" && v.ConfigMap != nil {
			cm = o.configMaps[v.ConfigMap.Name]
			if cm == nil {
				return // a ConfigMap of the operator's own
			}
		}
	}
	if cm == nil || len(cm.Data) == 0 {
		t.Fatal("no policies ConfigMap mounted")
	}
	dir, secrets := t.TempDir(), t.TempDir()
	var signIn int
	for k, v := range cm.Data {
		var p struct {
			Login struct {
				OIDC *struct {
					ClientSecretFile string   `json:"client_secret_file"`
					Scopes           []string `json:"scopes"`
					CallbackPath     string   `json:"callback_path"`
				} `json:"oidc"`
			} `json:"login"`
			Upstream struct {
				AccessToken string `json:"access_token"`
			} `json:"upstream"`
		}
		if err := yaml.Unmarshal([]byte(v), &p); err != nil {
			t.Fatalf("policy %s: %v", k, err)
		}
		if oc := p.Login.OIDC; oc != nil && oc.ClientSecretFile != "" {
			if !inReadOnlySecret(o.deployment.Spec.Template.Spec, oc.ClientSecretFile) {
				t.Errorf("policy %s: login.oidc.client_secret_file %q is not in a Secret the pod mounts read-only", k, oc.ClientSecretFile)
			}
			local := filepath.Join(secrets, k)
			if err := os.WriteFile(local, []byte("made-up-client-secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			v = strings.ReplaceAll(v, oc.ClientSecretFile, local)
			if slices.Contains(oc.Scopes, "offline_access") && oc.CallbackPath == "" && p.Upstream.AccessToken != "" && p.Upstream.AccessToken != "none" {
				signIn++
			}
		}
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tokens := token.NewProvider(token.Options{Logger: slog.New(slog.DiscardHandler), Clock: authz.SystemClock{}})
	set, err := policy.LoadDir(dir, policy.Options{NewVerifier: func(_ string, tc policy.TokenConfig) (authz.Verifier, error) {
		return tokens.Verifier(token.Config(tc))
	}})
	if err != nil {
		t.Fatalf("the chart's policies do not validate:\n%v", err)
	}
	if w := set.Warnings(); len(w) > 0 {
		t.Errorf("the chart's policies have warnings:\n%v", w)
	}
	if wantSignIn && signIn == 0 {
		t.Errorf("no login.oidc policy with a client secret from a Secret, offline_access, the default callback and upstream.access_token: the example application must sign users in")
	}
}

// inReadOnlySecret reports whether path lies in a Secret volume that the
// pod's container mounts read-only.
func inReadOnlySecret(pod corev1.PodSpec, path string) bool {
	for _, m := range pod.Containers[0].VolumeMounts {
		if !m.ReadOnly || !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName != "" {
				return true
			}
		}
	}
	return false
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func nested(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func isEphemeralOnPurpose(vals map[string]any) bool {
	return nested(vals, "store", "allowEphemeral") == true && nested(vals, "persistence", "enabled") == false
}

func existingClaim(vals map[string]any) any { return nested(vals, "persistence", "existingClaim") }
