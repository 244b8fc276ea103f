package deploy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestKustomizeBuild renders the manifests with kustomize itself (kubectl
// kustomize, no cluster needed) and checks that it yields exactly what the
// other tests read from the files: the same objects, all in the namespace,
// the policies' ConfigMap, and the rewritten image.
func TestKustomizeBuild(t *testing.T) {
	kubectl := requireExternal(t, "kubectl", "kubectl 1.27 or later, for kustomize v5; part of the project's machine image")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "kustomize", kubernetesDir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", kubernetesDir, err)
	}
	rendered := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(rendered, out, 0o644); err != nil {
		t.Fatal(err)
	}
	c := loadCluster(t)
	want := map[string]bool{"ConfigMap/" + k8sPolicies: true}
	for _, o := range c.objects {
		want[o.Kind+"/"+o.Metadata.Name] = true
	}
	for _, n := range yamlDocs(t, rendered) {
		var o struct {
			Kind     string            `yaml:"kind"`
			Metadata meta              `yaml:"metadata"`
			Data     map[string]string `yaml:"data"`
			Spec     struct {
				Template struct {
					Spec podSpec `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := n.Decode(&o); err != nil {
			t.Fatal(err)
		}
		id := o.Kind + "/" + o.Metadata.Name
		if !want[id] {
			t.Errorf("kustomize renders %s, which the files do not declare (or twice)", id)
		}
		delete(want, id)
		if o.Kind != "Namespace" && o.Metadata.Namespace != c.namespace {
			t.Errorf("kustomize renders %s in namespace %q, want %q", id, o.Metadata.Namespace, c.namespace)
		}
		if id == "ConfigMap/"+k8sPolicies && !maps.Equal(o.Data, c.configMaps[k8sPolicies]) {
			t.Errorf("kustomize renders ConfigMap %s with keys %v, want the policy files", k8sPolicies, slices.Sorted(maps.Keys(o.Data)))
		}
		if id == "Deployment/"+k8sName {
			if img := o.Spec.Template.Spec.Containers[0].Image; img != c.imageRef {
				t.Errorf("kustomize renders image %q, want %q", img, c.imageRef)
			}
		}
	}
	for id := range want {
		t.Errorf("kustomize does not render %s", id)
	}
}

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
	// Sign-in: the session keys (required with Redis and login.oidc) and
	// every login.oidc client secret are files of Secrets mounted
	// read-only, never of the ConfigMap or the image.
	if f := env["SESSIONGATE_SESSION_KEY_FILE"]; f == "" {
		t.Errorf("Deployment %s: no SESSIONGATE_SESSION_KEY_FILE: replicas sharing Redis refuse login.oidc policies without it", k8sName)
	} else if !inSecretMount(ps, ct, f) {
		t.Errorf("Deployment %s: SESSIONGATE_SESSION_KEY_FILE=%q is not in a Secret volume mounted read-only", k8sName, f)
	}
	var oidcPolicies int
	for k, v := range policiesConfigMap(t, c) {
		f, ok := clientSecretFile(t, k, v)
		if !ok {
			continue
		}
		oidcPolicies++
		if !filepath.IsAbs(f) || !inSecretMount(ps, ct, f) {
			t.Errorf("policy %s: login.oidc.client_secret_file %q is not in a Secret volume mounted read-only", k, f)
		}
	}
	if oidcPolicies == 0 {
		t.Errorf("ConfigMap %s: no login.oidc policy with a client_secret_file: the example application must sign users in", k8sPolicies)
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

// inSecretMount reports whether file lies in a Secret volume that the
// container mounts read-only.
func inSecretMount(ps podSpec, ct container, file string) bool {
	for _, v := range ps.Volumes {
		if v.Secret == nil || v.Secret.SecretName == "" {
			continue
		}
		for _, vm := range ct.VolumeMounts {
			if vm.Name == v.Name && vm.ReadOnly && strings.HasPrefix(file, strings.TrimSuffix(vm.MountPath, "/")+"/") {
				return true
			}
		}
	}
	return false
}

// clientSecretFile returns a policy's login.oidc.client_secret_file, and
// whether it has one.
func clientSecretFile(t *testing.T, name, content string) (string, bool) {
	t.Helper()
	n := policyNode(t, name, content)
	f := mappingValue(n, "login", "oidc", "client_secret_file")
	if f == nil {
		return "", false
	}
	return f.Value, true
}

func policyNode(t *testing.T, name, content string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(content), &doc); err != nil || len(doc.Content) != 1 {
		t.Fatalf("policy %s: %v", name, err)
	}
	return doc.Content[0]
}

// mappingValue follows keys down nested mappings; nil where one is absent.
func mappingValue(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

// withLocalSignIn lays out what the pod gets from its Secrets, here: every
// login.oidc client secret in a file of its own (a made-up secret), and
// the issuer moved to a loopback port where nothing listens, so that no
// test reaches the network. Discovery then fails, which must keep the
// replica ready (only that policy cannot sign in).
func withLocalSignIn(t *testing.T, data map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for k, v := range data {
		n := policyNode(t, k, v)
		if f := mappingValue(n, "login", "oidc", "client_secret_file"); f != nil {
			f.Value = filepath.Join(dir, k+".client-secret")
			if err := os.WriteFile(f.Value, []byte("made-up-client-secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			mappingValue(n, "login", "oidc", "issuer").Value = "http://127.0.0.1:" + freePort(t)
			b, err := yaml.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			v = string(b)
		}
		out[k] = v
	}
	return out
}

// sessionKeyFile writes a key file as the Secret's command makes one.
func sessionKeyFile(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
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

// TestKubernetesRedisPassword: Redis requires a password, which lives only
// in the operator's Secret: Redis' --requirepass and the password of
// sessiongate's store URL are $(VAR) of env entries from that Secret, and no
// Secret (no value) is in the manifests. A NetworkPolicy alone protects
// nothing where the network plugin does not enforce it.
func TestKubernetesRedisPassword(t *testing.T) {
	c := loadCluster(t)
	for _, o := range c.all("Secret") {
		t.Errorf("%v: the manifests hold a Secret, its value in the repository; the operator makes it", o)
	}
	var rw workload
	c.get(t, "StatefulSet", k8sRedis).decode(t, &rw)
	rc := rw.Spec.Template.Spec.Containers[0]
	i := slices.Index(rc.Args, "--requirepass")
	if i < 0 || i+1 == len(rc.Args) {
		t.Fatalf("StatefulSet %s: args %q, want --requirepass $(VAR): without a password any pod that reaches Redis reads and writes every session", k8sRedis, rc.Args)
	}
	want := secretKeyRef{Name: k8sRedisSecret, Key: "password"}
	if ref, ok := rc.secretVar(rc.Args[i+1], ""); !ok || ref != want {
		t.Errorf("StatefulSet %s: --requirepass %q, want $(VAR) of an env entry from Secret %s key %s (not optional)", k8sRedis, rc.Args[i+1], want.Name, want.Key)
	}
	_, ct := sessiongateDeployment(t, c)
	store := ct.env()["SESSIONGATE_STORE"]
	u, err := url.Parse(store)
	if err != nil {
		t.Fatalf("SESSIONGATE_STORE=%q: %v", store, err)
	}
	pw, _ := u.User.Password()
	if ref, ok := ct.secretVar(pw, "SESSIONGATE_STORE"); !ok || ref != want || u.User.Username() != "" {
		t.Errorf("Deployment %s: SESSIONGATE_STORE=%q, want redis://:$(VAR)@…, VAR an earlier env entry from Secret %s key %s, the password of Redis", k8sName, store, want.Name, want.Key)
	}
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
	dir := writeConfigMapMount(t, withLocalSignIn(t, data))
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

// TestKubernetesProbesAgainstServer runs what the manifests run, with the
// operator's Secrets made here: Redis with the StatefulSet's arguments and
// environment, and the binary with the Deployment's environment, the
// ConfigMap mounted as the kubelet would and the store URL pointed at that
// Redis. Redis must refuse clients without its password and its readiness
// probe must authenticate; then the test asks what sessiongate's probes ask.
func TestKubernetesProbesAgainstServer(t *testing.T) {
	redisBin := requireExternal(t, "redis-server", "apt-get install redis-server")
	c := loadCluster(t)
	_, ct := sessiongateDeployment(t, c)
	var rw workload
	c.get(t, "StatefulSet", k8sRedis).decode(t, &rw)
	sec := operatorSecrets(t)
	password := sec[k8sRedisSecret]["password"]
	rc := rw.Spec.Template.Spec.Containers[0]
	renv := rc.kubeEnv(t, sec)
	redis := startRedis(t, redisBin, rc.kubeArgs(renv))
	if err := ping(redis, ""); !errors.Is(err, errNoAuth) {
		t.Errorf("Redis run with the StatefulSet's args: PING without a password: %v, want NOAUTH (any pod that reaches it would read and write every session)", err)
	}
	if err := ping(redis, password); err != nil {
		t.Errorf("Redis run with the StatefulSet's args: PING after AUTH with the Secret's password: %v", err)
	}
	if ok, out := runRedisProbe(t, rc, renv, redis); !ok {
		t.Errorf("StatefulSet %s: the readiness probe fails on Redis with the Secret's password: %s", k8sRedis, out)
	}
	if ok, out := runRedisProbe(t, rc, rc.kubeEnv(t, operatorSecrets(t)), redis); ok {
		t.Errorf("StatefulSet %s: the readiness probe passes with another password (%q): it does not tell a Redis that refuses it", k8sRedis, out)
	}

	env := ct.kubeEnv(t, sec)
	// With the Secrets' files laid out here: on Redis, serve refuses
	// login.oidc policies without the session key file. Ready means it
	// reached Redis with the password of its store URL.
	s := startServe(t, env, map[string]string{
		"SESSIONGATE_POLICIES":         writeConfigMapMount(t, withLocalSignIn(t, withLocalJWKS(t, policiesConfigMap(t, c)))),
		"SESSIONGATE_STORE":            withHost(t, env["SESSIONGATE_STORE"], redis),
		"SESSIONGATE_SESSION_KEY_FILE": sessionKeyFile(t),
	})
	if strings.Contains(s.output(), password) {
		t.Errorf("sessiongate serve logs Redis' password:\n%s", s.output())
	}

	// Where each declared container port listens in this test.
	listener := map[int]string{}
	for name, addr := range map[string]string{k8sGRPCPortName: s.grpcAddr, k8sHTTPPortName: s.httpAddr} {
		cp, _ := ct.port(intOrString(name))
		listener[cp.ContainerPort] = addr
	}
	for name, p := range map[string]*probe{"readinessProbe": ct.ReadinessProbe, "livenessProbe": ct.LivenessProbe} {
		switch {
		case p == nil:
			t.Errorf("no %s", name)
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
			if st, err := s.health(svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("%s: grpc health %q: %v %v", name, svc, st, err)
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

// operatorSecrets makes the Secrets that the manifests' comments tell the
// operator to make with a random value, as those commands do: Redis'
// password, 32 random bytes in hex (openssl rand -hex 32). Two calls make
// two passwords.
func operatorSecrets(t *testing.T) secrets {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return secrets{k8sRedisSecret: {"password": hex.EncodeToString(b)}}
}

// runRedisProbe runs the Redis container's readiness probe, an exec probe,
// as the kubelet does: in the container's environment (env), its command
// not expanded. In the pod redis-cli reaches Redis on localhost:6379; here
// a redis-cli first in PATH points the real one at addr. It reports whether
// the probe passes, and its output.
func runRedisProbe(t *testing.T, ct container, env map[string]string, addr string) (bool, string) {
	t.Helper()
	p := ct.ReadinessProbe
	if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 {
		t.Fatalf("container %s: want an exec readiness probe", ct.Name)
	}
	cli := requireExternal(t, "redis-cli", "apt-get install redis-tools")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s -h %s -p %s \"$@\"\n", cli, host, port)
	if err := os.WriteFile(filepath.Join(dir, "redis-cli"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := p.Exec.Command[0]
	if bin == "redis-cli" {
		bin = filepath.Join(dir, bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, p.Exec.Command[1:]...)
	cmd.Env = []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return err == nil, fmt.Sprintf("%q: %v %s", p.Exec.Command, err, out)
}

// startRedis runs argv (redis-server and its options) with a loopback port
// and a temporary directory appended, which override any given before,
// waits until it answers PING (or wants a password) and returns its address.
func startRedis(t *testing.T, bin string, argv []string) string {
	t.Helper()
	if len(argv) == 0 || argv[0] != "redis-server" {
		t.Fatalf("redis command %q, want redis-server OPTIONS", argv)
	}
	p := freePort(t)
	args := append(append([]string(nil), argv[1:]...), "--port", p, "--bind", "127.0.0.1", "--dir", t.TempDir())
	r := startProcess(t, cleanEnv(nil), bin, args...)
	addr := net.JoinHostPort("127.0.0.1", p)
	if err := waitPing(addr, r); err != nil {
		t.Fatalf("redis-server %q: %v\n%s", args, err, r.output())
	}
	return addr
}

// withHost returns the store URL with its host and port replaced by addr.
func withHost(t *testing.T, store, addr string) string {
	t.Helper()
	u, err := url.Parse(store)
	if err != nil {
		t.Fatalf("SESSIONGATE_STORE=%q: %v", store, err)
	}
	u.Host = addr
	return u.String()
}

// TestKubernetesTermination: the grace period covers the preStop sleep, the
// drain delay and the shutdown timeout, so that Kubernetes never kills a
// replica that is still answering; the drain delay is at least the binary's
// default, which outlasts the shipped Envoy health check.
func TestKubernetesTermination(t *testing.T) {
	c := loadCluster(t)
	w, ct := sessiongateDeployment(t, c)
	env := ct.env()
	grace := w.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatalf("Deployment %s: no terminationGracePeriodSeconds", k8sName)
	}
	var preStop time.Duration
	if p := ct.Lifecycle.PreStop; p == nil || p.Sleep == nil || p.Sleep.Seconds <= 0 {
		t.Errorf("Deployment %s: want a preStop sleep, so that the pod serves while its endpoint is removed", k8sName)
	} else {
		preStop = time.Duration(p.Sleep.Seconds) * time.Second
	}
	drain, err1 := time.ParseDuration(env["SESSIONGATE_DRAIN_DELAY"])
	shutdown, err2 := time.ParseDuration(env["SESSIONGATE_SHUTDOWN_TIMEOUT"])
	if err1 != nil || err2 != nil {
		t.Fatalf("Deployment %s: SESSIONGATE_DRAIN_DELAY=%q SESSIONGATE_SHUTDOWN_TIMEOUT=%q: %v %v", k8sName,
			env["SESSIONGATE_DRAIN_DELAY"], env["SESSIONGATE_SHUTDOWN_TIMEOUT"], err1, err2)
	}
	if total := preStop + drain + shutdown; total >= time.Duration(*grace)*time.Second {
		t.Errorf("Deployment %s: preStop %v + drain %v + shutdown %v = %v, not below terminationGracePeriodSeconds %d",
			k8sName, preStop, drain, shutdown, total, *grace)
	}
	if def := serveFlagDefault(t, "drain-delay"); drain < def {
		t.Errorf("Deployment %s: drain delay %v below the binary's default %v", k8sName, drain, def)
	}
}

// serveFlagDefault reads the default of a duration flag of serve from the
// built binary's usage, where the flag's one owner writes it.
func serveFlagDefault(t *testing.T, name string) time.Duration {
	t.Helper()
	out, _ := exec.Command(binPath, "serve", "-h").CombinedOutput()
	_, rest, ok := strings.Cut(string(out), "-"+name+" duration")
	if !ok {
		t.Fatalf("sessiongate serve -h: no flag %s:\n%s", name, out)
	}
	_, rest, ok = strings.Cut(rest, "(default ")
	v, _, _ := strings.Cut(rest, ")")
	d, err := time.ParseDuration(v)
	if !ok || err != nil {
		t.Fatalf("sessiongate serve -h: flag %s has no duration default", name)
	}
	return d
}

// jwksURI matches a policy's jwks_uri line.
var jwksURI = regexp.MustCompile(`(?m)^(\s*jwks_uri:\s*)\S+$`)

// withLocalJWKS points every jwks_uri of the policies at a JWKS served on
// loopback, as the identity provider answers in a cluster: a replica whose
// policies have no token keys is not ready.
func withLocalJWKS(t *testing.T, data map[string]string) map[string]string {
	t.Helper()
	d, err := idp.New(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(d.JWKS()) }))
	t.Cleanup(srv.Close)
	out := map[string]string{}
	for k, v := range data {
		out[k] = jwksURI.ReplaceAllString(v, "${1}"+srv.URL+"/jwks")
	}
	return out
}
