package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sessiongate/sessiongate/audit"
	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/envoy"
	"github.com/sessiongate/sessiongate/metrics"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/token"
)

type serveConfig struct {
	policies        string
	grpcAddr        string
	httpAddr        string
	store           string
	stateFile       string
	logLevel        string
	logFormat       string
	auditLog        string
	auditHashSub    bool
	shutdownTimeout time.Duration
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var c serveConfig
	fs.StringVar(&c.policies, "policies", "", "directory of policy files (required)")
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":9001", "ext_authz gRPC and grpc.health.v1 listen address")
	fs.StringVar(&c.httpAddr, "http-addr", ":9002", "HTTP listen address for /metrics, /healthz and /readyz")
	fs.StringVar(&c.store, "store", "memory", "session store: memory (embedded)")
	fs.StringVar(&c.stateFile, "state-file", "", "file that keeps the embedded store's sessions across restarts")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.auditLog, "audit-log", "stdout", "where session audit events go: stdout, stderr or a file path")
	fs.BoolVar(&c.auditHashSub, "audit-hash-subject", false, "write a hash of the subject instead of the subject in audit events")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight checks may take to finish on shutdown")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if c.policies == "" {
		fmt.Fprintln(stderr, "sessiongate serve: --policies is required")
		return exitUsage
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate serve:", err)
		return exitUsage
	}
	if err := runServer(ctx, c, stdout, log); err != nil {
		log.Error("sessiongate stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

func runServer(ctx context.Context, c serveConfig, stdout io.Writer, log *slog.Logger) error {
	if c.store != "memory" && c.store != "" {
		return fmt.Errorf("--store %q: only the embedded store (memory) is supported by this build", redactURL(c.store))
	}
	if c.stateFile != "" {
		return errors.New("--state-file: not supported by this build yet")
	}
	clock := authz.SystemClock{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	auditOut, closeAudit, err := openAudit(c.auditLog, stdout)
	if err != nil {
		return err
	}
	defer closeAudit()

	tokens := token.NewProvider(token.Options{Logger: log, Clock: clock, Observer: m})
	var watcher *policy.Watcher
	watcher, err = policy.NewWatcher(c.policies, policy.WatcherOptions{
		Options: policy.Options{NewVerifier: func(_ string, tc policy.TokenConfig) (authz.Verifier, error) {
			return tokens.Verifier(token.Config(tc))
		}},
		Logger: log,
		OnReload: func(ok bool, _ error) {
			m.PolicyReloaded(ok, clock.Now())
			if ok && watcher != nil {
				m.Policies(watcher.Current().Names())
			}
		},
	})
	if err != nil {
		return fmt.Errorf("loading policies: %w", err)
	}
	m.Policies(watcher.Current().Names())

	store, err := memory.New(memory.Options{Clock: clock})
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	defer store.Close()
	instrumented := metrics.InstrumentStore(store, m)

	engine, err := authz.NewEngine(authz.Options{
		Policies: watcher,
		Store:    instrumented,
		Clock:    clock,
		Events:   authz.Fanout{m, audit.New(auditOut, audit.Options{HashSubject: c.auditHashSub})},
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
		if watcher.Current() == nil {
			return errors.New("no policies loaded")
		}
		return instrumented.Ready(ctx)
	}
	httpSrv := &http.Server{
		Handler:           opsHandler(reg, ready),
		ReadHeaderTimeout: 5 * time.Second,
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- grpcSrv.Serve(grpcLis) }()
	go func() {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go watcher.Run(ctx)
	go tokens.Run(ctx)
	go watchReadiness(ctx, ready, grpcSrv, m)
	go reloadOnHUP(ctx, watcher, log)

	log.Info("sessiongate serving", "version", version(), "grpc_addr", grpcLis.Addr().String(),
		"http_addr", httpLis.Addr().String(), "policies", watcher.Current().Names(), "store", "memory")

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("sessiongate shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer scancel()
	cancel()
	grpcSrv.Stop(sctx)
	_ = httpSrv.Shutdown(sctx)
	return serveErr
}

// watchReadiness keeps grpc.health.v1 in step with readiness: NOT_SERVING
// while policies or the store are not usable.
func watchReadiness(ctx context.Context, ready func(context.Context) error, s *envoy.Server, m *metrics.Metrics) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		err := ready(ctx)
		m.StoreUp(err == nil)
		s.SetServing(err == nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func reloadOnHUP(ctx context.Context, w *policy.Watcher, log *slog.Logger) {
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
		}
	}
}

func openAudit(dest string, stdout io.Writer) (io.Writer, func(), error) {
	switch dest {
	case "", "stdout":
		return stdout, func() {}, nil
	case "stderr":
		return os.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return f, func() { f.Close() }, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

// redactURL drops credentials from a store URL before it is printed.
func redactURL(s string) string {
	if i := strings.Index(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "REDACTED" + s[i:]
		}
	}
	return s
}
