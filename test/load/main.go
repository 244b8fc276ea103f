// Command load measures sessiongate against a no-op floor: it builds
// sessiongate and floor (a grpc-go ext_authz server that answers OK to
// everything, with sessiongate's transport options), starts both on loopback,
// and drives them with the same client (N concurrent streams over one
// connection) in alternating runs — floor, sessiongate, sessiongate, floor,
// … — so that noise from other work on the machine hits both alike. For each
// run it prints throughput, p50 and p99 latency, server CPU per request (from
// /proc/PID/stat) and the CPU other processes used meanwhile; for each
// scenario, the median of the pairs' sessiongate/floor throughput ratios and
// the ratio of server CPU per request.
//
//	go run ./test/load -scenario all -pairs 5
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	scenarios   []string
	pairs       int
	streams     int
	requests    int // per run, live, deny and mix
	newRequests int // per run, new-session: each needs a freshly minted token
	warmup      int // unmeasured requests before each run
	users       int // mix
	limit       time.Duration
	sgBin       string
	floorBin    string
	sgArgs      string
	store       string // "": embedded; "redis": a redis-server the harness starts; else a Redis URL
	quiet       bool

	// floorAnswers: the floor answers like sessiongate (-answer-like-sessiongate).
	floorAnswers bool
}

func parse(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	scen := fs.String("scenario", "live", "comma-separated: live, api, new, deny, mix, oidc, or all")
	fs.IntVar(&c.pairs, "pairs", 5, "alternating floor/sessiongate run pairs per scenario")
	fs.IntVar(&c.streams, "streams", 50, "concurrent streams over the one connection")
	fs.IntVar(&c.requests, "requests", 20000, "measured requests per run (live, deny, mix)")
	fs.IntVar(&c.newRequests, "new-requests", 2000, "measured requests per run of new-session (one minted token each)")
	fs.IntVar(&c.warmup, "warmup", 500, "unmeasured requests before each run")
	fs.IntVar(&c.users, "users", 10000, "distinct users of the mix scenario")
	fs.DurationVar(&c.limit, "run-timeout", time.Minute, "time limit of one run; a run cut short reports what it measured")
	fs.StringVar(&c.sgBin, "sessiongate-bin", "", "sessiongate binary to measure (default: build ./cmd/sessiongate)")
	fs.StringVar(&c.floorBin, "floor-bin", "", "floor binary (default: build ./test/load/floor)")
	fs.StringVar(&c.sgArgs, "sessiongate-args", "", "extra arguments for sessiongate serve, space-separated")
	fs.StringVar(&c.store, "store", "", `sessiongate's store: "" embedded, "redis" (a redis-server started on loopback, no persistence) or a redis:// URL; Redis' INFO commandstats is reported per request`)
	fs.BoolVar(&c.floorAnswers, "floor-answers", false, "the floor answers each request with an OK of the shape and size of sessiongate's answer to it, chosen by host (floor -answer-like-sessiongate), instead of an empty OK")
	fs.BoolVar(&c.quiet, "q", false, "print only the results")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "all":
			c.scenarios = append(c.scenarios, "live", "api", "new", "deny", "mix", "oidc")
		case "live", "api", "new", "deny", "mix", "oidc":
			c.scenarios = append(c.scenarios, s)
		case "":
		default:
			return c, fmt.Errorf("-scenario %q: want live, api, new, deny, mix, oidc or all", s)
		}
	}
	switch {
	case len(c.scenarios) == 0:
		return c, errors.New("-scenario: none given")
	case c.pairs < 1 || c.streams < 1 || c.requests < 1 || c.newRequests < 1 || c.users < 1 || c.warmup < 0:
		return c, errors.New("-pairs, -streams, -requests, -new-requests and -users must be positive, -warmup not negative")
	case c.limit <= 0:
		return c, errors.New("-run-timeout must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "load:", err)
		return 2
	}
	if err := measure(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	return 0
}

func measure(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	verbose := func(format string, args ...any) {
		if !cfg.quiet {
			fmt.Fprintf(stderr, "load: "+format+"\n", args...)
		}
	}
	tmp, err := os.MkdirTemp("", "sessiongate-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	r, err := startServers(cfg, tmp, verbose)
	defer r.close()
	if err != nil {
		return err
	}
	floor, sg, st := r.floor, r.st.sg, r.st

	// Both processes start cold (heap size, goroutine stacks, HTTP/2 flow
	// control windows): warm them before the first measured run.
	verbose("warming up")
	for _, s := range []*server{floor, sg} {
		warm := fixture.Request(appPath, "", "", true)
		drive(s.api, cfg.streams, cfg.limit, load{n: 10 * max(cfg.warmup, 100), req: func(int) *authv3.CheckRequest { return warm }})
	}

	header(stdout, cfg)
	failed := false
	for _, name := range cfg.scenarios {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sc, err := st.build(name)
		if err != nil {
			return err
		}
		verbose("scenario %s: %d pairs", sc.name, cfg.pairs)
		res, err := runScenario(ctx, cfg, sc, floor, sg)
		if err != nil {
			return err
		}
		report(stdout, sc, res)
		for _, r := range res {
			failed = failed || r.out.failures > 0
		}
	}
	if failed {
		return errors.New("sessiongate gave wrong answers (see failures above)")
	}
	return nil
}

// servers is the floor and sessiongate, started, and what the scenarios are
// built from (sessiongate is st.sg).
type servers struct {
	floor *server
	st    *setup
	stops []func() // in the order they were started
}

// close stops what startServers started, the last first.
func (r *servers) close() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// startServers builds the binaries cfg does not name, writes the policies,
// the session key and, with the embedded store and the oidc scenario, the
// state file into tmp, and starts the floor (answering like sessiongate with
// -floor-answers), Redis with -store, and sessiongate. Close the result
// even when it returns an error.
func startServers(cfg config, tmp string, verbose func(format string, args ...any)) (*servers, error) {
	r := &servers{}
	var err error
	if cfg.sgBin == "" || cfg.floorBin == "" {
		verbose("building sessiongate and floor")
		if cfg.sgBin == "" {
			if cfg.sgBin, err = build(tmp, "./cmd/sessiongate"); err != nil {
				return r, err
			}
		}
		if cfg.floorBin == "" {
			if cfg.floorBin, err = build(tmp, "./test/load/floor"); err != nil {
				return r, err
			}
		}
	}
	policies := filepath.Join(tmp, "policies")
	if err := os.Mkdir(policies, 0o755); err != nil {
		return r, err
	}
	fx, err := fixture.New(policies)
	if err != nil {
		return r, err
	}
	keyFile, keys, err := fixture.WriteSignIn(policies, tmp)
	if err != nil {
		return r, err
	}
	var floorArgs []string
	if cfg.floorAnswers {
		floorArgs = []string{"-answer-like-sessiongate"}
	}
	if r.floor, err = start("floor", cfg.floorBin, floorArgs); err != nil {
		return r, err
	}
	r.stops = append(r.stops, r.floor.stop)
	sgArgs := []string{"serve", "--policies", policies, "--http-addr", "127.0.0.1:0", "--drain-delay", "0s",
		"--audit-log", filepath.Join(tmp, "audit.log"), "--session-key-file", keyFile}
	var rs *redisStore
	if cfg.store != "" {
		if rs, err = openRedis(cfg.store, tmp); err != nil {
			return r, err
		}
		r.stops = append(r.stops, rs.close)
		sgArgs = append(sgArgs, "--store", rs.url)
	}
	var seeded *authz.Session
	if rs == nil && slices.Contains(cfg.scenarios, "oidc") {
		// The embedded store lives in sessiongate's process: the oidc
		// scenario's session goes into the state file it starts from.
		if seeded, err = fixture.NewSignIn(keys); err != nil {
			return r, err
		}
		stateFile := filepath.Join(tmp, "state")
		if err := writeStateFile(stateFile, seeded); err != nil {
			return r, err
		}
		verbose("wrote a sign-in session of policy %s into the state file (grant %d bytes sealed)", fixture.SignInPolicy, len(seeded.Grant))
		sgArgs = append(sgArgs, "--state-file", stateFile)
	}
	sg, err := start("sessiongate", cfg.sgBin, append(sgArgs, strings.Fields(cfg.sgArgs)...))
	if err != nil {
		return r, err
	}
	r.stops = append(r.stops, sg.stop)
	sg.redis = rs
	r.st = &setup{fx: fx, sg: sg, redis: rs, keys: keys, seeded: seeded, cfg: cfg, signIn: time.Now().Add(-time.Minute), verbose: verbose}
	return r, nil
}

// build compiles pkg of this module into dir.
func build(dir, pkg string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// result is one measured run.
type result struct {
	pair        int
	server      string
	out         outcome
	redisCmds   map[string]int64 // commands Redis ran during the run (sessiongate with -store)
	serverTicks int64            // CPU ticks the server used during the run
	clientTicks int64            // and the harness itself
	other       float64          // cores used by other processes during the run
}

func (r result) rps() float64 { return float64(r.out.done) / r.out.elapsed.Seconds() }

// cpuPerRequest turns CPU ticks spent on done requests into time per request.
func cpuPerRequest(ticks int64, done int) time.Duration {
	if done == 0 {
		return 0
	}
	return time.Duration(ticks) * (time.Second / clockTicks) / time.Duration(done)
}

// runScenario runs the scenario's pairs and returns, pair by pair, the
// floor's result and then sessiongate's.
func runScenario(ctx context.Context, cfg config, sc *scenario, floor, sg *server) ([]result, error) {
	var res []result
	for p := range cfg.pairs {
		// ABBA: odd pairs run sessiongate first, so that a drift of the
		// machine's load within a pair favours neither server.
		first, second := floor, sg
		if p%2 == 1 {
			first, second = sg, floor
		}
		var pair [2]result
		for k, s := range []*server{first, second} {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			run := 2*p + k
			var want func(*authv3.CheckResponse) error
			if s == sg {
				want = sc.want // the floor answers OK to everything
			}
			r, err := measureRun(cfg, s, sc.requests, func(i int) *authv3.CheckRequest { return sc.req(run, i) }, want)
			if err != nil {
				return nil, err
			}
			r.pair = p
			if s == floor {
				pair[0] = r
			} else {
				pair[1] = r
			}
		}
		res = append(res, pair[:]...)
	}
	return res, nil
}

// measureRun sends cfg.warmup unmeasured requests, then n measured ones,
// req(cfg.warmup) onwards, reading CPU counters around the measured part.
func measureRun(cfg config, s *server, n int, req func(i int) *authv3.CheckRequest, want func(*authv3.CheckResponse) error) (result, error) {
	if cfg.warmup > 0 {
		drive(s.api, cfg.streams, cfg.limit, load{n: cfg.warmup, req: req})
	}
	l := load{n: n, req: func(i int) *authv3.CheckRequest { return req(cfg.warmup + i) }}
	if want != nil {
		l.check = func(_ int, resp *authv3.CheckResponse) error { return want(resp) }
	}
	var cmdsBefore map[string]int64
	var err error
	if s.redis != nil {
		if cmdsBefore, err = s.redis.commands(); err != nil {
			return result{}, err
		}
	}
	before, err := takeSample(s.pid())
	if err != nil {
		return result{}, err
	}
	o := drive(s.api, cfg.streams, cfg.limit, l)
	after, err := takeSample(s.pid())
	if err != nil {
		return result{}, err
	}
	if err := s.alive(); err != nil {
		return result{}, err
	}
	r := newResult(s.name, o, before, after)
	if s.redis != nil {
		cmdsAfter, err := s.redis.commands()
		if err != nil {
			return result{}, err
		}
		r.redisCmds = map[string]int64{}
		commandDiff(r.redisCmds, cmdsBefore, cmdsAfter)
	}
	return r, nil
}

func newResult(name string, o outcome, before, after sample) result {
	r := result{server: name, out: o, serverTicks: after.server - before.server, clientTicks: after.client - before.client}
	other := (after.machine - before.machine) - r.serverTicks - r.clientTicks
	r.other = max(float64(other)/clockTicks/o.elapsed.Seconds(), 0)
	return r
}

func header(w io.Writer, cfg config) {
	model, cores := cpuModel()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "machine: %s, %d CPUs (GOMAXPROCS %d), %s %s/%s; load average %s",
		model, cores, runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
	fmt.Fprintf(w, "client: %d streams over one connection, %d warm-up requests per run, floor and sessiongate alternating (ABBA)\n",
		cfg.streams, cfg.warmup)
	if cfg.floorAnswers {
		fmt.Fprintf(w, "floor: answers like sessiongate (-floor-answers): an OK of the shape and size of sessiongate's answer, by host (%s: a sign-in session's; any other: a token session's)\n\n", fixture.SignInHost)
	} else {
		fmt.Fprintf(w, "floor: answers an empty OK (no-op)\n\n")
	}
}

func cpuModel() (string, int) {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := "unknown CPU"
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			model = strings.TrimSpace(v)
			break
		}
	}
	return model, runtime.NumCPU()
}

// quietLoad is the other processes' load below which a run counts as quiet.
const quietLoad = 0.25

func report(w io.Writer, sc *scenario, res []result) {
	fmt.Fprintf(w, "scenario %s — %s; %d requests per run\n", sc.name, sc.about, sc.requests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pair\tserver\tanswered\trps\tp50\tp99\tserver CPU/req\tclient CPU/req\tother load (cores)\tfailures\t")
	var ratios, quiet []float64
	var redisCmds map[string]int64
	var per [2]struct { // floor, sessiongate
		rps, p50, p99 []float64
		ticks         int64
		done          int
	}
	for i, r := range res {
		p50, p99 := percentile(r.out.latencies, 0.5), percentile(r.out.latencies, 0.99)
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%.2f\t%d\t\n", r.pair+1, r.server, r.out.done, r.rps(),
			round(p50), round(p99), round(cpuPerRequest(r.serverTicks, r.out.done)),
			round(cpuPerRequest(r.clientTicks, r.out.done)), r.other, r.out.failures)
		if r.out.firstErr != nil {
			fmt.Fprintf(tw, "\t\tfirst failure: %v\t\t\t\t\t\t\t\t\n", r.out.firstErr)
		}
		s := &per[i%2]
		s.rps = append(s.rps, r.rps())
		s.p50, s.p99 = append(s.p50, float64(p50)), append(s.p99, float64(p99))
		s.ticks, s.done = s.ticks+r.serverTicks, s.done+r.out.done
		if r.redisCmds != nil {
			if redisCmds == nil {
				redisCmds = map[string]int64{}
			}
			commandDiff(redisCmds, nil, r.redisCmds)
		}
		if i%2 == 1 {
			f := res[i-1]
			ratios = append(ratios, r.rps()/f.rps())
			if f.other < quietLoad && r.other < quietLoad {
				quiet = append(quiet, r.rps()/f.rps())
			}
		}
	}
	tw.Flush()
	cpu := [2]time.Duration{cpuPerRequest(per[0].ticks, per[0].done), cpuPerRequest(per[1].ticks, per[1].done)}
	fmt.Fprintf(w, "=> %s: sessiongate/floor throughput %.3f (median of %d pair ratios; min %.3f, max %.3f); server CPU/req ×%.2f\n",
		sc.name, median(ratios), len(ratios), minOf(ratios), maxOf(ratios), float64(cpu[1])/float64(cpu[0]))
	if len(quiet) > 0 {
		fmt.Fprintf(w, "   quiet pairs (other load < %.2f cores in both runs): %d, median ratio %.3f\n", quietLoad, len(quiet), median(quiet))
	} else {
		fmt.Fprintf(w, "   quiet pairs (other load < %.2f cores in both runs): none\n", quietLoad)
	}
	for i, name := range []string{"floor", "sessiongate"} {
		d := func(xs []float64) time.Duration { return round(time.Duration(median(xs))) }
		fmt.Fprintf(w, "   %-11s median %6.0f rps, p50 %s, p99 %s; server CPU %s/req over all runs\n",
			name, median(per[i].rps), d(per[i].p50), d(per[i].p99), round(cpu[i]))
	}
	if redisCmds != nil {
		// Every command counts, the change channel's heartbeat included;
		// a pipeline of n commands is one round trip and n here.
		fmt.Fprintf(w, "   Redis (INFO commandstats, measured runs): %.4f commands per sessiongate request (%d over %d: %s)\n",
			float64(total(redisCmds))/float64(max(per[1].done, 1)), total(redisCmds), per[1].done, describe(redisCmds))
	}
	fmt.Fprintln(w)
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
