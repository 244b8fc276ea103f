package deploy

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The manifests are checked with small structs of the fields that matter;
// no Kubernetes library is needed to read YAML.

// The names the sessiongate manifests use.
const (
	k8sName         = "sessiongate"
	k8sRedis        = "sessiongate-redis"
	k8sPolicies     = "sessiongate-policies"
	k8sRedisSecret  = "sessiongate-redis" // the operator's, with Redis' password
	k8sGRPCPortName = "grpc"
	k8sHTTPPortName = "http"
)

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
	Name      string          `yaml:"name"`
	Image     string          `yaml:"image"`
	Command   []string        `yaml:"command"`
	Args      []string        `yaml:"args"`
	Env       []envVar        `yaml:"env"`
	Ports     []containerPort `yaml:"ports"`
	Lifecycle struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
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

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *secretKeyRef `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type secretKeyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional *bool  `yaml:"optional"`
}

// env returns the container's literal environment, as written: $(NAME)
// not expanded, and "" for entries from a Secret.
func (c *container) env() map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// secrets are the operator's Secrets, which the manifests name but do not
// hold: name → key → value.
type secrets map[string]map[string]string

// kubeEnv returns the container's environment as the kubelet makes it: an
// entry from a Secret gets the Secret's value (one the operator has not
// made fails the test, as the pod would not start), and $(NAME) in a
// literal value becomes the value of an earlier entry.
func (c *container) kubeEnv(t *testing.T, s secrets) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			m[e.Name] = expandVars(e.Value, m)
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			v, ok := s[r.Name][r.Key]
			if !ok {
				t.Fatalf("container %s: env %s from Secret %s key %s, which the operator does not make", c.Name, e.Name, r.Name, r.Key)
			}
			m[e.Name] = v
		default:
			t.Fatalf("container %s: env %s: only value and valueFrom.secretKeyRef are read here", c.Name, e.Name)
		}
	}
	return m
}

// kubeArgs returns the container's args with $(NAME) of its environment
// expanded, as the kubelet starts it.
func (c *container) kubeArgs(env map[string]string) []string {
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		out[i] = expandVars(a, env)
	}
	return out
}

// expandVars is Kubernetes' expansion of a container's command, args and
// env values: $(NAME) becomes the value of NAME where vars has it and stays
// as written where it does not, $$ is a literal $, and any other $ (an
// unclosed $( too) is left alone.
func expandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// secretVar returns the Secret and key behind s when s is exactly $(NAME)
// and NAME an entry of the container's env, before the entry named before
// (Kubernetes expands only those in env values; "" for args), whose value
// comes from a Secret that must exist.
func (c *container) secretVar(s, before string) (secretKeyRef, bool) {
	inner, ok1 := strings.CutPrefix(s, "$(")
	name, ok2 := strings.CutSuffix(inner, ")")
	if !ok1 || !ok2 || name == "" || strings.ContainsAny(name, "$()") {
		return secretKeyRef{}, false
	}
	for _, e := range c.Env {
		if e.Name == before {
			break
		}
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			r := *e.ValueFrom.SecretKeyRef
			return secretKeyRef{Name: r.Name, Key: r.Key}, r.Optional == nil || !*r.Optional
		}
	}
	return secretKeyRef{}, false
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
	TerminationGracePeriodSeconds *int  `yaml:"terminationGracePeriodSeconds"`
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
	SecurityContext               struct {
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
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
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
	image     string // the image name kustomize rewrites ...
	imageRef  string // ... into this reference
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
			Name    string `yaml:"name"`
			NewName string `yaml:"newName"`
			NewTag  string `yaml:"newTag"`
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
	img := k.Images[0]
	c := &cluster{namespace: k.Namespace, image: img.Name, imageRef: cmp.Or(img.NewName, img.Name) + ":" + img.NewTag,
		configMaps: map[string]map[string]string{}}
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

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
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

// TestExpandVars holds expandVars to Kubernetes' rules for $(VAR) in a
// container's command, args and env values, as its documentation states them.
func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "a", "PW": "0f1e"}
	for in, want := range map[string]string{
		"$(A)":                   "a",
		"redis://:$(PW)@host":    "redis://:0f1e@host",
		"$(A)$(A)-$(PW)":         "aa-0f1e",
		"$$(A)":                  "$(A)",
		"$$$(A)":                 "$a",
		"$(UNSET)":               "$(UNSET)",
		"$(A":                    "$(A",
		"$A and $":               "$A and $",
		"test \"$(cmd)\" = PONG": "test \"$(cmd)\" = PONG",
	} {
		if got := expandVars(in, vars); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}
