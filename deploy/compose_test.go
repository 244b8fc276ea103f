package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
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

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// composeService holds the fields of a compose service the checks use.
type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	ReadOnly    bool     `yaml:"read_only"`
	CapDrop     []string `yaml:"cap_drop"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// mount is a bind mount of a compose volume entry.
type mount struct{ source, target string }

// binds returns the bind mounts (sources relative to the compose file).
func (s composeService) binds() []mount {
	var out []mount
	for _, v := range s.Volumes {
		f := strings.Split(v, ":")
		if len(f) >= 2 && strings.HasPrefix(f[0], ".") {
			out = append(out, mount{source: filepath.Join(filepath.Dir(composeFile), f[0]), target: f[1]})
		}
	}
	return out
}

// named returns the target of the named volume name, "" if not mounted.
func (s composeService) named(name string) string {
	for _, v := range s.Volumes {
		if f := strings.Split(v, ":"); len(f) >= 2 && f[0] == name {
			return f[1]
		}
	}
	return ""
}

// sessionKeys returns the service that makes the session key file, the
// named volume holding it, and where sessiongate reads it: the sign-in
// wiring that login.oidc policies on Redis cannot start without.
func sessionKeys(t *testing.T, svcs map[string]composeService) (maker composeService, volume, file string) {
	t.Helper()
	sg := svcs["sessiongate"]
	file = sg.Environment["SESSIONGATE_SESSION_KEY_FILE"]
	if file == "" {
		t.Fatalf("sessiongate: no SESSIONGATE_SESSION_KEY_FILE: with Redis, login.oidc policies need --session-key-file")
	}
	for name, svc := range svcs {
		if name == "sessiongate" {
			continue
		}
		for _, v := range sg.Volumes {
			vol, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			if strings.HasPrefix(vol, ".") || strings.HasPrefix(vol, "/") || !strings.HasPrefix(file, target+"/") || svc.named(vol) == "" ||
				slices.Contains(svc.Volumes, vol+":"+svc.named(vol)+":ro") { // a reader of the volume, not its maker
				continue
			}
			if sg.DependsOn[name].Condition != "service_completed_successfully" {
				t.Errorf("sessiongate: want depends_on %s condition service_completed_successfully, so the key exists before it starts", name)
			}
			return svc, vol, strings.TrimPrefix(file, target+"/")
		}
	}
	t.Fatalf("sessiongate: SESSIONGATE_SESSION_KEY_FILE=%q is on no named volume that another service writes", file)
	return composeService{}, "", ""
}

// makeSessionKeys runs the key maker's command with its volume's mount
// point moved to dir and returns the key file's path.
func makeSessionKeys(t *testing.T, svcs map[string]composeService, dir string) string {
	t.Helper()
	maker, vol, name := sessionKeys(t, svcs)
	target := maker.named(vol)
	if len(maker.Command) != 3 || maker.Command[0] != "sh" || maker.Command[1] != "-c" {
		t.Fatalf("session key maker: command %q, want [sh -c SCRIPT]", maker.Command)
	}
	script := strings.ReplaceAll(maker.Command[2], target, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("session key maker %q: %v\n%s", script, err, out)
	}
	return filepath.Join(dir, name)
}

func loadCompose(t *testing.T) map[string]composeService {
	t.Helper()
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yamlDocs(t, composeFile)[0].Decode(&f); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	for _, name := range []string{"envoy", "sessiongate", "redis", "upstream"} {
		if _, ok := f.Services[name]; !ok {
			t.Fatalf("%s: no service %q", composeFile, name)
		}
	}
	return f.Services
}

// TestCompose checks that the compose services fit together: Envoy runs the
// validated envoy.yaml, whose clusters name the services and their ports;
// sessiongate is this repository's image, on Redis, with policies that
// validate.
func TestCompose(t *testing.T) {
	svcs := loadCompose(t)

	// A local trial: ports are published on the host's loopback only, and
	// Redis, which holds the sessions, not at all.
	for name, svc := range svcs {
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published beyond loopback", name, p)
			}
		}
	}
	if p := svcs["redis"].Ports; len(p) > 0 {
		t.Errorf("redis: ports %v published: it holds the sessions", p)
	}

	// Envoy runs compose/envoy.yaml (TestEnvoyExample validates it).
	ev := svcs["envoy"]
	i := slices.Index(ev.Command, "-c")
	if i < 0 || i+1 >= len(ev.Command) || !slices.Contains(ev.binds(), mount{composeEnvoy, ev.Command[i+1]}) {
		t.Errorf("envoy: command %q with mounts %v, want -c on %s mounted", ev.Command, ev.binds(), composeEnvoy)
	}
	// Its clusters are the compose services, on the ports they listen on.
	sg, up := svcs["sessiongate"], svcs["upstream"]
	p := parts(t, composeEnvoy, loadBootstrap(t, composeEnvoy))
	for cluster, want := range map[string]string{
		sessiongateCluster: "sessiongate:" + port(t, sg.Environment["SESSIONGATE_GRPC_ADDR"]),
		"app":              "upstream:" + up.Environment["PORT"],
	} {
		c := p.clusters[cluster]
		if c == nil {
			t.Errorf("%s: no cluster %q", composeEnvoy, cluster)
			continue
		}
		ep := endpoints(c)
		if len(ep) != 1 || ep[0].GetAddress()+":"+strconv.Itoa(int(ep[0].GetPortValue())) != want {
			t.Errorf("%s: cluster %s endpoints %v, want %s", composeEnvoy, cluster, ep, want)
		}
	}
	// Envoy starts once the image's HEALTHCHECK passes.
	if ev.DependsOn["sessiongate"].Condition != "service_healthy" {
		t.Errorf("envoy: want depends_on sessiongate condition service_healthy")
	}

	// sessiongate is built from this repository's Dockerfile.
	if sg.Build == nil || filepath.Join(filepath.Dir(composeFile), sg.Build.Context, sg.Build.Dockerfile) != dockerfilePath {
		t.Errorf("sessiongate: build %+v, want the repository's Dockerfile", sg.Build)
	}
	if !sg.ReadOnly || !slices.Equal(sg.CapDrop, []string{"ALL"}) {
		t.Errorf("sessiongate: want read_only: true and cap_drop: [ALL]")
	}
	// Redis' password is read from the secrets volume, never written here.
	if u, err := url.Parse(sg.Environment["SESSIONGATE_STORE"]); err != nil || u.Scheme != "redis" || u.Host != "redis:6379" || u.User != nil {
		t.Errorf("sessiongate: SESSIONGATE_STORE=%q, want redis://redis:6379 with no credentials in it", sg.Environment["SESSIONGATE_STORE"])
	}
	_, vol, _ := sessionKeys(t, svcs)
	rs := svcs["redis"]
	if !slices.Contains(rs.Volumes, vol+":"+rs.named(vol)+":ro") || rs.DependsOn[keyMakerName(t, svcs, vol)].Condition != "service_completed_successfully" {
		t.Errorf("redis: want the secrets volume %s mounted read-only, after its maker completed", vol)
	}
	if sg.DependsOn["redis"].Condition != "service_healthy" {
		t.Errorf("sessiongate: want depends_on redis condition service_healthy")
	}
	// The key file that login.oidc on Redis needs is made once, with a
	// random key that a second run keeps, mounted read-only.
	keysDir := t.TempDir()
	keyFile := makeSessionKeys(t, svcs, keysDir)
	first, err := os.ReadFile(keyFile)
	if err != nil || len(bytes.TrimSpace(first)) == 0 {
		t.Fatalf("the session key maker wrote no key: %v", err)
	}
	if k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(first))); err != nil || len(k) != 32 {
		t.Errorf("session key %d bytes (%v), want 32, base64", len(k), err)
	}
	pwFile := redisPasswordFile(t, svcs, keysDir)
	pw, err := os.ReadFile(pwFile)
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{48}$`).Match(pw) {
		t.Errorf("the Redis password %q (%v), want 24 random bytes in hex", pw, err)
	}
	if again := makeSessionKeys(t, svcs, keysDir); again != keyFile {
		t.Fatalf("key file moved: %s, %s", keyFile, again)
	} else if second, _ := os.ReadFile(again); !bytes.Equal(first, second) {
		t.Errorf("the session key maker replaced the key on its second run: every sign-in would end at each `up`")
	}
	if again, _ := os.ReadFile(pwFile); !bytes.Equal(pw, again) {
		t.Errorf("the secrets maker replaced the Redis password on its second run")
	}
	if _, vol, _ := sessionKeys(t, svcs); !strings.HasSuffix(sg.Volumes[slices.IndexFunc(sg.Volumes, func(v string) bool { return strings.HasPrefix(v, vol+":") })], ":ro") {
		t.Errorf("sessiongate: mount the session key volume %s read-only", vol)
	}
	// The policies it mounts validate, and the application signs users in.
	dir := composePolicies(t, sg)
	checkAppPolicy(t, filepath.Join(dir, "app.yaml"))
	if out, code := runBin(t, "validate", dir); code != 0 {
		t.Errorf("sessiongate validate %s (mounted by compose): exit %d\n%s", dir, code, out)
	}
}

// composePolicies returns the host directory mounted where
// SESSIONGATE_POLICIES points.
func composePolicies(t *testing.T, sg composeService) string {
	t.Helper()
	for _, m := range sg.binds() {
		if m.target == sg.Environment["SESSIONGATE_POLICIES"] {
			return m.source
		}
	}
	t.Fatalf("sessiongate: nothing mounted at SESSIONGATE_POLICIES=%q", sg.Environment["SESSIONGATE_POLICIES"])
	return ""
}

// TestComposeServerHealthy runs what the compose services run: Redis with
// its command, and the binary with the sessiongate service's environment and
// mounted policies, the store URL pointed at that Redis. Then it runs the
// Envoy cluster's gRPC health check against it, as Envoy will.
func TestComposeServerHealthy(t *testing.T) {
	redisBin := requireExternal(t, "redis-server", "apt-get install redis-server")
	svcs := loadCompose(t)
	sg := svcs["sessiongate"]
	keysDir := t.TempDir()
	keyFile := makeSessionKeys(t, svcs, keysDir)
	redis := startComposeRedis(t, redisBin, svcs, keysDir)
	pwFile := redisPasswordFile(t, svcs, keysDir)
	pw, _ := os.ReadFile(pwFile)
	if err := ping(redis, ""); !errors.Is(err, errNoAuth) {
		t.Errorf("redis answers without the password: %v", err)
	}
	if err := ping(redis, string(pw)); err != nil {
		t.Errorf("redis with the password: %v", err)
	}
	// The health check passes with the password file, and fails with
	// another in its place (redis-cli exits 0 on NOAUTH too).
	if err := composeHealthcheck(t, svcs, keysDir, redis); err != nil {
		t.Errorf("redis health check: %v", err)
	}
	wrongDir := t.TempDir()
	os.WriteFile(filepath.Join(wrongDir, filepath.Base(pwFile)), []byte("not-the-password"), 0o600)
	if err := composeHealthcheck(t, svcs, wrongDir, redis); err == nil {
		t.Error("redis health check passes with a wrong password")
	}
	// The service's command, else the image's, its state file moved here.
	args := sg.Command
	if len(args) == 0 {
		df, err := parseDockerfile(dockerfilePath)
		if err != nil {
			t.Fatal(err)
		}
		if args, err = execForm(df.final("CMD")[0].args); err != nil {
			t.Fatal(err)
		}
	}
	if i := slices.Index(args, "--state-file"); i >= 0 && i+1 < len(args) {
		args = slices.Clone(args)
		args[i+1] = filepath.Join(t.TempDir(), "state")
	}
	// The key file as the session key maker makes it: without it, serve
	// refuses login.oidc policies on Redis.
	s := startServeArgs(t, sg.Environment, map[string]string{
		"SESSIONGATE_POLICIES":         composePolicies(t, sg),
		"SESSIONGATE_STORE":            withPasswordFile(t, withHost(t, sg.Environment["SESSIONGATE_STORE"], redis), pwFile),
		"SESSIONGATE_SESSION_KEY_FILE": keyFile,
	}, args...)
	c := parts(t, composeEnvoy, loadBootstrap(t, composeEnvoy)).clusters[sessiongateCluster]
	for _, hc := range c.GetHealthChecks() {
		svc := hc.GetGrpcHealthCheck().GetServiceName()
		if st, err := s.health(svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Envoy's health check of %q: %v %v", svc, st, err)
		}
	}
}

// keyMakerName is the name of the service that writes the volume vol.
func keyMakerName(t *testing.T, svcs map[string]composeService, vol string) string {
	t.Helper()
	for name, svc := range svcs {
		if name != "sessiongate" && svc.named(vol) != "" && !slices.Contains(svc.Volumes, vol+":"+svc.named(vol)+":ro") {
			return name
		}
	}
	t.Fatalf("no service writes the volume %s", vol)
	return ""
}

// redisPasswordFile is where, with the secrets volume at dir, the file
// sessiongate's store URL names (password_file) is.
func redisPasswordFile(t *testing.T, svcs map[string]composeService, dir string) string {
	t.Helper()
	sg := svcs["sessiongate"]
	u, err := url.Parse(sg.Environment["SESSIONGATE_STORE"])
	if err != nil {
		t.Fatal(err)
	}
	_, vol, _ := sessionKeys(t, svcs)
	rel, ok := strings.CutPrefix(u.Query().Get("password_file"), sg.named(vol)+"/")
	if !ok {
		t.Fatalf("SESSIONGATE_STORE=%q: want a password_file on the secrets volume %s", sg.Environment["SESSIONGATE_STORE"], vol)
	}
	return filepath.Join(dir, rel)
}

// withPasswordFile returns the store URL with its password_file set to path.
func withPasswordFile(t *testing.T, store, path string) string {
	t.Helper()
	u, err := url.Parse(store)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("password_file", path)
	u.RawQuery = q.Encode()
	return u.String()
}

// composeScript turns a service's `sh -c` script into what runs here: $$
// is Compose's escape of $, the secrets volume is at dir, and the image's
// entrypoint is not on this machine (it only drops root and runs its
// arguments).
func composeScript(t *testing.T, svcs map[string]composeService, svc composeService, script, dir string) string {
	t.Helper()
	_, vol, _ := sessionKeys(t, svcs)
	script = strings.ReplaceAll(script, "$$", "$")
	script = strings.ReplaceAll(script, svc.named(vol), dir)
	return strings.ReplaceAll(script, "docker-entrypoint.sh ", "")
}

// startComposeRedis runs the redis service's command with the secrets at
// dir, on a free loopback port, and returns its address.
func startComposeRedis(t *testing.T, bin string, svcs map[string]composeService, dir string) string {
	t.Helper()
	rs := svcs["redis"]
	if len(rs.Command) != 3 || rs.Command[0] != "sh" || rs.Command[1] != "-c" {
		t.Fatalf("redis: command %q, want [sh -c SCRIPT]", rs.Command)
	}
	p := freePort(t)
	script := composeScript(t, svcs, rs, rs.Command[2], dir) + " --port " + p + " --bind 127.0.0.1 --dir " + t.TempDir()
	r := startProcess(t, cleanEnv(map[string]string{"PATH": filepath.Dir(bin) + ":" + os.Getenv("PATH")}), "sh", "-c", script)
	addr := net.JoinHostPort("127.0.0.1", p)
	if err := waitPing(addr, r); err != nil {
		t.Fatalf("redis %q: %v\n%s", script, err, r.output())
	}
	return addr
}

// composeHealthcheck runs the redis service's health check (CMD-SHELL)
// against the Redis at addr, with the secrets at dir.
func composeHealthcheck(t *testing.T, svcs map[string]composeService, dir, addr string) error {
	t.Helper()
	rs := svcs["redis"]
	if len(rs.Healthcheck.Test) != 2 || rs.Healthcheck.Test[0] != "CMD-SHELL" {
		t.Fatalf("redis: healthcheck %q, want [CMD-SHELL SCRIPT]", rs.Healthcheck.Test)
	}
	host, port, _ := net.SplitHostPort(addr)
	script := composeScript(t, svcs, rs, rs.Healthcheck.Test[1], dir)
	script = strings.ReplaceAll(script, "redis-cli ", "redis-cli -h "+host+" -p "+port+" ")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestComposeConfig has docker-compose itself validate the file against the
// Compose schema (no Docker engine needed).
func TestComposeConfig(t *testing.T) {
	bin := requireExternal(t, "docker-compose", "apt-get install docker-compose")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--ansi", "never", "-f", composeFile, "config", "--quiet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker-compose config: %v\n%s", err, out)
	}
}
