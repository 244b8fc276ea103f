package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sessiongate/sessiongate/audit"
	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/ends"
	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/forwardauth"
	"github.com/sessiongate/sessiongate/internal/httpserve"
	"github.com/sessiongate/sessiongate/internal/memlimit"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/policy"
	redisstore "github.com/sessiongate/sessiongate/store/redis"
	"github.com/sessiongate/sessiongate/token"
)

type serveConfig struct {
	policies        string
	grpcAddr        string
	httpAddr        string
	trustedProxies  string
	store           string
	stateFile       string
	logLevel        string
	logFormat       string
	auditLog        string
	auditHashSub    bool
	shutdownTimeout time.Duration
	http            httpserve.Limits
	drainDelay      time.Duration
	sessionKeyFile  string
	adminAddr       string
	adminTokenFile  string
	adminTLSCert    string
	adminTLSKey     string
	adminClientCA   string
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var c serveConfig
	fs.StringVar(&c.policies, "policies", "", "directory of policy files (required)")
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":9001", "ext_authz gRPC and grpc.health.v1 listen address")
	fs.StringVar(&c.httpAddr, "http-addr", ":9002", "HTTP listen address for /metrics, /healthz, /readyz and forward-auth (/auth/...)")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", forwardauth.DefaultTrustedProxies, "comma-separated CIDRs or IPs whose X-Forwarded-*/X-Original-* headers forward-auth believes (empty: none)")
	fs.StringVar(&c.store, "store", "memory", "session store: memory (embedded), or a Redis/Valkey URL: redis[s]://, valkey[s]://, with +sentinel or +cluster (docs/scale-out.md)")
	fs.StringVar(&c.stateFile, "state-file", "", "file that keeps the embedded store's sessions across restarts; with Redis, the session ends decided during an outage until Redis has them")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.auditLog, "audit-log", "stdout", "where session audit events go: stdout, stderr or a file path")
	fs.BoolVar(&c.auditHashSub, "audit-hash-subject", false, "write a hash of the subject instead of the subject in audit events and log lines")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight checks may take to finish on shutdown, after the drain delay")
	fs.DurationVar(&c.http.IdleTimeout, "http-idle-timeout", httpserve.DefaultIdleTimeout, "close an HTTP keep-alive connection idle this long")
	fs.DurationVar(&c.http.ReadTimeout, "http-read-timeout", httpserve.DefaultReadTimeout, "close an HTTP connection whose request (headers and body) takes longer")
	fs.IntVar(&c.http.MaxConns, "http-max-conns", httpserve.DefaultMaxConns, "open HTTP connections at most (never more than half the open-file limit); more wait to be accepted")
	fs.DurationVar(&c.drainDelay, "drain-delay", defaultDrainDelay, "on SIGTERM, how long to keep answering checks while /readyz and gRPC health say not serving, so that load balancers move away first (0: none; a second signal cuts it short)")
	fs.StringVar(&c.sessionKeyFile, "session-key-file", "", "keys that seal sign-in grants and login transactions: one 32-byte key per line, base64 or hex; the first seals, all open (rotation). Required with a shared store and login.oidc policies")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "listen address of the admin API (sessiongate sessions list|end); off when empty; a non-loopback address needs --admin-token-file")
	fs.StringVar(&c.adminTokenFile, "admin-token-file", "", "file holding the bearer token every admin API call must present")
	fs.StringVar(&c.adminTLSCert, "admin-tls-cert-file", "", "PEM certificate (chain) of the admin API: it serves HTTPS, TLS 1.2 or later; read again when it changes. With --admin-tls-key-file")
	fs.StringVar(&c.adminTLSKey, "admin-tls-key-file", "", "PEM private key of --admin-tls-cert-file")
	fs.StringVar(&c.adminClientCA, "admin-client-ca-file", "", "PEM CA certificates: admin API clients must present a certificate one of them signed (with the TLS flags; read again when it changes); then a non-loopback --admin-addr needs no token")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if c.policies == "" {
		fmt.Fprintln(stderr, "sessiongate serve: --policies is required")
		return exitUsage
	}
	// Before anything starts: an admin API open to the network without a
	// token or client certificates must not come up even briefly.
	if err := checkAdminFlags(c); err != nil {
		fmt.Fprintln(stderr, "sessiongate serve:", err)
		return exitUsage
	}
	if c.drainDelay < 0 || c.shutdownTimeout <= 0 {
		fmt.Fprintln(stderr, "sessiongate serve: --drain-delay must not be negative and --shutdown-timeout must be positive")
		return exitUsage
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat, c.auditHashSub)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate serve:", err)
		return exitUsage
	}
	// Before the store fills the heap: a limit the collector keeps under,
	// from the container's unless GOMEMLIMIT says otherwise.
	memlimit.Apply(os.LookupEnv, "/", debug.SetMemoryLimit, log)
	if err := runServer(ctx, c, stdout, log); err != nil {
		log.Error("sessiongate stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

func runServer(ctx context.Context, c serveConfig, stdout io.Writer, log *slog.Logger) error {
	trustedProxies, err := forwardauth.ParsePrefixes(c.trustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	clock := authz.SystemClock{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	auditOut, auditFile, err := openAudit(c.auditLog, stdout)
	if err != nil {
		return err
	}
	if auditFile != nil {
		defer auditFile.Close()
	}
	auditFailed := func(err error) {
		m.AuditWriteFailed()
		log.Error("audit event not written", "err", err)
	}
	// Events are written by the queue's goroutine, never on the request
	// path; closed (what is queued written out) after everything else.
	auditQueue := audit.NewQueue(auditOut, audit.QueueCapacity, auditFailed)
	defer auditQueue.Close()
	auditLog := audit.New(auditQueue, audit.Options{HashSubject: c.auditHashSub, OnError: auditFailed})

	keys, err := loadKeys(c.sessionKeyFile)
	if err != nil {
		return err
	}
	// The store comes first: sign-ins use up login attempts through it.
	store, err := openStore(c, clock, log)
	if err != nil {
		return err
	}
	defer func() {
		// With --state-file this writes the final snapshot.
		if err := store.Close(); err != nil {
			log.Error("session store: closing", "err", err)
		}
	}()
	instrumented := metrics.InstrumentStore(store, m)
	dl, _ := store.(metrics.DataLoss)
	reg.MustRegister(metrics.NewDataLoss(dl)...)
	if sf, ok := store.(interface{ StateFileErr() error }); ok && c.stateFile != "" {
		reg.MustRegister(metrics.NewStateFileWritable(sf.StateFileErr))
	}
	shared := c.store != "" && c.store != "memory"
	// Login attempts are used up through the store's one-time claims, on
	// every replica (S13).
	rp, err := oidc.New(oidc.Options{Keys: keys, Claims: instrumented, Logger: log, Clock: clock, Observer: m})
	if err != nil {
		return err
	}

	tokens := token.NewProvider(token.Options{Logger: log, Clock: clock, Observer: m})
	var keyWarning *randomKeyWarning
	if c.sessionKeyFile == "" {
		keyWarning = &randomKeyWarning{log: log}
	}
	var watcher *policy.Watcher
	watcher, err = policy.NewWatcher(c.policies, policy.WatcherOptions{
		Options: policy.Options{
			NewVerifier: func(name string, tc policy.TokenConfig) (authz.Verifier, error) {
				return tokens.VerifierFor(name, token.Config(tc))
			},
			NewSignIn: signInFactory(rp, tokens, shared, c.sessionKeyFile != ""),
		},
		Logger: log,
		OnReload: func(ok bool, _ error) {
			m.PolicyReloaded(ok, clock.Now())
			if ok && watcher != nil {
				m.Policies(watcher.Current().Names())
				names := signInPolicies(watcher.Current().Policies())
				m.SignInPolicies(names)
				keyWarning.check(names)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("no valid policies to start with (fix them and start again): %w", err)
	}
	m.Policies(watcher.Current().Names())
	names := signInPolicies(watcher.Current().Policies())
	m.SignInPolicies(names)
	keyWarning.check(names)
	reg.MustRegister(metrics.NewProviderUp(func() []*authz.Policy { return watcher.Current().Policies() }))
	// A first discovery before serving, bounded, so that sign-ins start
	// from the first request when the providers answer; one that does not
	// is retried in the background and delays nothing else.
	dctx, dcancel := context.WithTimeout(ctx, firstDiscoveryWait)
	rp.DiscoverNow(dctx)
	dcancel()
	reg.MustRegister(metrics.NewTokenKeys(func() []*authz.Policy { return watcher.Current().Policies() }))
	if live, ok := store.(metrics.LiveSessions); ok { // the embedded store; Redis is not scanned on scrape
		reg.MustRegister(metrics.NewSessionsActive(live, func() []*authz.Policy { return watcher.Current().Policies() }, clock))
	}

	engine, err := authz.NewEngine(authz.Options{
		Policies: watcher,
		Store:    instrumented,
		Clock:    clock,
		Events:   authz.Fanout{m, auditLog},
		Logger:   log,
	})
	if err != nil {
		return err
	}

	// Listen synchronously so that a bad address fails at start, then serve.
	grpcLis, err := net.Listen("tcp", c.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	httpLis, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("--http-addr: %w", err)
	}
	grpcSrv := envoy.NewServer(engine)
	ready := func(ctx context.Context) error {
		set := watcher.Current()
		if set == nil {
			return errors.New("no policies loaded")
		}
		err := instrumented.Ready(ctx)
		m.StoreUp(err == nil)
		if err != nil && !anyFailOpen(set.Policies()) {
			// Out of rotation only when no policy could be served anyway: a
			// policy with store_failure: continue keeps deciding on the near
			// cache, and taking every replica out would deny it too.
			return err
		}
		// The same rule for token keys: not ready while no policy can
		// verify a token (a jwks_uri not loaded since the start); one
		// policy without keys is told by sessiongate_token_keys and the log.
		if names, all := metrics.PoliciesWithoutKeys(set.Policies()); all {
			return fmt.Errorf("no token keys for policy %s: the JWKS has not loaded since the start (see the log)", strings.Join(names, ", "))
		}
		return nil
	}
	// /readyz fails from the start of shutdown, as gRPC health does, so
	// that Kubernetes takes the pod out of its endpoints while it drains.
	var stopping atomic.Bool
	readyz := func(ctx context.Context) error {
		if stopping.Load() {
			return errors.New("shutting down")
		}
		return ready(ctx)
	}
	notes := func() []string { return signInNotes(watcher.Current().Policies()) }
	endsDeps := ends.Deps{
		Policies: func() []*authz.Policy { return watcher.Current().Policies() },
		Store:    instrumented, // counted in store_operations_total like the engine's calls
		Events:   authz.Fanout{m, auditLog},
		Auditor:  auditLog,
		Observer: m,
		Clock:    clock,
		Logger:   log,
	}
	httpSrv, httpLimits := httpserve.Server(opsHandler(reg, readyz, notes, forwardauth.NewHandler(engine,
		forwardauth.Options{TrustedProxies: trustedProxies, Logger: log}), ends.NewBackChannel(endsDeps)), c.http)
	httpLis = httpserve.Listener(httpLis, httpLimits.MaxConns)
	adminSrv, adminLis, err := adminServer(c, endsDeps, log)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Every goroutine of the server is one of these units, joined before
	// runServer returns: the store (and the audit file) close after the
	// last request, reload or refresh that could use them.
	var units sync.WaitGroup
	defer units.Wait()
	errc := make(chan error, 3)
	units.Go(func() { errc <- grpcSrv.Serve(grpcLis) })
	if adminSrv != nil {
		units.Go(func() {
			if err := adminSrv.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	units.Go(func() {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	})
	units.Go(func() { watcher.Run(ctx) })
	units.Go(func() { tokens.Run(ctx) })
	units.Go(func() { rp.Run(ctx) })
	units.Go(func() { watchReadiness(ctx, ready, grpcSrv) })
	units.Go(func() { reloadOnHUP(ctx, watcher, auditFile, log) })

	bi := readBuildInfo()
	log.Info("sessiongate serving", "version", bi.version, "revision", bi.revision, "grpc_addr", grpcLis.Addr().String(),
		"http_addr", httpLis.Addr().String(), "http_max_conns", httpLimits.MaxConns, "policies", watcher.Current().Names(), "store", redisstore.Redact(c.store))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	// Out of rotation first, still answering: /readyz and gRPC health say
	// not serving for the drain delay, while load balancers (Envoy's health
	// check, Kubernetes endpoints) stop sending, so that no check sent
	// meanwhile meets a closed port.
	stopping.Store(true)
	grpcSrv.Drain()
	if serveErr == nil && c.drainDelay > 0 {
		log.Info("sessiongate draining: not ready, still answering", "drain_delay", c.drainDelay.String())
		drain(c.drainDelay)
	}
	log.Info("sessiongate shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer scancel()
	cancel()
	grpcSrv.Stop(sctx)
	_ = httpSrv.Shutdown(sctx)
	if adminSrv != nil {
		_ = adminSrv.Shutdown(sctx)
	}
	return serveErr
}

// checkAdminFlags refuses admin flags that do not go together, and an
// admin address open to the network to callers nobody authenticates.
func checkAdminFlags(c serveConfig) error {
	if (c.adminTLSCert == "") != (c.adminTLSKey == "") {
		return errors.New("--admin-tls-cert-file and --admin-tls-key-file go together: give both or neither")
	}
	if c.adminClientCA != "" && c.adminTLSCert == "" {
		return errors.New("--admin-client-ca-file needs --admin-tls-cert-file and --admin-tls-key-file: client certificates are asked for in the TLS handshake")
	}
	if c.adminAddr == "" {
		if c.adminTLSCert != "" || c.adminClientCA != "" {
			return errors.New("--admin-tls-cert-file or --admin-client-ca-file without --admin-addr: the admin API is off")
		}
		return nil
	}
	return ends.CheckAdminAddr(c.adminAddr, c.adminTokenFile != "", c.adminClientCA != "")
}

// adminServer listens on --admin-addr (nil when it is empty): the admin
// API on a listener of its own, so that it can be kept off the network the
// gateway and the identity provider reach.
func adminServer(c serveConfig, d ends.Deps, log *slog.Logger) (*http.Server, net.Listener, error) {
	if c.adminAddr == "" {
		if c.adminTokenFile != "" {
			return nil, nil, errors.New("--admin-token-file without --admin-addr: the admin API is off")
		}
		return nil, nil, nil
	}
	token := ""
	if c.adminTokenFile != "" {
		b, err := os.ReadFile(c.adminTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); len(token) < 16 {
			return nil, nil, errors.New("--admin-token-file: the token must be at least 16 characters")
		}
	}
	if err := ends.CheckAdminAddr(c.adminAddr, token != "", c.adminClientCA != ""); err != nil {
		return nil, nil, err
	}
	if token == "" && c.adminClientCA == "" {
		log.Warn("admin API without a token: anyone who can connect to the loopback address can list and end sessions", "admin_addr", c.adminAddr)
	}
	var tlsConfig *tls.Config
	if c.adminTLSCert != "" {
		var err error
		if tlsConfig, err = ends.AdminTLS(c.adminTLSCert, c.adminTLSKey, c.adminClientCA); err != nil {
			return nil, nil, err
		}
	}
	lis, err := net.Listen("tcp", c.adminAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("--admin-addr: %w", err)
	}
	if tlsConfig != nil {
		lis = tls.NewListener(lis, tlsConfig)
	}
	log.Info("admin API listening", "admin_addr", lis.Addr().String(), "token", token != "", "tls", tlsConfig != nil, "client_certificates", c.adminClientCA != "")
	return &http.Server{Handler: ends.NewAdmin(d, token), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 5 * time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}, lis, nil
}

// defaultDrainDelay is --drain-delay's default: above the 3 s that the
// shipped Envoy configuration's health check (every second, unhealthy after
// 2 failures, 1 s timeout) takes to see NOT_SERVING. deploy/ checks both.
const defaultDrainDelay = 5 * time.Second

// drain waits d, or less if SIGTERM or SIGINT arrives again (an operator
// who does not want to wait).
func drain(d time.Duration) {
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(again)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-again:
	}
}

// watchReadiness keeps grpc.health.v1 in step with readiness: NOT_SERVING
// while policies or the store are not usable.
func watchReadiness(ctx context.Context, ready func(context.Context) error, s *envoy.Server) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.SetServing(ready(ctx) == nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reloadOnHUP reloads the policies on SIGHUP, and reopens the audit log file
// (if there is one) so that logrotate's postrotate can send the same signal.
func reloadOnHUP(ctx context.Context, w *policy.Watcher, auditFile *audit.File, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading policies")
			if err := w.Reload(); err != nil {
				log.Error("policy reload failed; keeping the last good policies", "err", err)
			}
			if auditFile != nil {
				if err := auditFile.Reopen(); err != nil {
					log.Error("audit log not reopened; writing on to the old file", "err", err)
				}
			}
		}
	}
}

// openAudit returns where audit events go; the file is nil for the
// standard streams, which have nothing to reopen or close.
func openAudit(dest string, stdout io.Writer) (io.Writer, *audit.File, error) {
	switch dest {
	case "", "stdout":
		return stdout, nil, nil
	case "stderr":
		return os.Stderr, nil, nil
	}
	f, err := audit.OpenFile(dest)
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return f, f, nil
}

// newLogger builds the operator log; with hashSubjects, every subject in it
// is written as its audit hash (audit.HashSubjects).
func newLogger(w io.Writer, level, format string, hashSubjects bool) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if hashSubjects {
		opts.ReplaceAttr = audit.HashSubjects
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

func anyFailOpen(ps []*authz.Policy) bool {
	for _, p := range ps {
		if p.StoreFailOpen {
			return true
		}
	}
	return false
}
