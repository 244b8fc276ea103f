package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// binPath is the sessiongate binary, built once from the main module.
var binPath string

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "sessiongate-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(tmp, "sessiongate")
	out, err := exec.Command("go", "-C", "../..", "build", "-o", binPath, "./cmd/sessiongate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building sessiongate: %v\n%s", err, out)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// TestChartServes runs the binary the way the chart's pod would: the
// container's args and environment, every mounted volume laid out in a
// temporary directory (the policies' ConfigMap, the session key and admin
// token Secrets, the state volume), the listen addresses moved to free
// loopback ports and the policies' jwks_uri to a JWKS served here, as the
// identity provider answers in a cluster. It must pass both probes, open
// the admin API where enabled, write its state file where it has one, and
// stop within the grace period on SIGTERM.
func TestChartServes(t *testing.T) {
	ch := loadChart(t)
	for _, name := range []string{"defaults", "embedded, ephemeral on purpose", "redis, everything on"} {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, ch, valueSets[name])
			if err != nil {
				t.Fatal(err)
			}
			o := decode(t, out)
			pod := o.deployment.Spec.Template.Spec
			c := pod.Containers[0]

			// Each mount becomes a directory; Secrets and ConfigMaps get
			// their files.
			root := t.TempDir()
			mountDir := map[string]string{} // mountPath → local dir
			for _, m := range c.VolumeMounts {
				dir := filepath.Join(root, m.Name)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				mountDir[m.MountPath] = dir
			}
			local := func(p string) string {
				for mp, dir := range mountDir {
					if p == mp {
						return dir
					}
					if rest, ok := strings.CutPrefix(p, mp+"/"); ok {
						return filepath.Join(dir, rest)
					}
				}
				return p
			}
			jwks := localJWKS(t)
			for _, m := range c.VolumeMounts {
				var v corev1.Volume
				for _, vv := range pod.Volumes {
					if vv.Name == m.Name {
						v = vv
					}
				}
				switch {
				case v.ConfigMap != nil:
					for k, body := range o.configMaps[v.ConfigMap.Name].Data {
						body = jwksURILine.ReplaceAllString(body, "${1}"+jwks)
						// Sign-in: the client secret from its Secret's
						// directory here, the issuer on a loopback port where
						// nothing listens (no test reaches the network; a
						// provider that cannot be reached keeps the replica
						// ready).
						body = secretFileLine.ReplaceAllStringFunc(body, func(l string) string {
							m := secretFileLine.FindStringSubmatch(l)
							return m[1] + local(m[2])
						})
						body = oidcIssuerLine.ReplaceAllString(body, "${1}"+"http://"+freeAddr(t))
						writeFile(t, filepath.Join(mountDir[m.MountPath], k), body)
					}
				case v.Secret != nil && strings.HasPrefix(m.MountPath, "/etc/sessiongate/oidc/"):
					writeFile(t, filepath.Join(mountDir[m.MountPath], "client-secret"), "made-up-client-secret\n")
				case v.Secret != nil && v.Secret.SecretName == nested(parseValues(t, valueSets[name]), "sessionKey", "existingSecret"):
					writeFile(t, filepath.Join(mountDir[m.MountPath], "keys"), "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n")
				case v.Secret != nil:
					writeFile(t, filepath.Join(mountDir[m.MountPath], "token"), "admin-token-for-the-test\n")
				}
			}

			env := []string{"PATH=" + os.Getenv("PATH")}
			addr := map[string]string{}
			for _, e := range c.Env {
				val := e.Value
				switch {
				case e.ValueFrom != nil && e.Name == "SESSIONGATE_STORE":
					val = "redis://" + startRedis(t)
				case e.ValueFrom != nil:
					t.Fatalf("%s comes from %+v: the test does not know it", e.Name, e.ValueFrom)
				case strings.HasSuffix(e.Name, "_ADDR"):
					val = freeAddr(t)
					addr[e.Name] = val
				default:
					val = local(val)
				}
				env = append(env, e.Name+"="+val)
			}
			cmd := exec.Command(binPath, c.Args...)
			cmd.Env = env
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// done is closed when the process has exited, with waitErr set.
			done := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(done) }()
			stopped := false
			defer func() {
				if !stopped {
					cmd.Process.Kill()
					<-done
				}
				if t.Failed() {
					t.Logf("sessiongate %v %v (%v):\n%s", c.Args, env, waitErr, logs.String())
				}
			}()

			httpAddr := addr["SESSIONGATE_HTTP_ADDR"]
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if !waitStatus(done, "http://"+httpAddr+p.HTTPGet.Path, 200) {
					t.Fatalf("probe %s never answered 200", p.HTTPGet.Path)
				}
			}
			if a, ok := addr["SESSIONGATE_ADMIN_ADDR"]; ok {
				// Listening, and refusing a call without the token.
				if !waitStatus(done, "http://"+a+"/", 401, 403, 404) {
					t.Errorf("admin API on %s not answering", a)
				}
			}
			if sf, ok := envValue(c, "SESSIONGATE_STATE_FILE"); ok {
				if files, _ := filepath.Glob(local(sf) + "*"); len(files) == 0 {
					t.Errorf("nothing written at the state file %s", sf)
				}
			}

			// SIGTERM: out within the grace period.
			start := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
			select {
			case <-done:
				stopped = true
				if waitErr != nil {
					t.Errorf("exit after SIGTERM: %v", waitErr)
				}
				t.Logf("stopped %v after SIGTERM", time.Since(start).Round(100*time.Millisecond))
			case <-time.After(grace):
				t.Errorf("still running %v after SIGTERM, the grace period", grace)
			}
		})
	}
}

var jwksURILine = regexp.MustCompile(`(?m)^(\s*jwks_uri:\s*)\S+$`)

var (
	secretFileLine = regexp.MustCompile(`(?m)^(\s*client_secret_file:\s*)(\S+)$`)
	oidcIssuerLine = regexp.MustCompile(`(?m)^(\s*oidc:\s*\n\s*issuer:\s*)\S+$`)
)

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// localJWKS serves a JWKS (one RSA key, exponent 65537) on loopback and
// returns its URL.
func localJWKS(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := fmt.Sprintf(`{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":%q,"e":"AQAB"}]}`,
		base64.RawURLEncoding.EncodeToString(k.N.Bytes()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, jwks) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks"
}

// startRedis runs redis-server on a free loopback port, or skips the test
// without one (fails with SESSIONGATE_REQUIRE_EXTERNAL=1, as in CI).
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("redis-server not installed and SESSIONGATE_REQUIRE_EXTERNAL=1")
		}
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	a := freeAddr(t)
	_, port, _ := net.SplitHostPort(a)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			return a
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis-server on %s not listening", a)
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitStatus polls url for up to 15s until it answers one of the statuses,
// or the process has exited.
func waitStatus(done <-chan struct{}, url string, statuses ...int) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return false
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			for _, s := range statuses {
				if resp.StatusCode == s {
					return true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
