package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// scrape parses /metrics (text format) with testutil.Samples.
func scrape(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(s.metrics(t)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return testutil.Samples(slices.Collect(maps.Values(mfs)))
}

// wantFamily asserts every series of family name exactly: the values in
// want, and zero for every other series the scrape has. A series in want
// that the scrape lacks is an error too.
func wantFamily(t *testing.T, got map[string]float64, name string, want map[string]float64) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		if got[k] != want[k] {
			t.Errorf("%s = %v, want %v", k, got[k], want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from /metrics (want %v)", k, want[k])
		}
	}
}

// waitMetric polls /metrics until key has value v (5s at most).
func waitMetric(t *testing.T, s *server, key string, v float64) {
	t.Helper()
	var got float64
	if !waitFor(5*time.Second, func() bool { got = scrape(t, s)[key]; return got == v }) {
		t.Fatalf("%s = %v after 5s, want %v", key, got, v)
	}
}

// auditHash is the documented hash of session ids and (with
// --audit-hash-subject) subjects: hex of the first 128 bits of SHA-256.
func auditHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// readAudit parses the audit file's JSON lines. It checks, and then drops,
// the fields that vary from run to run (time, scope), returning the scope
// of each event beside it.
func readAudit(t *testing.T, path string, since time.Time) (evs []map[string]any, scopes []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		ts, _ := m["time"].(string)
		if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || at.Before(since.Add(-time.Second)) || at.After(time.Now()) || !strings.HasSuffix(ts, "Z") {
			t.Errorf("audit time %q: want RFC 3339 UTC during the test", ts)
		}
		scope, _ := m["scope"].(string)
		if !hex32.MatchString(scope) {
			t.Errorf("audit scope %q: want 32 hex digits", scope)
		}
		delete(m, "time")
		delete(m, "scope")
		evs = append(evs, m)
		scopes = append(scopes, scope)
	}
	return evs, scopes
}

// TestObservabilityScenario drives a scripted scenario through sessiongate
// and then asserts the exact counters on /metrics and the exact audit
// events in --audit-log (with --audit-hash-subject), then breaks and fixes a
// policy (reload counters) and rotates the audit log (SIGHUP reopens it).
func TestObservabilityScenario(t *testing.T) {
	t.Parallel()
	start := time.Now()
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	crm := pol{Hosts: []string{"crm.test"}, LogoutPath: "/logout"}.yaml() // 1h, idle 30m: no activity write within 18s
	s := startServerOpts(t, map[string]string{
		"crm":    crm,
		"app":    pol{Hosts: []string{"app.test"}, Idle: time.Second}.yaml(),
		"shadow": pol{Hosts: []string{"shadow.test"}, DryRun: true}.yaml(),
	}, serverOpts{extraArgs: []string{"--audit-log", auditPath, "--audit-hash-subject"}})
	rid := func(id string) string { return "x-request-id: " + id }

	// Each step notes the store operations and token cache lookups it costs.
	alice, bob, mallory, api, erin, carol, frank, anon := s.client(t), s.client(t), s.client(t), s.apiClient(t), s.client(t), s.client(t), s.client(t), s.client(t)
	aliceTok, bobTok, daveTok, erinTok, carolTok, frankTok := s.token(t, "alice"), s.token(t, "bob"), s.token(t, "dave"), s.token(t, "erin"), s.token(t, "carol"), s.token(t, "frank")

	// alice signs in (load, begin; miss) and comes back (load; hit).
	r := alice.Check("crm.test", "/", aliceTok, true, rid("a1"))
	wantAllowed(t, r)
	sessA := wantNewSessionCookie(t, r, time.Hour)
	wantAllowed(t, alice.Check("crm.test", "/page", aliceTok, true))
	// bob signs in (load, begin; miss).
	r = bob.Check("crm.test", "/", bobTok, false, rid("b1"))
	wantAllowed(t, r)
	sessB := wantNewSessionCookie(t, r, time.Hour)
	// alice's cookie with bob's token: S4 ends alice's session (load, end; hit).
	wantAPIDenied(t, mallory.Check("crm.test", "/", bobTok, false, "cookie: "+cookieName+"="+sessA, rid("m1")), "identity_mismatch", true)
	// alice is asked to sign in again (load; hit).
	wantLoginRedirect(t, alice.Check("crm.test", "/", aliceTok, true), "reauth_required", "https://crm.test/", true)
	// bob signs out with his cookie (load of the cookie's session, end; load
	// of the token's scope, end that finds it ended; hit).
	r = bob.Check("crm.test", "/logout", bobTok, true, rid("b2"))
	if r.Allowed || r.Reason != "signed_out" || r.Location != signedOutURL {
		t.Fatalf("logout: %v", r)
	}
	// dave, an API client without cookies: a session (load, begin; miss),
	// continued through his scope (load, load of the current session; hit),
	// signed out with the token alone (load of the scope, end; hit), refused
	// afterwards (load; hit).
	r = api.Check("crm.test", "/api", daveTok, false, rid("d1"))
	wantAllowed(t, r)
	sessD := wantNewSessionCookie(t, r, time.Hour)
	wantAllowed(t, api.Check("crm.test", "/api", daveTok, false))
	r = api.Check("crm.test", "/logout", daveTok, false, rid("d2"))
	if r.Allowed || r.Reason != "signed_out" {
		t.Fatalf("token-only logout: %v", r)
	}
	wantAPIDenied(t, api.Check("crm.test", "/api", daveTok, false), "reauth_required", true)
	// erin signs in (load, begin; miss), then signs in again with a newer
	// auth_time: reauthenticated (load, touch; miss).
	r = erin.Check("crm.test", "/", erinTok, true, rid("e1"))
	wantAllowed(t, r)
	sessE := wantNewSessionCookie(t, r, time.Hour)
	nextSecond()
	erinTok2 := s.token(t, "erin")
	wantAllowed(t, erin.Check("crm.test", "/", erinTok2, true, rid("e2")))
	// carol and frank on app (idle 1s): each a session (load, begin; miss).
	// carol returns after the idle timeout (load, confirming load, end;
	// hit); frank never does, so no request discovers his end.
	r = carol.Check("app.test", "/", carolTok, false, rid("c1"))
	wantAllowed(t, r)
	sessC := wantNewSessionCookie(t, r, time.Hour)
	r = frank.Check("app.test", "/", frankTok, false, rid("f1"))
	wantAllowed(t, r)
	sessF := wantNewSessionCookie(t, r, time.Hour)
	time.Sleep(1300 * time.Millisecond)
	wantAPIDenied(t, carol.Check("app.test", "/", carolTok, false, rid("c2")), "idle_timeout", true)
	// Dry-run: no token (no store access) and a malformed token (miss).
	wantAllowed(t, anon.Check("shadow.test", "/", "", false))
	wantAllowed(t, anon.Check("shadow.test", "/", "garbage", false))
	// No policy for the host; no token on crm (no store access).
	wantDenied(t, anon.Check("nowhere.test", "/", "", false), 403, "unknown_host")
	wantLoginRedirect(t, anon.Check("crm.test", "/", "", true), "no_token", "https://crm.test/", false)

	m := scrape(t, s)
	wantFamily(t, m, "sessiongate_checks_total", map[string]float64{
		`sessiongate_checks_total{decision="allow",policy="crm",reason=""}`:                        7,
		`sessiongate_checks_total{decision="allow",policy="app",reason=""}`:                        2,
		`sessiongate_checks_total{decision="allow",policy="shadow",reason=""}`:                     0,
		`sessiongate_checks_total{decision="deny",policy="crm",reason="identity_mismatch"}`:        1,
		`sessiongate_checks_total{decision="deny",policy="crm",reason="reauth_required"}`:          2,
		`sessiongate_checks_total{decision="deny",policy="crm",reason="signed_out"}`:               2,
		`sessiongate_checks_total{decision="deny",policy="crm",reason="no_token"}`:                 1,
		`sessiongate_checks_total{decision="deny",policy="app",reason="idle_timeout"}`:             1,
		`sessiongate_checks_total{decision="dry_run_deny",policy="shadow",reason="no_token"}`:      1,
		`sessiongate_checks_total{decision="dry_run_deny",policy="shadow",reason="invalid_token"}`: 1,
		`sessiongate_checks_total{decision="deny",policy="",reason="unknown_host"}`:                1,
	})
	wantFamily(t, m, "sessiongate_check_duration_seconds", map[string]float64{"sessiongate_check_duration_seconds_count": 19})
	wantFamily(t, m, "sessiongate_sessions_started_total", map[string]float64{
		`sessiongate_sessions_started_total{policy="crm"}`: 4, `sessiongate_sessions_started_total{policy="app"}`: 2,
		`sessiongate_sessions_started_total{policy="shadow"}`: 0,
	})
	wantFamily(t, m, "sessiongate_sessions_ended_total", map[string]float64{
		`sessiongate_sessions_ended_total{cause="identity_mismatch",policy="crm"}`: 1,
		`sessiongate_sessions_ended_total{cause="signed_out",policy="crm"}`:        2,
		`sessiongate_sessions_ended_total{cause="idle",policy="app"}`:              1,
	})
	wantFamily(t, m, "sessiongate_sessions_reauthenticated_total", map[string]float64{
		`sessiongate_sessions_reauthenticated_total{policy="crm"}`: 1, `sessiongate_sessions_reauthenticated_total{policy="app"}`: 0,
		`sessiongate_sessions_reauthenticated_total{policy="shadow"}`: 0,
	})
	// Honest: only erin's session could continue. frank's idled out with no
	// request to notice, yet it is not counted.
	wantFamily(t, m, "sessiongate_sessions_active", map[string]float64{
		`sessiongate_sessions_active{policy="crm"}`: 1, `sessiongate_sessions_active{policy="app"}`: 0,
		`sessiongate_sessions_active{policy="shadow"}`: 0,
	})
	wantFamily(t, m, "sessiongate_store_operations_total", map[string]float64{
		`sessiongate_store_operations_total{op="load"}`: 18, `sessiongate_store_operations_total{op="begin"}`: 6,
		`sessiongate_store_operations_total{op="touch"}`: 1, `sessiongate_store_operations_total{op="end"}`: 5,
	})
	wantFamily(t, m, "sessiongate_store_errors_total", map[string]float64{
		`sessiongate_store_errors_total{op="load"}`: 0, `sessiongate_store_errors_total{op="begin"}`: 0,
		`sessiongate_store_errors_total{op="touch"}`: 0, `sessiongate_store_errors_total{op="end"}`: 0,
	})
	wantFamily(t, m, "sessiongate_token_cache_hits_total", map[string]float64{"sessiongate_token_cache_hits_total": 8})
	wantFamily(t, m, "sessiongate_token_cache_misses_total", map[string]float64{"sessiongate_token_cache_misses_total": 8})
	wantFamily(t, m, "sessiongate_store_up", map[string]float64{"sessiongate_store_up": 1})
	wantFamily(t, m, "sessiongate_audit_write_errors_total", map[string]float64{"sessiongate_audit_write_errors_total": 0})
	if got := m[`sessiongate_jwks_refreshes_total{result="failure"}`]; got != 0 {
		t.Errorf("jwks_refreshes_total{result=failure} = %v, want 0", got)
	}
	if got := m[`sessiongate_jwks_refreshes_total{result="success"}`]; got < 1 {
		t.Errorf("jwks_refreshes_total{result=success} = %v, want at least the load at start", got)
	}
	wantFamily(t, m, "sessiongate_policy_reloads_total", map[string]float64{
		`sessiongate_policy_reloads_total{result="success"}`: 1, `sessiongate_policy_reloads_total{result="failure"}`: 0,
	})
	wantFamily(t, m, "sessiongate_policy_last_reload_successful", map[string]float64{"sessiongate_policy_last_reload_successful": 1})
	if ts := m["sessiongate_policy_last_reload_success_timestamp_seconds"]; ts < float64(start.Unix()) || ts > float64(time.Now().Unix()+1) {
		t.Errorf("policy_last_reload_success_timestamp_seconds = %v, want the start of the test", ts)
	}
	// Labels are policy names and codes: never a host, path or user.
	text := s.metrics(t)
	for _, leak := range []string{"crm.test", "nowhere.test", "/logout", "alice", "dave", "10.0.0.7"} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics contains %q", leak)
		}
	}
	// The dry-run denials are logged at debug with their reason.
	if !s.waitLog(`"msg":"dry-run: would deny; allowed","policy":"shadow","reason":"invalid_token"`) {
		t.Errorf("no debug log line for the dry-run denial")
	}

	// The audit trail: exactly these events, in order.
	ev := func(event, sub, sess, cause, req string) map[string]any {
		e := map[string]any{"level": "INFO", "msg": "audit", "event": event, "policy": "crm", "subject": auditHash(sub),
			"session": auditHash(sess), "source": "10.0.0.7", "request_id": req}
		if cause != "" {
			e["cause"] = cause
		}
		if event == "session_started" {
			e["method"] = "token" // how the session was signed in: token or oidc
		}
		return e
	}
	mismatch := ev("session_ended", "alice", sessA, "identity_mismatch", "m1")
	mismatch["level"], mismatch["presented_subject"] = "WARN", auditHash("bob")
	carolStart, frankStart, carolEnd := ev("session_started", "carol", sessC, "", "c1"), ev("session_started", "frank", sessF, "", "f1"), ev("session_ended", "carol", sessC, "idle", "c2")
	for _, e := range []map[string]any{carolStart, frankStart, carolEnd} {
		e["policy"] = "app"
	}
	want := []map[string]any{
		ev("session_started", "alice", sessA, "", "a1"),
		ev("session_started", "bob", sessB, "", "b1"),
		mismatch,
		ev("session_ended", "bob", sessB, "signed_out", "b2"),
		ev("session_started", "dave", sessD, "", "d1"),
		ev("session_ended", "dave", sessD, "signed_out", "d2"), // ended through its scope, named
		ev("session_started", "erin", sessE, "", "e1"),
		ev("session_reauthenticated", "erin", sessE, "", "e2"),
		carolStart, frankStart, carolEnd,
	}
	var got []map[string]any
	var scopes []string
	waitFor(3*time.Second, func() bool { got, scopes = readAudit(t, auditPath, start); return len(got) >= len(want) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("audit events:\n got %v\nwant %v", got, want)
	}
	if len(scopes) == len(want) {
		// Sessions of one sign-in share a scope; different users never do.
		if scopes[0] != scopes[2] || scopes[6] != scopes[7] || scopes[0] == scopes[1] || scopes[4] == scopes[6] {
			t.Errorf("audit scopes %v: want alice's events alike, erin's alike, and users apart", scopes)
		}
	}
	if s.stdout.String() != "" {
		t.Errorf("audit events on stdout with --audit-log FILE: %q", s.stdout.String())
	}

	// A native histogram is exposed to a scrape in the protobuf format.
	h := scrapeHistogram(t, s, "sessiongate_check_duration_seconds")
	if h.GetSampleCount() != 19 || h.GetSchema() != 3 || len(h.GetPositiveSpan()) == 0 || len(h.GetBucket()) == 0 {
		t.Errorf("protobuf scrape: count %d, schema %d, %d spans, %d classic buckets; want 19 with native (schema 3) and classic buckets",
			h.GetSampleCount(), h.GetSchema(), len(h.GetPositiveSpan()), len(h.GetBucket()))
	}

	// A broken policy edit is refused and counted; the last good policy stays
	// in force; the fix is counted as a success.
	file := filepath.Join(s.dir, "crm.yaml")
	replaceFile(t, file, strings.Replace(crm, "idle_timeout: 30m0s", "idle_timeout: 2h", 1))
	waitMetric(t, s, `sessiongate_policy_reloads_total{result="failure"}`, 1)
	if v := scrape(t, s)["sessiongate_policy_last_reload_successful"]; v != 0 {
		t.Errorf("policy_last_reload_successful = %v after a broken edit, want 0", v)
	}
	wantAllowed(t, erin.Check("crm.test", "/", erinTok2, true))
	replaceFile(t, file, crm)
	waitMetric(t, s, `sessiongate_policy_reloads_total{result="success"}`, 2)
	waitMetric(t, s, "sessiongate_policy_last_reload_successful", 1)

	// logrotate: move the file away, SIGHUP; later events go to a new file.
	if err := os.Rename(auditPath, auditPath+".1"); err != nil {
		t.Fatal(err)
	}
	s.signal(t, syscall.SIGHUP)
	waitMetric(t, s, `sessiongate_policy_reloads_total{result="success"}`, 3)
	// The file is reopened right after the reload.
	if !waitFor(3*time.Second, func() bool { _, err := os.Stat(auditPath); return err == nil }) {
		t.Fatal("SIGHUP did not create a new audit log file")
	}
	r = s.client(t).Check("crm.test", "/", s.token(t, "grace"), false, rid("g1"))
	wantAllowed(t, r)
	sessG := wantNewSessionCookie(t, r, time.Hour)
	if got, _ := readAudit(t, auditPath, start); !reflect.DeepEqual(got, []map[string]any{ev("session_started", "grace", sessG, "", "g1")}) {
		t.Errorf("audit file after rotation: %v, want grace's session_started alone", got)
	}
	if old, _ := readAudit(t, auditPath+".1", start); len(old) != len(want) {
		t.Errorf("rotated audit file has %d events, want %d", len(old), len(want))
	}
	// A count of active sessions is reused until ten times its scan time
	// has passed (docs/operations.md), and waitMetric above has just
	// scraped: grace's session is counted by the next scan.
	waitMetric(t, s, `sessiongate_sessions_active{policy="crm"}`, 2)
	m = scrape(t, s)
	if m[`sessiongate_policy_reloads_total{result="failure"}`] != 1 || m[`sessiongate_sessions_active{policy="crm"}`] != 2 {
		t.Errorf("after the reloads: failures %v, crm sessions active %v; want 1 and 2",
			m[`sessiongate_policy_reloads_total{result="failure"}`], m[`sessiongate_sessions_active{policy="crm"}`])
	}

	// No token or cookie value in the audit files (stdout, stderr and
	// /metrics are scanned by the harness at cleanup).
	var audit strings.Builder
	for _, p := range []string{auditPath, auditPath + ".1"} {
		b, _ := os.ReadFile(p)
		audit.Write(b)
	}
	s.mu.Lock()
	leaks := findSecrets(s.secrets, map[string]string{"the audit log": audit.String()})
	s.mu.Unlock()
	for _, l := range leaks {
		t.Error(l)
	}
}

// scrapeHistogram fetches /metrics in the delimited protobuf format, the one
// that carries native histograms, and returns the named histogram.
func scrapeHistogram(t *testing.T, s *server, name string) *dto.Histogram {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/metrics", nil)
	req.Header.Set("Accept", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.google.protobuf") {
		t.Fatalf("protobuf scrape: Content-Type %q", ct)
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			t.Fatalf("protobuf scrape: %s not found (%v)", name, err)
		}
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
}

// TestAuditToStdoutWithPlainSubjects: by default audit events go to stdout
// with the subject in clear; a sign-out with the token alone (an API client)
// names the session it ends.
func TestAuditToStdoutWithPlainSubjects(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()})
	api := s.apiClient(t)
	tok := s.token(t, "alice")
	r := api.Check("app.test", "/", tok, false, "x-request-id: r1")
	wantAllowed(t, r)
	sess := wantNewSessionCookie(t, r, time.Hour)
	if r := api.Check("app.test", "/logout", tok, false, "x-request-id: r2"); r.Allowed || r.Reason != "signed_out" {
		t.Fatalf("logout: %v", r)
	}
	evs := s.waitEvents(t, 2, map[string]string{"policy": "app", "subject": "alice", "session": auditHash(sess)})
	if len(evs) != 2 || evs[0]["event"] != "session_started" || evs[0]["request_id"] != "r1" ||
		evs[1]["event"] != "session_ended" || evs[1]["cause"] != "signed_out" || evs[1]["request_id"] != "r2" {
		t.Errorf("audit events on stdout: %v", evs)
	}
	if n := len(s.auditEvents(t)); n != 2 {
		t.Errorf("%d audit events on stdout, want 2:\n%s", n, s.stdout.String())
	}
	m := scrape(t, s)
	if m[`sessiongate_sessions_ended_total{cause="signed_out",policy="app"}`] != 1 || m[`sessiongate_sessions_active{policy="app"}`] != 0 {
		t.Errorf("after a token-only sign-out: ended{signed_out} %v, active %v; want 1 and 0",
			m[`sessiongate_sessions_ended_total{cause="signed_out",policy="app"}`], m[`sessiongate_sessions_active{policy="app"}`])
	}
}

// TestHealthEndpoints: /healthz says the process is alive, /readyz that it
// can decide, and both gRPC health services SERVING; from SIGTERM on, gRPC
// health is NOT_SERVING and /readyz 503 while in-flight streams drain, and
// /healthz still answers.
func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	s := startServer(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()})
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		if code, body, err := s.httpGet(path); err != nil || code != 200 || body != want {
			t.Errorf("GET %s: %d %q %v, want 200 %q", path, code, body, err, want)
		}
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		if st, err := s.healthStatus(svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc health %q: %v %v, want SERVING", svc, st, err)
		}
	}
	if v := scrape(t, s)["sessiongate_store_up"]; v != 1 {
		t.Errorf("store_up = %v, want 1", v)
	}

	// An open health watch keeps the graceful stop waiting: the window in
	// which a load balancer must see the instance as not ready.
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v, want SERVING", m.GetStatus(), err)
	}
	s.signal(t, syscall.SIGTERM)
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health watch after SIGTERM: %v %v, want NOT_SERVING", m.GetStatus(), err)
	}
	if code, body, err := s.httpGet("/readyz"); err != nil || code != 503 || body != "not ready: shutting down\n" {
		t.Errorf("GET /readyz while shutting down: %d %q %v, want 503 %q", code, body, err, "not ready: shutting down\n")
	}
	if code, _, err := s.httpGet("/healthz"); err != nil || code != 200 {
		t.Errorf("GET /healthz while shutting down: %d %v, want 200", code, err)
	}
	cancel()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5s after SIGTERM and the end of the watch")
	}
}

// promqlMetric finds metric names in PromQL.
var promqlMetric = regexp.MustCompile(`sessiongate_[a-z_]+`)

// deployFile reads a file of deploy/ from the module root.
func deployFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mustModuleRoot(t), "deploy", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dashboardQueries returns every PromQL string of the Grafana dashboard:
// panel targets, template variable queries and annotations.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	var d any
	if err := json.Unmarshal(deployFile(t, "grafana/sessiongate-dashboard.json"), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	return out
}

type alertRules struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert, Expr string
		}
	}
}

// TestDashboardAndAlertsMatchTheBinary: every sessiongate_ metric that the
// Grafana dashboard and the Prometheus alert rules query is exported by the
// running binary (histogram series by their _bucket, _sum and _count), and
// with promtool installed the rules and the dashboard's queries parse and
// the rules' unit tests pass.
func TestDashboardAndAlertsMatchTheBinary(t *testing.T) {
	t.Parallel()
	// With a state file, whose metric only such a server exports, and a
	// sign-in policy (its provider need not answer), whose metrics only
	// such a policy has.
	sso := "hosts: [sso.test]\nsession:\n  absolute_timeout: 1h\n  idle_timeout: 10m\n" +
		"login:\n  oidc:\n    issuer: http://" + freeAddr(t) + "\n    client_id: sso\n"
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml(), "sso": sso},
		serverOpts{extraArgs: []string{"--state-file", filepath.Join(t.TempDir(), "state")}})
	exported := map[string]bool{}
	for _, line := range strings.Split(s.metrics(t), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			exported[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}

	var rules alertRules
	if err := yaml.Unmarshal(deployFile(t, "prometheus/sessiongate-alerts.yaml"), &rules); err != nil {
		t.Fatalf("alert rules YAML: %v", err)
	}
	var alertExprs []string
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alertExprs = append(alertExprs, r.Expr)
			alerts[r.Alert] = true
		}
	}
	// The alerts the operations guide promises.
	for _, a := range []string{"SessiongateInstanceDown", "SessiongateStoreDown", "SessiongateStoreErrors", "SessiongatePolicyReloadFailing",
		"SessiongateJWKSRefreshFailing", "SessiongateDenySpike", "SessiongateIdentityMismatch", "SessiongateCheckLatencyHigh", "SessiongateAuditWriteErrors", "SessiongateStateFileUnwritable", "SessiongateRedisLostData", "SessiongateNoTokenKeys",
		"SessiongateIdentityProviderDown", "SessiongateReauthNotPerformed"} {
		if !alerts[a] {
			t.Errorf("alert %s missing from sessiongate-alerts.yaml", a)
		}
	}
	dash := dashboardQueries(t)
	if len(dash) < 20 || len(alertExprs) < 9 {
		t.Fatalf("found %d dashboard queries and %d alert expressions: the files were not read as expected", len(dash), len(alertExprs))
	}
	used := map[string][]string{}
	for where, exprs := range map[string][]string{"dashboard": dash, "alerts": alertExprs} {
		for _, e := range exprs {
			for _, name := range promqlMetric.FindAllString(e, -1) {
				used[name] = append(used[name], where)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(used)) {
		if !exported[name] && !exported[name+"_count"] {
			t.Errorf("%s (used by the %s) is not exported by sessiongate", name, strings.Join(slices.Compact(used[name]), " and "))
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SESSIONGATE_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("promtool not installed (Debian package prometheus) and SESSIONGATE_REQUIRE_EXTERNAL=1")
		}
		t.Skip("promtool not installed (apt-get install prometheus): rules and queries not checked by promtool")
	}
	dir := filepath.Join(mustModuleRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "sessiongate-alerts.yaml"}, {"test", "rules", "sessiongate-alerts.test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The dashboard's queries parse as PromQL once Grafana's variables are
	// replaced: checked as recording rules.
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$job", ".*", "$instance", ".*", "$policy", ".*")
	var rec strings.Builder
	rec.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dash {
		if strings.HasPrefix(q, "label_values(") { // a Grafana function, not PromQL
			q = strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
			q = q[:strings.LastIndex(q, ",")]
		}
		fmt.Fprintf(&rec, "      - record: dashboard_query_%d\n        expr: %q\n", i, grafanaVars.Replace(q))
	}
	recFile := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	writeFile(t, recFile, rec.String())
	if out, err := exec.Command(promtool, "check", "rules", recFile).CombinedOutput(); err != nil {
		t.Errorf("dashboard queries do not parse: %v\n%s", err, out)
	}
}

func mustModuleRoot(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
