package deploy

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The manifests are checked with small structs of the fields that matter;
// no Kubernetes library is needed to read YAML.

type meta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// intOrString is a port or count written either as a number or a name.
type intOrString string

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

type probe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	GRPC *struct {
		Port    int     `yaml:"port"`
		Service *string `yaml:"service"`
	} `yaml:"grpc"`
	TCPSocket *struct {
		Port intOrString `yaml:"port"`
	} `yaml:"tcpSocket"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports          []containerPort `yaml:"ports"`
	ReadinessProbe *probe          `yaml:"readinessProbe"`
	LivenessProbe  *probe          `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

// env returns the container's literal environment.
func (c *container) env() map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// port resolves a probe or Service target port (name or number).
func (c *container) port(p intOrString) (containerPort, bool) {
	for _, cp := range c.Ports {
		if cp.Name == string(p) || strconv.Itoa(cp.ContainerPort) == string(p) {
			return cp, true
		}
	}
	return containerPort{}, false
}

type podSpec struct {
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks           *bool `yaml:"enableServiceLinks"`
	SecurityContext              struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

// workload is a Deployment or a StatefulSet.
type workload struct {
	Spec struct {
		Replicas *int     `yaml:"replicas"`
		Selector selector `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name        string      `yaml:"name"`
			Port        int         `yaml:"port"`
			TargetPort  intOrString `yaml:"targetPort"`
			AppProtocol string      `yaml:"appProtocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// object is one manifest: its kind and name, and the document to decode
// into the kind's struct.
type object struct {
	file       string
	line       int
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	node       *yaml.Node
}

func (o object) String() string {
	return fmt.Sprintf("%s:%d: %s/%s", o.file, o.line, o.Kind, o.Metadata.Name)
}

func (o object) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%v: %v", o, err)
	}
}

// cluster is every manifest of deploy/kubernetes, as kustomize would apply it.
type cluster struct {
	namespace string
	image     string // the image name kustomize rewrites
	objects   []object
	// configMaps are the generated ConfigMaps: name → key → content.
	configMaps map[string]map[string]string
}

func loadCluster(t *testing.T) *cluster {
	t.Helper()
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
		ConfigMapGenerator []struct {
			Name    string   `yaml:"name"`
			Files   []string `yaml:"files"`
			Options struct {
				DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
			} `yaml:"options"`
		} `yaml:"configMapGenerator"`
	}
	kpath := filepath.Join(kubernetesDir, "kustomization.yaml")
	if err := yamlDocs(t, kpath)[0].Decode(&k); err != nil {
		t.Fatalf("%s: %v", kpath, err)
	}
	// Every manifest of the directory is a resource of the kustomization, and
	// every resource exists: nothing is silently left out of `apply -k`.
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if f != kpath {
			want = append(want, filepath.Base(f))
		}
	}
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, want) {
		t.Errorf("%s: resources %v, want the directory's manifests %v", kpath, got, want)
	}
	if len(k.Images) != 1 {
		t.Fatalf("%s: want one images entry for sessiongate, got %d", kpath, len(k.Images))
	}
	c := &cluster{namespace: k.Namespace, image: k.Images[0].Name, configMaps: map[string]map[string]string{}}
	for _, g := range k.ConfigMapGenerator {
		// A hash suffix would turn every policy change into a rollout
		// instead of a hot reload.
		if !g.Options.DisableNameSuffixHash {
			t.Errorf("%s: configMapGenerator %s: want options.disableNameSuffixHash: true", kpath, g.Name)
		}
		data := map[string]string{}
		for _, f := range g.Files {
			b, err := os.ReadFile(filepath.Join(kubernetesDir, f))
			if err != nil {
				t.Fatalf("%s: configMapGenerator %s: %v", kpath, g.Name, err)
			}
			data[filepath.Base(f)] = string(b)
		}
		c.configMaps[g.Name] = data
	}
	for _, r := range k.Resources {
		path := filepath.Join(kubernetesDir, r)
		for _, n := range yamlDocs(t, path) {
			o := object{file: path, line: n.Line, node: n}
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s:%d: %v", path, n.Line, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%v: want apiVersion, kind and metadata.name", o)
			}
			if o.Metadata.Namespace != "" && o.Metadata.Namespace != c.namespace {
				t.Errorf("%v: namespace %q, but the kustomization puts everything in %q", o, o.Metadata.Namespace, c.namespace)
			}
			c.objects = append(c.objects, o)
		}
	}
	return c
}

// get returns the object of kind and name, failing the test without one.
func (c *cluster) get(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range c.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("%s: no %s %q", kubernetesDir, kind, name)
	return object{}
}

func (c *cluster) all(kind string) []object {
	var out []object
	for _, o := range c.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// podsOf returns the workload whose pod template labels match sel.
func (c *cluster) podsOf(t *testing.T, sel map[string]string) (object, workload) {
	t.Helper()
	var found []object
	var w workload
	for _, o := range c.objects {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		var cand workload
		o.decode(t, &cand)
		if matches(sel, cand.Spec.Template.Metadata.Labels) {
			found, w = append(found, o), cand
		}
	}
	if len(found) != 1 {
		t.Fatalf("selector %v matches the pods of %v, want exactly one workload", sel, found)
	}
	return found[0], w
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// The names the sessiongate manifests use.
const (
	k8sName         = "sessiongate"
	k8sRedis        = "sessiongate-redis"
	k8sPolicies     = "sessiongate-policies"
	k8sGRPCPortName = "grpc"
	k8sHTTPPortName = "http"
)

func TestKubernetesKinds(t *testing.T) {
	c := loadCluster(t)
	for kind, names := range map[string][]string{
		"Namespace":           {c.namespace},
		"Deployment":          {k8sName},
		"Service":             {k8sName, k8sRedis},
		"PodDisruptionBudget": {k8sName},
		"StatefulSet":         {k8sRedis},
		"NetworkPolicy":       {k8sRedis},
	} {
		for _, n := range names {
			c.get(t, kind, n)
		}
	}
	if c.configMaps[k8sPolicies] == nil {
		t.Errorf("%s: no ConfigMap %q", kubernetesDir, k8sPolicies)
	}
	ns := c.get(t, "Namespace", c.namespace)
	if ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("%v: want label pod-security.kubernetes.io/enforce: restricted", ns)
	}
}

// TestKubernetesPodsHardened holds every pod to the "restricted" Pod
// Security Standard that the namespace enforces, and more: read-only root,
// no service account token, resources, and both probes on real ports.
func TestKubernetesPodsHardened(t *testing.T) {
	c := loadCluster(t)
	for _, o := range append(c.all("Deployment"), c.all("StatefulSet")...) {
		var w workload
		o.decode(t, &w)
		ps := w.Spec.Template.Spec
		if !matches(w.Spec.Selector.MatchLabels, w.Spec.Template.Metadata.Labels) {
			t.Errorf("%v: selector %v does not match its pod labels", o, w.Spec.Selector.MatchLabels)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("%v: want automountServiceAccountToken: false (nothing here calls the API server)", o)
		}
		if ps.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("%v: want securityContext.seccompProfile.type RuntimeDefault", o)
		}
		for _, ct := range ps.Containers {
			where := fmt.Sprintf("%v container %s", o, ct.Name)
			sc := ct.SecurityContext
			if nonRoot := sc.RunAsNonRoot; (nonRoot == nil || !*nonRoot) && (ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot) {
				t.Errorf("%s: want runAsNonRoot: true", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: want allowPrivilegeEscalation: false", where)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: want readOnlyRootFilesystem: true", where)
			}
			if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: want capabilities drop [ALL] and nothing added", where)
			}
			for _, r := range []string{"cpu", "memory"} {
				if ct.Resources.Requests[r] == "" {
					t.Errorf("%s: no resources.requests.%s", where, r)
				}
			}
			if ct.Resources.Limits["memory"] == "" {
				t.Errorf("%s: no resources.limits.memory", where)
			}
			for name, p := range map[string]*probe{"readinessProbe": ct.ReadinessProbe, "livenessProbe": ct.LivenessProbe} {
				if p == nil {
					t.Errorf("%s: no %s", where, name)
					continue
				}
				var pp intOrString
				switch {
				case p.HTTPGet != nil:
					pp = p.HTTPGet.Port
				case p.GRPC != nil:
					pp = intOrString(strconv.Itoa(p.GRPC.Port))
				case p.TCPSocket != nil:
					pp = p.TCPSocket.Port
				case p.Exec != nil:
					continue
				}
				if _, ok := ct.port(pp); !ok {
					t.Errorf("%s: %s on port %q, which the container does not declare", where, name, pp)
				}
			}
		}
	}
}

// TestKubernetesServices: every Service selects one workload's pods and
// targets ports those pods declare.
func TestKubernetesServices(t *testing.T) {
	c := loadCluster(t)
	for _, o := range c.all("Service") {
		var s service
		o.decode(t, &s)
		_, w := c.podsOf(t, s.Spec.Selector)
		for _, p := range s.Spec.Ports {
			var ok bool
			for _, ct := range w.Spec.Template.Spec.Containers {
				_, found := ct.port(p.TargetPort)
				ok = ok || found
			}
			if !ok {
				t.Errorf("%v: port %s targets %q, which its pods do not declare", o, p.Name, p.TargetPort)
			}
		}
	}
	var sg service
	c.get(t, "Service", k8sName).decode(t, &sg)
	var grpcOK bool
	for _, p := range sg.Spec.Ports {
		grpcOK = grpcOK || (p.TargetPort == k8sGRPCPortName && p.AppProtocol == "grpc")
	}
	if !grpcOK {
		t.Errorf("Service %s: want a port to %q with appProtocol grpc (HTTP/2 for Envoy and meshes)", k8sName, k8sGRPCPortName)
	}
}

// sessiongateDeployment returns the sessiongate container and its pod.
func sessiongateDeployment(t *testing.T, c *cluster) (workload, container) {
	t.Helper()
	var w workload
	c.get(t, "Deployment", k8sName).decode(t, &w)
	cs := w.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("Deployment %s: %d containers, want 1", k8sName, len(cs))
	}
	return w, cs[0]
}

func TestKubernetesDeployment(t *testing.T) {
	c := loadCluster(t)
	w, ct := sessiongateDeployment(t, c)
	ps := w.Spec.Template.Spec
	env := ct.env()

	if w.Spec.Replicas == nil || *w.Spec.Replicas < 2 {
		t.Errorf("Deployment %s: want several replicas sharing sessions through Redis", k8sName)
	}
	// Service links would put SESSIONGATE_SERVICE_HOST and the like in the
	// environment, where sessiongate reads SESSIONGATE_* as flags.
	if ps.EnableServiceLinks == nil || *ps.EnableServiceLinks {
		t.Errorf("Deployment %s: want enableServiceLinks: false", k8sName)
	}
	if ct.Image != c.image {
		t.Errorf("Deployment %s: image %q, but the kustomization rewrites %q", k8sName, ct.Image, c.image)
	}
	if !slices.Equal(ct.Args, []string{"serve"}) || len(ct.Command) > 0 {
		t.Errorf("Deployment %s: command %q args %q, want the image's entrypoint with args [serve]", k8sName, ct.Command, ct.Args)
	}
	// The image's user, by number, so that runAsNonRoot can verify it.
	df, err := parseDockerfile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	uid, _, _ := strings.Cut(df.final("USER")[0].args, ":")
	if u := ps.SecurityContext.RunAsUser; u == nil || strconv.Itoa(*u) != uid {
		t.Errorf("Deployment %s: want runAsUser %s, the image's USER", k8sName, uid)
	}

	// Listen addresses match the declared ports.
	for name, key := range map[string]string{k8sGRPCPortName: "SESSIONGATE_GRPC_ADDR", k8sHTTPPortName: "SESSIONGATE_HTTP_ADDR"} {
		cp, ok := ct.port(intOrString(name))
		if !ok || strconv.Itoa(cp.ContainerPort) != port(t, env[key]) {
			t.Errorf("Deployment %s: %s=%q, but container port %q is %d", k8sName, key, env[key], name, cp.ContainerPort)
		}
	}
	// The policies are the ConfigMap, mounted read-only where
	// SESSIONGATE_POLICIES points.
	var mounted bool
	for _, v := range ps.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != k8sPolicies {
			continue
		}
		for _, vm := range ct.VolumeMounts {
			mounted = mounted || (vm.Name == v.Name && vm.MountPath == env["SESSIONGATE_POLICIES"] && vm.ReadOnly)
		}
	}
	if !mounted {
		t.Errorf("Deployment %s: ConfigMap %s is not mounted read-only at SESSIONGATE_POLICIES=%q", k8sName, k8sPolicies, env["SESSIONGATE_POLICIES"])
	}
	// Scale-out: the store is the Redis Service of these manifests.
	checkRedisURL(t, c, env["SESSIONGATE_STORE"])
	// GOMEMLIMIT below the memory limit, or the GC would not act before the
	// kernel kills the container.
	limit, err1 := bytesOf(ct.Resources.Limits["memory"])
	soft, err2 := bytesOf(env["GOMEMLIMIT"])
	if err1 != nil || err2 != nil || soft >= limit {
		t.Errorf("Deployment %s: GOMEMLIMIT=%q, want below limits.memory %q (%v %v)", k8sName, env["GOMEMLIMIT"], ct.Resources.Limits["memory"], err1, err2)
	}

	// The PodDisruptionBudget covers these pods and lets at least one stay.
	var pdb struct {
		Spec struct {
			MaxUnavailable *intOrString `yaml:"maxUnavailable"`
			MinAvailable   *intOrString `yaml:"minAvailable"`
			Selector       selector     `yaml:"selector"`
		} `yaml:"spec"`
	}
	c.get(t, "PodDisruptionBudget", k8sName).decode(t, &pdb)
	if !matches(pdb.Spec.Selector.MatchLabels, w.Spec.Template.Metadata.Labels) {
		t.Errorf("PodDisruptionBudget %s: selector does not match the Deployment's pods", k8sName)
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || w.Spec.Replicas == nil || atoi(string(*mu)) < 1 || atoi(string(*mu)) >= *w.Spec.Replicas {
		t.Errorf("PodDisruptionBudget %s: want maxUnavailable between 1 and replicas-1", k8sName)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// checkRedisURL: SESSIONGATE_STORE is redis://SERVICE:PORT of the Redis
// Service here, whose port reaches the Redis container.
func checkRedisURL(t *testing.T, c *cluster, store string) {
	t.Helper()
	u, err := url.Parse(store)
	if err != nil || u.Scheme != "redis" {
		t.Fatalf("SESSIONGATE_STORE=%q, want redis://%s:PORT", store, k8sRedis)
	}
	var s service
	c.get(t, "Service", u.Hostname()).decode(t, &s)
	var ok bool
	for _, p := range s.Spec.Ports {
		ok = ok || strconv.Itoa(p.Port) == u.Port()
	}
	if !ok {
		t.Errorf("SESSIONGATE_STORE=%q: Service %s has no port %s", store, u.Hostname(), u.Port())
	}
	if u.Hostname() != k8sRedis {
		t.Errorf("SESSIONGATE_STORE=%q, want the Service %s", store, k8sRedis)
	}
}

// bytesOf parses a Kubernetes memory quantity (512Mi) or a GOMEMLIMIT
// (450MiB).
func bytesOf(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// TestKubernetesNetworkPolicy: only sessiongate's pods reach Redis, on the
// port Redis listens on.
func TestKubernetesNetworkPolicy(t *testing.T) {
	c := loadCluster(t)
	var np struct {
		Spec struct {
			PodSelector selector `yaml:"podSelector"`
			Ingress     []struct {
				From []struct {
					PodSelector *selector `yaml:"podSelector"`
				} `yaml:"from"`
				Ports []struct {
					Port intOrString `yaml:"port"`
				} `yaml:"ports"`
			} `yaml:"ingress"`
		} `yaml:"spec"`
	}
	c.get(t, "NetworkPolicy", k8sRedis).decode(t, &np)
	redis, rw := c.podsOf(t, np.Spec.PodSelector.MatchLabels)
	if redis.Metadata.Name != k8sRedis {
		t.Fatalf("NetworkPolicy %s selects the pods of %v", k8sRedis, redis)
	}
	sg, _ := sessiongateDeployment(t, c)
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil ||
		!matches(np.Spec.Ingress[0].From[0].PodSelector.MatchLabels, sg.Spec.Template.Metadata.Labels) {
		t.Fatalf("NetworkPolicy %s: want one ingress rule from sessiongate's pods", k8sRedis)
	}
	for _, p := range np.Spec.Ingress[0].Ports {
		if _, ok := rw.Spec.Template.Spec.Containers[0].port(p.Port); !ok {
			t.Errorf("NetworkPolicy %s: port %q is not a port of the Redis container", k8sRedis, p.Port)
		}
	}
}

// writeConfigMapMount lays out a ConfigMap's data the way the kubelet
// mounts it: the files in a timestamped directory, a ..data symlink to it,
// and one symlink per key through ..data.
func writeConfigMapMount(t *testing.T, data map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_01_02_03_04_05.000000001"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// policiesConfigMap returns the policies' ConfigMap data. Every file of
// policies/ is in it: kustomize lists files one by one, and a file left out
// would silently never be deployed.
func policiesConfigMap(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	data := c.configMaps[k8sPolicies]
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "policies", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		want = append(want, filepath.Base(f))
	}
	if got := slices.Sorted(maps.Keys(data)); len(got) == 0 || !slices.Equal(got, want) {
		t.Fatalf("ConfigMap %s: keys %v, want every file of %s/policies: %v", k8sPolicies, got, kubernetesDir, want)
	}
	return data
}

// TestKubernetesPolicies runs the ConfigMap's policies through `sessiongate
// validate`, laid out as the pod sees them.
func TestKubernetesPolicies(t *testing.T) {
	c := loadCluster(t)
	data := policiesConfigMap(t, c)
	for k := range data {
		if !strings.HasSuffix(k, ".yaml") {
			t.Errorf("ConfigMap %s: key %q is not a .yaml policy file", k8sPolicies, k)
		}
	}
	dir := writeConfigMapMount(t, data)
	out, code := runBin(t, "validate", dir)
	if code != 0 {
		t.Fatalf("sessiongate validate on ConfigMap %s: exit %d\n%s", k8sPolicies, code, out)
	}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if name := strings.TrimSuffix(k, ".yaml"); !strings.Contains(out, name) {
			t.Errorf("sessiongate validate did not load policy %q: %s", name, out)
		}
	}
}

// TestKubernetesProbesAgainstServer starts the binary with the Deployment's
// environment and the ConfigMap mounted as the kubelet would, and asks it
// what the probes ask. The store becomes the embedded one: Redis is the
// store's own tests' business; the probes' ports and paths are this one's.
func TestKubernetesProbesAgainstServer(t *testing.T) {
	c := loadCluster(t)
	_, ct := sessiongateDeployment(t, c)
	dir := writeConfigMapMount(t, policiesConfigMap(t, c))
	s := startServe(t, ct.env(), map[string]string{"SESSIONGATE_POLICIES": dir, "SESSIONGATE_STORE": "memory"})

	// Where each declared container port listens in this test.
	listener := map[int]string{}
	for name, addr := range map[string]string{k8sGRPCPortName: s.grpcAddr, k8sHTTPPortName: s.httpAddr} {
		cp, _ := ct.port(intOrString(name))
		listener[cp.ContainerPort] = addr
	}
	for name, p := range map[string]*probe{"readinessProbe": ct.ReadinessProbe, "livenessProbe": ct.LivenessProbe} {
		switch {
		case p.HTTPGet != nil:
			if cp, _ := ct.port(p.HTTPGet.Port); listener[cp.ContainerPort] != s.httpAddr {
				t.Errorf("%s: httpGet on port %q, which is not the HTTP listener", name, p.HTTPGet.Port)
				continue
			}
			code, body, err := s.get(p.HTTPGet.Path)
			if err != nil || code != 200 {
				t.Errorf("%s: GET %s: %d %q %v", name, p.HTTPGet.Path, code, body, err)
			}
		case p.GRPC != nil:
			if listener[p.GRPC.Port] != s.grpcAddr {
				t.Errorf("%s: grpc on port %d, which is not the gRPC listener", name, p.GRPC.Port)
				continue
			}
			svc := ""
			if p.GRPC.Service != nil {
				svc = *p.GRPC.Service
			}
			if st := s.health(t, svc); st != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("%s: grpc health %q: %v", name, svc, st)
			}
		default:
			t.Errorf("%s: want an httpGet or grpc probe the server answers", name)
		}
	}
	// A path the server does not serve fails, so a typo in a probe path would.
	if code, _, err := s.get("/no-such-probe"); err != nil || code == 200 {
		t.Errorf("GET /no-such-probe: %d %v, want a failure status", code, err)
	}
}

// TestRedisArgs starts redis-server with the arguments the manifests give
// it (on a free loopback port and a temporary directory) and PINGs it.
func TestRedisArgs(t *testing.T) {
	bin := requireExternal(t, "redis-server", "redis-server")
	c := loadCluster(t)
	var w workload
	c.get(t, "StatefulSet", k8sRedis).decode(t, &w)
	startRedis(t, bin, w.Spec.Template.Spec.Containers[0].Args)
}

// startRedis runs argv (redis-server and its options) with a loopback port
// and a temporary directory appended, which override any given before, and
// checks that it answers PING.
func startRedis(t *testing.T, bin string, argv []string) {
	t.Helper()
	if len(argv) == 0 || argv[0] != "redis-server" {
		t.Fatalf("redis command %q, want redis-server OPTIONS", argv)
	}
	p := freePort(t)
	args := append(append([]string(nil), argv[1:]...), "--port", p, "--bind", "127.0.0.1", "--dir", t.TempDir())
	r := startProcess(t, cleanEnv(nil), bin, args...)
	if err := waitPing(net.JoinHostPort("127.0.0.1", p), r); err != nil {
		t.Fatalf("redis-server %q: %v\n%s", args, err, r.output())
	}
}
