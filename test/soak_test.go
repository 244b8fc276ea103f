package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// soakConfig is the size of a soak run: a short one in every `go test`, a
// long one with SESSIONGATE_SOAK=long (SESSIONGATE_SOAK_DURATION overrides
// its length).
type soakConfig struct {
	duration time.Duration // of steady load
	users    int           // distinct users, each with a session
	workers  int           // concurrent clients (streams on one connection)
	storm    int           // short-lived connections, one Check each
}

func soakSize(t *testing.T) soakConfig {
	c := soakConfig{duration: 8 * time.Second, users: 2000, workers: 8, storm: 1000}
	if os.Getenv("SESSIONGATE_SOAK") == "long" {
		c = soakConfig{duration: 90 * time.Second, users: 10_000, workers: 16, storm: 5000}
	}
	if v := os.Getenv("SESSIONGATE_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SESSIONGATE_SOAK_DURATION: %v", err)
		}
		c.duration = d
	}
	return c
}

// soakUser is one user's state, owned by one worker.
type soakUser struct {
	name, token, cookie string
	authTime            int64 // the token's sign-in, Unix seconds
}

// TestSoak drives the binary (with a state file, so that sign-outs are
// journaled and fsynced) at steady load over thousands of sessions — mostly
// allowed requests, with sign-outs and new sign-ins among them — then with a
// storm of short-lived connections. It asserts that every answer is the
// expected one, that goroutines and open files come back to where they were,
// and that the heap stays within bounds; it logs the numbers.
func TestSoak(t *testing.T) {
	t.Parallel()
	cfg := soakSize(t)
	o := serverOpts{extraArgs: []string{"--state-file", filepath.Join(t.TempDir(), "state"), "--log-level", "info"}}
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout", Absolute: 24 * time.Hour}.yaml()}, o)

	users := make([]*soakUser, cfg.users)
	if err := parallel(cfg.workers, len(users), func(i int) error {
		users[i] = &soakUser{name: fmt.Sprintf("user%05d", i)}
		return s.soakSignIn(users[i], 0)
	}); err != nil {
		t.Fatal(err)
	}
	before := s.sample(t)
	t.Logf("%d sessions: %s", len(users), before)

	var ops, signOuts, failures atomic.Int64
	var firstErr sync.Once
	fail := func(err error) {
		failures.Add(1)
		firstErr.Do(func() { t.Errorf("soak: %v", err) })
	}
	heap := []float64{before.heap}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if m, err := s.sampleErr(); err == nil {
					heap = append(heap, m.heap)
				}
			}
		}
	})
	deadline := time.Now().Add(cfg.duration)
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			api := authv3.NewAuthorizationClient(s.conn)
			for time.Now().Before(deadline) {
				// Worker w owns the users i with i % workers == w.
				u := users[w+cfg.workers*rng.IntN(len(users)/cfg.workers)]
				var err error
				// A token's auth_time has whole seconds, so a sign-in right
				// after a sign-out is dated up to a second ahead; a second
				// sign-out before that second would precede it.
				if rng.IntN(200) == 0 && u.authTime < time.Now().Unix() {
					err = s.soakSignOut(api, u)
					signOuts.Add(1)
				} else {
					err = s.soakCheck(api, u)
				}
				ops.Add(1)
				if err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	elapsed := cfg.duration.Seconds()
	t.Logf("steady load: %d checks in %v (%.0f/s), %d sign-outs, %d failures", ops.Load(), cfg.duration, float64(ops.Load())/elapsed, signOuts.Load(), failures.Load())

	stormStart := time.Now()
	if err := parallel(32, cfg.storm, func(i int) error { return s.stormCheck(users[i%len(users)]) }); err != nil {
		t.Error(err)
	}
	t.Logf("storm: %d connections of one Check each in %v", cfg.storm, time.Since(stormStart).Round(time.Millisecond))

	// Back to where it was: goroutines and files as before the load (the
	// storm's connections are closed), heap within bounds.
	var after soakSample
	settled := waitFor(10*time.Second, func() bool {
		after = s.sample(t)
		return after.goroutines <= before.goroutines+5 && after.fds <= before.fds+5
	})
	heap = append(heap, after.heap)
	t.Logf("after: %s", after)
	t.Logf("heap in use, MiB, every 2s and after: %s", mib(heap))
	if !settled {
		t.Errorf("goroutines %v → %v, open files %v → %v: not back to the baseline", before.goroutines, after.goroutines, before.fds, after.fds)
	}
	if limit := 2*before.heap + 32<<20; maxOf(heap) > limit {
		t.Errorf("heap in use grew to %.1f MiB, over the bound of %.1f MiB", maxOf(heap)/(1<<20), limit/(1<<20))
	}
	if code, _, err := s.httpGet("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after the soak: %d %v", code, err)
	}

	// The harness searches every output for every secret at the end, which
	// thousands of sessions make quadratic: scan in one pass here instead,
	// once the process has exited and its output is complete.
	metrics := s.metrics(t)
	s.stop()
	s.mu.Lock()
	secrets := s.secrets
	s.secrets = map[string]bool{}
	s.mu.Unlock()
	outputs := map[string]string{"stdout": s.stdout.String(), "stderr": s.stderr.String(), "/metrics": metrics}
	for _, l := range scanForSecrets(secrets, outputs) {
		t.Error(l)
	}
	t.Logf("%d tokens and cookie values searched for in %d bytes of audit log, log and metrics", len(secrets),
		len(outputs["stdout"])+len(outputs["stderr"])+len(metrics))
}

// base64URLRun matches what tokens and cookie values are made of.
var base64URLRun = regexp.MustCompile(`[A-Za-z0-9_-]{16,}`)

// scanForSecrets is findSecrets in one pass over the outputs: every window,
// of a secret's length, of every base64url run is looked up in a set. A
// token is found by its signature alone, as findSecrets does.
func scanForSecrets(secrets map[string]bool, outputs map[string]string) []string {
	set, lengths := map[string]bool{}, map[int]bool{}
	for v := range secrets {
		if i := strings.LastIndexByte(v, '.'); i >= 0 {
			v = v[i+1:]
		}
		if len(v) >= 16 {
			set[v], lengths[len(v)] = true, true
		}
	}
	var out []string
	for where, text := range outputs {
		for _, run := range base64URLRun.FindAllString(text, -1) {
			for n := range lengths {
				for i := 0; i+n <= len(run); i++ {
					if set[run[i:i+n]] {
						out = append(out, fmt.Sprintf("secret %.12s… (len %d) appears in %s", run[i:i+n], n, where))
					}
				}
			}
		}
	}
	return out
}

// soakSample is what the soak watches in /metrics.
type soakSample struct{ goroutines, heap, fds float64 }

func (s soakSample) String() string {
	return fmt.Sprintf("%v goroutines, %.1f MiB heap in use, %v open files", s.goroutines, s.heap/(1<<20), s.fds)
}

func (s *server) sample(t *testing.T) soakSample {
	t.Helper()
	m, err := s.sampleErr()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *server) sampleErr() (soakSample, error) {
	code, m, err := s.httpGet("/metrics")
	if err == nil && code != 200 {
		err = fmt.Errorf("GET /metrics: %d", code)
	}
	return soakSample{
		goroutines: metricValue(m, "go_goroutines", nil),
		heap:       metricValue(m, "go_memstats_heap_inuse_bytes", nil),
		fds:        metricValue(m, "process_open_fds", nil),
	}, err
}

func mib(xs []float64) string {
	var b strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&b, " %.0f", x/(1<<20))
	}
	return b.String()
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = max(m, x)
	}
	return m
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error;
// a worker stops at its first.
func parallel(workers, n int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// soakSignIn mints u a token signed in at authTime (Unix seconds, 0: now)
// and opens its session.
func (s *server) soakSignIn(u *soakUser, authTime int64) error {
	c := baseClaims(u.name, claim("exp", time.Now().Add(24*time.Hour).Unix())) // outlives any soak
	if authTime != 0 {
		c["auth_time"] = authTime
	}
	u.authTime = c["auth_time"].(int64)
	tok, err := s.idp.Mint(c)
	if err != nil {
		return err
	}
	s.remember(tok)
	u.token, u.cookie = tok, ""
	return s.soakCheck(authv3.NewAuthorizationClient(s.conn), u)
}

// soakCheck sends u's token and cookie; the answer must be an allow, and a
// new session's cookie is kept.
func (s *server) soakCheck(api authv3.AuthorizationClient, u *soakUser) error {
	extra := []string{}
	if u.cookie != "" {
		extra = append(extra, "cookie: "+cookieName+"="+u.cookie)
	}
	r, err := (&client{s: s, api: api, noCookies: true}).try("app.test", "/orders", u.token, false, extra...)
	if err != nil {
		return fmt.Errorf("%s: %w", u.name, err)
	}
	if !r.Allowed || r.Upstream[userHeader] != u.name {
		return fmt.Errorf("%s: want allowed, got %.300v", u.name, r)
	}
	for _, sc := range r.SetCookies {
		if name, v, _ := strings.Cut(strings.SplitN(sc, ";", 2)[0], "="); name == cookieName && v != "" {
			u.cookie = v
		}
	}
	return nil
}

// soakSignOut signs u out, checks that the session is refused, and signs in
// again with a token whose auth_time is after the end.
func (s *server) soakSignOut(api authv3.AuthorizationClient, u *soakUser) error {
	c := &client{s: s, api: api, noCookies: true}
	r, err := c.try("app.test", "/logout", u.token, false, "cookie: "+cookieName+"="+u.cookie)
	if err != nil || r.Reason != "signed_out" {
		return fmt.Errorf("%s: sign-out: %v %.300v", u.name, err, r)
	}
	r, err = c.try("app.test", "/orders", u.token, false, "cookie: "+cookieName+"="+u.cookie)
	if err != nil || r.Reason != "reauth_required" {
		return fmt.Errorf("%s: after sign-out: %v %.300v", u.name, err, r)
	}
	return s.soakSignIn(u, time.Now().Unix()+1)
}

// stormCheck opens a connection of its own, sends one Check and closes it.
func (s *server) stormCheck(u *soakUser) error {
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	r, err := (&client{s: s, api: authv3.NewAuthorizationClient(conn), noCookies: true}).try("app.test", "/storm", u.token, false)
	if err != nil {
		return fmt.Errorf("storm: %w", err)
	}
	if !r.Allowed {
		return fmt.Errorf("storm: %s: %.300v", u.name, r)
	}
	return nil
}

// TestScanForSecrets: the one-pass scan finds what findSecrets finds.
func TestScanForSecrets(t *testing.T) {
	tok := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWEtdG9rZW4tdGhhdC1pcy1sb25n"
	cookie := "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
	secrets := map[string]bool{tok: true, cookie: true}
	for text, want := range map[string]int{
		`{"msg":"ok","session":"9b54fd9e"}`:                        0,
		`{"err":"bad token ` + tok + `"}`:                          1,
		`sig=` + tok[strings.LastIndexByte(tok, '.')+1:] + `;`:     1,
		`set-cookie: __Host-sessiongate=` + cookie + `; Path=/`:    1,
		`glued:x` + cookie + `y and ` + cookie:                     2,
		`only the payload ` + strings.Split(tok, ".")[1] + ` here`: 0,
	} {
		if got := len(scanForSecrets(secrets, map[string]string{"out": text})); got != want {
			t.Errorf("%q: %d findings, want %d", text, got, want)
		}
		if want > 0 && len(findSecrets(secrets, map[string]string{"out": text})) == 0 {
			t.Errorf("%q: findSecrets disagrees", text)
		}
	}
}
