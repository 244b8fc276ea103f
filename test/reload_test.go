package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestHotReloadUnderLoad: while clients keep checking, a policy edit applies
// within 2s, a broken edit keeps the last good policies in force (no gRPC
// error, no denial), a fix applies again, and SIGHUP reloads.
func TestHotReloadUnderLoad(t *testing.T) {
	t.Parallel()
	policyWith := func(idle time.Duration, hosts ...string) string {
		return pol{Hosts: hosts, Absolute: 5 * time.Minute, Idle: idle}.yaml()
	}
	s := startServer(t, map[string]string{"app": policyWith(5*time.Second, "app.test")})
	file := filepath.Join(s.dir, "app.yaml")

	// Load: a few clients, each its own session, checking continuously.
	const workers = 4
	toks := make([]string, workers)
	for i := range toks {
		toks[i] = s.token(t, fmt.Sprintf("worker-%d", i))
	}
	var (
		total, grpcErrs, denials atomic.Int64
		mu                       sync.Mutex
		firstProblem             string
		stop                     = make(chan struct{})
		wg                       sync.WaitGroup
	)
	problem := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if firstProblem == "" {
			firstProblem = msg
		}
	}
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.client(t)
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.try("app.test", "/work", toks[i], i%2 == 0)
				total.Add(1)
				switch {
				case err != nil:
					grpcErrs.Add(1)
					problem(fmt.Sprintf("worker %d: gRPC error %v", i, err))
				case !r.Allowed:
					denials.Add(1)
					problem(fmt.Sprintf("worker %d: denied %v", i, r))
				case r.Upstream[userHeader] != fmt.Sprintf("worker-%d", i):
					denials.Add(1)
					problem(fmt.Sprintf("worker %d: allowed as %q", i, r.Upstream[userHeader]))
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	probe := s.client(t)
	probeTok := s.token(t, "probe")
	// idleLeft is the idle timeout the current policy gives a request.
	idleLeft := func() int64 {
		r := probe.Check("app.test", "/", probeTok, false)
		if !r.Allowed {
			t.Fatalf("probe denied: %v", r)
		}
		return unixHeader(t, r, idleHeader) - time.Now().Unix()
	}
	newHost := func() result { return probe.Check("new.test", "/", probeTok, false) }
	reloads := func(result string) float64 {
		return metricValue(s.metrics(t), "sessiongate_policy_reloads_total", map[string]string{"result": result})
	}
	lastOK := func() float64 {
		return metricValue(s.metrics(t), "sessiongate_policy_last_reload_successful", map[string]string{})
	}

	if got := idleLeft(); got < 4 || got > 5 {
		t.Fatalf("initial idle left = %ds, want 5s", got)
	}
	wantDenied(t, newHost(), 403, "unknown_host")
	if got := reloads("success"); got != 1 {
		t.Errorf("policy_reloads_total{success} at start = %v, want 1", got)
	}
	time.Sleep(300 * time.Millisecond) // some load before the first change

	// 1. A good edit applies (in about a second; the deadlines below are
	// generous for a loaded machine): longer idle timeout, one more host.
	replaceFile(t, file, policyWith(9*time.Second, "app.test", "new.test"))
	start := time.Now()
	if !waitFor(10*time.Second, func() bool { return idleLeft() >= 8 && newHost().Allowed }) {
		t.Fatalf("edited policy not in force 10s after the change: idle left %ds, new.test %v", idleLeft(), newHost())
	}
	t.Logf("edit applied after %v", time.Since(start).Round(time.Millisecond))
	if got := lastOK(); got != 1 {
		t.Errorf("policy_last_reload_successful = %v, want 1", got)
	}

	// 2. A broken edit (written in place, as a careless editor would) keeps
	// the last good policies.
	failuresBefore := reloads("failure")
	writeFile(t, file, "hosts: [app.test]\nsession:\n  idle_timeout: banana\n  absolute_timeout: 1m\ntoken: {}\n")
	if !waitFor(10*time.Second, func() bool { return reloads("failure") > failuresBefore && lastOK() == 0 }) {
		t.Fatalf("broken policy not reported: reloads{failure} %v → %v, last_reload_successful %v",
			failuresBefore, reloads("failure"), lastOK())
	}
	if !s.waitLog("keeping the last good policies") {
		t.Errorf("no log line says the last good policies are kept")
	}
	time.Sleep(500 * time.Millisecond) // load keeps running against the broken file
	if got := idleLeft(); got < 8 {
		t.Errorf("after a broken edit, idle left = %ds: the last good policy (9s) is not in force", got)
	}
	wantAllowed(t, newHost())

	// 3. The fix applies.
	replaceFile(t, file, policyWith(5*time.Second, "app.test"))
	start = time.Now()
	if !waitFor(10*time.Second, func() bool {
		r := newHost()
		return !r.Allowed && r.Reason == "unknown_host" && idleLeft() <= 5
	}) {
		t.Fatalf("restored policy not in force 10s after the change: idle left %ds, new.test %v", idleLeft(), newHost())
	}
	t.Logf("fix applied after %v", time.Since(start).Round(time.Millisecond))
	if !waitFor(5*time.Second, func() bool { return lastOK() == 1 }) {
		t.Errorf("policy_last_reload_successful = %v after the fix, want 1", lastOK())
	}

	// 4. SIGHUP reloads now, changed or not.
	time.Sleep(400 * time.Millisecond) // let any debounced file event settle
	okBefore := reloads("success")
	s.signal(t, syscall.SIGHUP)
	if !waitFor(10*time.Second, func() bool { return reloads("success") == okBefore+1 }) {
		t.Errorf("SIGHUP: policy_reloads_total{success} %v → %v, want +1", okBefore, reloads("success"))
	}
	if !s.waitLog("SIGHUP") {
		t.Errorf("SIGHUP reload not logged")
	}
	// SIGHUP with a broken file keeps the last good policies too.
	writeFile(t, file, "hosts: [app.test]\nbogus: true\n")
	s.signal(t, syscall.SIGHUP)
	time.Sleep(700 * time.Millisecond)
	if got := idleLeft(); got < 4 || got > 5 {
		t.Errorf("after a broken file and SIGHUP, idle left = %ds, want the last good 5s", got)
	}
	replaceFile(t, file, policyWith(5*time.Second, "app.test"))
	time.Sleep(300 * time.Millisecond)
	// Enough checks ran for the absence of errors to mean something, however
	// slow the machine (each worker pauses 3 ms between checks).
	waitFor(30*time.Second, func() bool { return total.Load() >= 200 })

	stopLoad()
	select {
	case <-s.done:
		t.Fatalf("server exited during the test: %v", s.waitErr)
	default:
	}
	t.Logf("%d checks under reload, %d gRPC errors, %d denials", total.Load(), grpcErrs.Load(), denials.Load())
	if grpcErrs.Load() != 0 || denials.Load() != 0 {
		t.Errorf("%d gRPC errors and %d denials under reload; first: %s", grpcErrs.Load(), denials.Load(), firstProblem)
	}
	if total.Load() < 200 {
		t.Errorf("only %d checks ran under reload; the load is too thin to mean anything", total.Load())
	}
}

// TestConfigMapLayout: a Kubernetes ConfigMap mount (..data symlink to a
// timestamped directory, policy symlinks beside it) loads, stray files and
// subdirectories are not policies, and an update by symlink swap applies.
func TestConfigMapLayout(t *testing.T) {
	t.Parallel()
	version := func(dir, ts string, idle time.Duration, hosts ...string) {
		d := filepath.Join(dir, ".."+ts)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, "app.yaml"), pol{Hosts: hosts, Absolute: 5 * time.Minute, Idle: idle}.yaml())
	}
	s := startServerOpts(t, nil, serverOpts{setup: func(dir string) {
		version(dir, "2024_01_01_00_00_00.1", 5*time.Second, "app.test")
		mustSymlink(t, "..2024_01_01_00_00_00.1", filepath.Join(dir, "..data"))
		mustSymlink(t, "..data/app.yaml", filepath.Join(dir, "app.yaml"))
		writeFile(t, filepath.Join(dir, "README.md"), "hosts: [not a policy")
		writeFile(t, filepath.Join(dir, "app.yaml.bak"), "hosts: [not a policy")
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "sub", "x.yaml"), "hosts: [not a policy")
	}})
	c := s.client(t)
	tok := s.token(t, "alice")
	r := c.Check("app.test", "/", tok, false)
	wantAllowed(t, r)
	if left := unixHeader(t, r, idleHeader) - time.Now().Unix(); left < 4 || left > 5 {
		t.Errorf("idle left %ds, want 5s", left)
	}
	wantDenied(t, c.Check("new.test", "/", tok, false), 403, "unknown_host")

	// kubelet's update: new timestamped dir, ..data swapped by rename.
	version(s.dir, "2024_01_02_00_00_00.2", 9*time.Second, "app.test", "new.test")
	mustSymlink(t, "..2024_01_02_00_00_00.2", filepath.Join(s.dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(s.dir, "..data_tmp"), filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(s.dir, "..2024_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(2*time.Second, func() bool {
		r := c.Check("app.test", "/", tok, false)
		return r.Allowed && unixHeader(t, r, idleHeader)-time.Now().Unix() >= 8 && c.Check("new.test", "/", tok, false).Allowed
	}) {
		t.Fatalf("ConfigMap update not in force within 2s:\n%s", s.stderr.String())
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestValidate: "sessiongate validate" exits 0 on good policies and 1 on
// bad ones, with one "file:line: field: message" line per problem.
func TestValidate(t *testing.T) {
	t.Parallel()
	good := t.TempDir()
	d := newIDP(t)
	if err := d.WriteJWKS(filepath.Join(good, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(good, "app.yaml"), pol{Hosts: []string{"app.test"}}.yaml())
	writeFile(t, filepath.Join(good, "default.yml"), pol{Hosts: []string{"*"}, DryRun: true}.yaml())
	writeFile(t, filepath.Join(good, "README.md"), "not a policy: [")
	writeFile(t, filepath.Join(good, ".hidden.yaml"), "not a policy: [")
	if err := os.Mkdir(filepath.Join(good, "..2024_01_01_00_00_00.1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(good, "..2024_01_01_00_00_00.1", "x.yaml"), "not a policy: [")

	out, errOut, code := runBin(t, "validate", good)
	if code != 0 {
		t.Fatalf("validate good dir: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(out, "ok: 2 policies valid: app, default") || !strings.Contains(out, "app") || !strings.Contains(out, "default") {
		t.Errorf("validate good dir: stdout %q", out)
	}

	bad := t.TempDir()
	if err := d.WriteJWKS(filepath.Join(bad, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bad, "app.yaml"), pol{Hosts: []string{"app.test"}}.yaml())
	writeFile(t, filepath.Join(bad, "broken.yaml"), strings.Join([]string{
		"hosts: [bad.test]", // 1
		"mode: enforce",     // 2
		"session:",          // 3
		"  absolute_timeout: 1m",
		"  idle_timeout: 2m", // 5: not below absolute
		"  bogus: 1",         // 6: unknown
		"token:",
		"  issuer: https://idp.test",
		"  audiences: [app]",
		"  jwks_file: missing.json", // 10: unreadable
		"login:",
		"  url: not a url", // 12
		"",
	}, "\n"))
	writeFile(t, filepath.Join(bad, "syntax.yml"), "hosts: [x.test\n")
	writeFile(t, filepath.Join(bad, "dup.yaml"), pol{Hosts: []string{"other.test", "APP.test"}}.yaml())
	out, errOut, code = runBin(t, "validate", bad)
	if code != 1 {
		t.Fatalf("validate bad dir: exit %d, want 1; stdout %q stderr %q", code, out, errOut)
	}
	all := out + errOut
	lineRE := regexp.MustCompile(`^(\S+\.ya?ml):(\d+): ([A-Za-z0-9_.\[\]]+): (.+)$`)
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(all), "\n") {
		if l == "" {
			continue
		}
		if !lineRE.MatchString(l) {
			t.Errorf("validate output line %q is not file:line: field: message", l)
		}
		problems = append(problems, l)
	}
	broken := filepath.Join(bad, "broken.yaml")
	for _, prefix := range []string{
		broken + ":5: session.idle_timeout: ",
		broken + ":6: session.bogus: ",
		broken + ":10: token.jwks_file: ",
		broken + ":12: login.url: ",
		filepath.Join(bad, "syntax.yml") + ":",
		filepath.Join(bad, "dup.yaml") + ":1: hosts[1]: ",
	} {
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, prefix)
		}
		if !found {
			t.Errorf("validate output lacks a line starting %q:\n%s", prefix, all)
		}
	}
	for _, p := range problems {
		if strings.HasPrefix(p, filepath.Join(bad, "app.yaml")+":") {
			t.Errorf("the good file is reported: %q", p)
		}
	}

	// A single file, and a missing path.
	if _, _, code := runBin(t, "validate", filepath.Join(good, "app.yaml")); code != 0 {
		t.Errorf("validate good file: exit %d", code)
	}
	if _, _, code := runBin(t, "validate", filepath.Join(good, "nope")); code != 1 {
		t.Errorf("validate missing path: exit %d, want 1", code)
	}
}

// TestReloadAppliesToLiveSessionsAndTokens: after a reload, the new policy
// governs sessions opened under the old one (a shorter absolute_timeout ends
// them) and tokens verified under the old one (a changed audience refuses
// them, cached or not).
func TestReloadAppliesToLiveSessionsAndTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}}.yaml(),
		"aud": pol{Hosts: []string{"aud.test"}}.yaml(),
	})
	c := s.client(t)
	old := s.token(t, "alice", authTime(time.Now().Unix()-10))
	tok := s.token(t, "bob")
	wantAllowed(t, c.Check("app.test", "/", old, true))
	wantAllowed(t, c.Check("aud.test", "/", tok, false))
	wantAllowed(t, c.Check("aud.test", "/", tok, false)) // now cached

	replaceFile(t, filepath.Join(s.dir, "app.yaml"), pol{Hosts: []string{"app.test"}, Absolute: 5 * time.Second, Idle: 2 * time.Second}.yaml())
	replaceFile(t, filepath.Join(s.dir, "aud.yaml"), pol{Hosts: []string{"aud.test"}, Audiences: []string{"other-app"}}.yaml())
	if !waitFor(2*time.Second, func() bool {
		r := c.Check("aud.test", "/", tok, false)
		return !r.Allowed && r.Reason == "invalid_token"
	}) {
		t.Fatalf("a token of the old audience is still accepted 2s after the audience changed")
	}
	// alice signed in 10s ago: over the new 5s lifetime.
	wantLoginRedirect(t, c.Check("app.test", "/", old, true), "absolute_timeout", "https://app.test/", true)
}
