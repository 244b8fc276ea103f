package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// samples flattens a gather (testutil.Samples).
func samples(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return testutil.Samples(mfs)
}

// wantSamples compares every sample of the sessiongate_ metrics exactly.
func wantSamples(t *testing.T, g prometheus.Gatherer, want map[string]float64) {
	t.Helper()
	got := samples(t, g)
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok {
			t.Errorf("unexpected sample %s = %v", k, got[k])
		} else if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := got[k]; !ok {
			t.Errorf("missing sample %s (want %v)", k, want[k])
		}
	}
}

func TestEventsAreCountedExactly(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Policies([]string{"app"})

	ev := authz.SessionEvent{Policy: "app", Subject: "alice", SessionID: "secret-session-id"}
	m.Decided(&authz.Decision{Allow: true, Policy: "app"}, 20*time.Microsecond)
	m.Decided(&authz.Decision{Allow: true, Policy: "app"}, 30*time.Microsecond)
	m.Decided(&authz.Decision{Policy: "app", Reason: authz.ReasonIdleTimeout}, time.Millisecond)
	m.Decided(&authz.Decision{Allow: true, DryRun: true, Policy: "app", Reason: authz.ReasonNoToken}, 0)
	m.Decided(&authz.Decision{Reason: authz.ReasonUnknownHost}, 0)
	m.SessionStarted(ev)
	m.SessionStarted(ev)
	m.SessionReauthenticated(ev)
	ev.Cause = authz.CauseIdle
	m.SessionEnded(ev)
	m.CacheHit()
	m.CacheHit()
	m.CacheMiss()
	m.KeysRefreshed("https://idp.example/jwks?secret=1", true)
	m.KeysRefreshed("/keys/jwks.json", false)
	m.StoreUp(true)
	m.AuditWriteFailed()
	m.PolicyReloaded(true, time.UnixMilli(1_700_000_000_500))
	m.PolicyReloaded(false, time.UnixMilli(1_700_000_999_000))
	m.SignInPolicies([]string{"app"})
	m.SignInFinished("app", "success", 200*time.Millisecond)
	m.SignInFinished("app", "sign_in_denied", 50*time.Millisecond)
	m.Refreshed("app", "revoked")
	m.Discovered("https://idp.example/secret", false)
	m.TokenRequested("authorization_code", 30*time.Millisecond, true)
	m.TokenRequested("refresh_token", 10*time.Millisecond, false)
	m.BackChannelLogout("ok")
	m.BackChannelLogout("replayed")
	m.AdminRequest("end", "unauthorized")

	want := map[string]float64{
		`sessiongate_sign_ins_total{policy="app",result="success"}`:                                          1,
		`sessiongate_sign_ins_total{policy="app",result="sign_in_denied"}`:                                   1,
		`sessiongate_sign_ins_total{policy="app",result="sign_in_failed"}`:                                   0,
		`sessiongate_sign_ins_total{policy="app",result="reauth_not_performed"}`:                             0,
		`sessiongate_sign_ins_total{policy="app",result="provider_unavailable"}`:                             0,
		`sessiongate_sign_ins_total{policy="app",result="store_unavailable"}`:                                0,
		`sessiongate_sign_in_callback_duration_seconds_count`:                                                2,
		`sessiongate_sign_in_callback_duration_seconds_sum`:                                                  0.25,
		`sessiongate_token_refreshes_total{policy="app",result="success"}`:                                   0,
		`sessiongate_token_refreshes_total{policy="app",result="revoked"}`:                                   1,
		`sessiongate_token_refreshes_total{policy="app",result="failure"}`:                                   0,
		`sessiongate_oidc_token_request_duration_seconds{grant="authorization_code",result="success"}_count`: 1,
		`sessiongate_oidc_token_request_duration_seconds{grant="authorization_code",result="success"}_sum`:   0.03,
		`sessiongate_oidc_token_request_duration_seconds{grant="refresh_token",result="failure"}_count`:      1,
		`sessiongate_oidc_token_request_duration_seconds{grant="refresh_token",result="failure"}_sum`:        0.01,
		`sessiongate_oidc_discoveries_total{result="success"}`:                                               0,
		`sessiongate_oidc_discoveries_total{result="failure"}`:                                               1,

		`sessiongate_checks_total{decision="allow",policy="app",reason=""}`:                2,
		`sessiongate_checks_total{decision="deny",policy="app",reason="idle_timeout"}`:     1,
		`sessiongate_checks_total{decision="dry_run_deny",policy="app",reason="no_token"}`: 1,
		`sessiongate_checks_total{decision="deny",policy="",reason="unknown_host"}`:        1,
		`sessiongate_check_duration_seconds_count`:                                         5,
		`sessiongate_check_duration_seconds_sum`:                                           0.00105,
		`sessiongate_sessions_started_total{policy="app"}`:                                 2,
		`sessiongate_sessions_reauthenticated_total{policy="app"}`:                         1,
		`sessiongate_sessions_ended_total{cause="idle",policy="app"}`:                      1,
		`sessiongate_sessions_ended_total{cause="absolute",policy="app"}`:                  0,
		`sessiongate_sessions_ended_total{cause="signed_out",policy="app"}`:                0,
		`sessiongate_sessions_ended_total{cause="identity_mismatch",policy="app"}`:         0,
		`sessiongate_sessions_ended_total{cause="idp_logout",policy="app"}`:                0,
		`sessiongate_sessions_ended_total{cause="idp_revoked",policy="app"}`:               0,
		`sessiongate_sessions_ended_total{cause="admin",policy="app"}`:                     0,
		`sessiongate_token_cache_hits_total`:                                               2,
		`sessiongate_token_cache_misses_total`:                                             1,
		`sessiongate_jwks_refreshes_total{result="success"}`:                               1,
		`sessiongate_jwks_refreshes_total{result="failure"}`:                               1,
		`sessiongate_store_up`:                                     1,
		`sessiongate_audit_write_errors_total`:                     1,
		`sessiongate_policy_reloads_total{result="success"}`:       1,
		`sessiongate_policy_reloads_total{result="failure"}`:       1,
		`sessiongate_policy_last_reload_successful`:                0,
		`sessiongate_policy_last_reload_success_timestamp_seconds`: 1_700_000_000.5,
	}
	// Back-channel and admin results are pre-created at zero.
	for _, r := range BackChannelResults() {
		want[fmt.Sprintf(`sessiongate_backchannel_logouts_total{result=%q}`, r)] = 0
	}
	for _, op := range AdminOperations() {
		for _, r := range AdminResults() {
			want[fmt.Sprintf(`sessiongate_admin_requests_total{operation=%q,result=%q}`, op, r)] = 0
		}
	}
	want[`sessiongate_backchannel_logouts_total{result="ok"}`] = 1
	want[`sessiongate_backchannel_logouts_total{result="replayed"}`] = 1
	want[`sessiongate_admin_requests_total{operation="end",result="unauthorized"}`] = 1
	// Denials of every reason are pre-created at zero for loaded policies.
	for _, r := range authz.Reasons() {
		if k := fmt.Sprintf(`sessiongate_checks_total{decision="deny",policy="app",reason=%q}`, r); r != authz.ReasonUnknownHost && want[k] == 0 {
			want[k] = 0
		}
	}
	wantSamples(t, reg, want)
	// No label value carries a subject, session id or JWKS source.
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "alice") || strings.Contains(v, "secret") || strings.Contains(v, "/") {
					t.Errorf("%s has label %s=%q", mf.GetName(), l.GetName(), v)
				}
			}
		}
	}
}

// TestNativeHistogramInProtobuf: a scrape in the protobuf format carries the
// check latency as a native histogram (schema and spans) besides its classic
// sub-millisecond buckets; the text format carries the classic ones.
func TestNativeHistogramInProtobuf(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for _, d := range []time.Duration{3 * time.Microsecond, 40 * time.Microsecond, 40 * time.Microsecond, 2 * time.Millisecond} {
		m.Decided(&authz.Decision{Allow: true, Policy: "app"}, d)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.google.protobuf") {
		t.Fatalf("Content-Type %q, want protobuf", ct)
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeProtoDelim))
	var h *dto.Histogram
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		if mf.GetName() == "sessiongate_check_duration_seconds" {
			h = mf.GetMetric()[0].GetHistogram()
		}
	}
	if h == nil {
		t.Fatal("sessiongate_check_duration_seconds not in the protobuf scrape")
	}
	checkNativeHistogram(t, h, 4)
}

// checkNativeHistogram asserts a histogram of n observations, all below 5ms,
// with both native and classic buckets.
func checkNativeHistogram(t *testing.T, h *dto.Histogram, n uint64) {
	t.Helper()
	if h.GetSampleCount() != n {
		t.Errorf("sample count %d, want %d", h.GetSampleCount(), n)
	}
	// Factor 1.1 is schema 3 (2^(2^-3) ≈ 1.09).
	if h.Schema == nil || h.GetSchema() != 3 {
		t.Errorf("native schema %v, want 3", h.Schema)
	}
	var native uint64
	var c int64
	for _, d := range h.GetPositiveDelta() {
		c += d
		native += uint64(c)
	}
	if len(h.GetPositiveSpan()) == 0 || native+h.GetZeroCount() != n {
		t.Errorf("native buckets: spans %v deltas %v zero %d; want %d observations", h.GetPositiveSpan(), h.GetPositiveDelta(), h.GetZeroCount(), n)
	}
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		if b.GetUpperBound() == 5e-3 && b.GetCumulativeCount() != n {
			t.Errorf("classic bucket le=0.005 holds %d, want %d", b.GetCumulativeCount(), n)
		}
	}
	if len(bounds) == 0 || bounds[0] > 1e-5 || !slices.Contains(bounds, 1e-4) || !slices.Contains(bounds, 1e-3) {
		t.Errorf("classic buckets %v: want sub-millisecond resolution from 10µs or less", bounds)
	}
}

// fakeLive is a LiveSessions over a slice; scan moves the clock, as a long
// scan would.
type fakeLive struct {
	sessions []authz.Session
	err      error
	scans    atomic.Int32
	clock    *stepClock
	scanCost time.Duration
}

func (f *fakeLive) EachLiveSession(fn func(*authz.Session)) error {
	f.scans.Add(1)
	if f.err != nil {
		return f.err
	}
	for i := range f.sessions {
		fn(&f.sessions[i])
	}
	if f.clock != nil {
		f.clock.add(f.scanCost)
	}
	return nil
}

type stepClock struct{ t atomic.Int64 }

func (c *stepClock) Now() time.Time      { return time.UnixMilli(c.t.Load()) }
func (c *stepClock) add(d time.Duration) { c.t.Add(d.Milliseconds()) }

func newStepClock(ms int64) *stepClock {
	c := &stepClock{}
	c.t.Store(ms)
	return c
}

func policies(ps ...*authz.Policy) func() []*authz.Policy {
	return func() []*authz.Policy { return ps }
}

func TestSessionsActive(t *testing.T) {
	const now = int64(1_700_000_000_000)
	minute := int64(time.Minute / time.Millisecond)
	app := &authz.Policy{Name: "app", IdleTimeout: 30 * time.Minute, AbsoluteTimeout: 8 * time.Hour}
	api := &authz.Policy{Name: "api", IdleTimeout: 5 * time.Minute, AbsoluteTimeout: time.Hour}
	quiet := &authz.Policy{Name: "quiet", IdleTimeout: time.Minute, AbsoluteTimeout: time.Hour}
	s := func(policy string, signInAgo, activityAgo int64) authz.Session {
		return authz.Session{Policy: policy, SignIn: now - signInAgo*minute, LastActivity: now - activityAgo*minute}
	}
	src := &fakeLive{sessions: []authz.Session{
		s("app", 60, 0),     // active
		s("app", 60, 30),    // exactly at the idle deadline: still allowed
		s("app", 60, 31),    // idled out, not yet discovered by a request
		s("app", 8*60+1, 1), // past the absolute lifetime
		s("api", 10, 4),     // active
		s("gone", 1, 0),     // a policy no longer loaded
		s("api", 2*60, 1),   // past api's absolute lifetime
		s("api", 3, 6),      // past api's idle timeout
		s("app", 480, 0),    // exactly at the absolute deadline
	}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSessionsActive(src, policies(app, api, quiet), newStepClock(now)))
	wantSamples(t, reg, map[string]float64{
		`sessiongate_sessions_active{policy="app"}`:   3,
		`sessiongate_sessions_active{policy="api"}`:   1,
		`sessiongate_sessions_active{policy="quiet"}`: 0,
	})
}

// TestSessionsActiveStoreFailure: a store that cannot be scanned leaves the
// gauge out; the rest of the scrape still works.
func TestSessionsActiveStoreFailure(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg).StoreUp(false)
	src := &fakeLive{err: errors.New("closed")}
	reg.MustRegister(NewSessionsActive(src, policies(&authz.Policy{Name: "app", IdleTimeout: time.Minute, AbsoluteTimeout: time.Hour}), newStepClock(0)))
	got := samples(t, reg)
	if _, ok := got[`sessiongate_sessions_active{policy="app"}`]; ok {
		t.Error("sessions_active reported although the store could not be scanned")
	}
	if v, ok := got["sessiongate_store_up"]; !ok || v != 0 {
		t.Errorf("store_up = %v (present %v), want 0", v, ok)
	}
}

// TestSessionsActiveBoundsScanCost: a count is reused until ten times the
// scan's duration has passed, so frequent scrapes of a large store do not
// spend more than a tenth of the time scanning.
func TestSessionsActiveBoundsScanCost(t *testing.T) {
	clock := newStepClock(1_700_000_000_000)
	app := &authz.Policy{Name: "app", IdleTimeout: time.Hour, AbsoluteTimeout: 2 * time.Hour}
	src := &fakeLive{clock: clock, scanCost: 100 * time.Millisecond,
		sessions: []authz.Session{{Policy: "app", SignIn: clock.t.Load(), LastActivity: clock.t.Load()}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSessionsActive(src, policies(app), clock))
	scrape := func(wantScans int32) {
		t.Helper()
		if got := samples(t, reg)[`sessiongate_sessions_active{policy="app"}`]; got != 1 {
			t.Errorf("sessions_active = %v, want 1", got)
		}
		if n := src.scans.Load(); n != wantScans {
			t.Errorf("after scrape: %d scans, want %d", n, wantScans)
		}
	}
	scrape(1)
	clock.add(800 * time.Millisecond) // 900ms after the scan began: reuse
	scrape(1)
	clock.add(100 * time.Millisecond) // 1s: scan again
	scrape(2)
}

// fakeStore fails every operation whose policy is "down".
type fakeStore struct{ fallback authz.Store }

func (f *fakeStore) err(policy string) error {
	if policy == "down" {
		return authz.ErrStoreUnavailable
	}
	return nil
}
func (f *fakeStore) Load(_ context.Context, p, _ string, _ authz.Digest) (authz.Lookup, error) {
	return authz.Lookup{}, f.err(p)
}
func (f *fakeStore) Begin(_ context.Context, s *authz.Session) error { return f.err(s.Policy) }
func (f *fakeStore) Touch(_ context.Context, p, _ string, _ authz.Touch) (authz.Session, bool, error) {
	return authz.Session{}, false, f.err(p)
}
func (f *fakeStore) End(_ context.Context, p, _ string, _ authz.Digest, _ authz.End) (authz.Session, bool, error) {
	return authz.Session{}, false, f.err(p)
}
func (f *fakeStore) Claim(context.Context, authz.Digest, int64) (bool, error) { return true, nil }
func (f *fakeStore) Ready(context.Context) error                              { return nil }

type fakeFallbackStore struct{ fakeStore }

func (f *fakeFallbackStore) Fallback() authz.Store  { return f.fallback }
func (f *fakeFallbackStore) Confirmed() authz.Store { return f }

func TestInstrumentStore(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	ctx := context.Background()
	s := InstrumentStore(&fakeStore{}, m)
	if _, ok := s.(authz.FallbackStore); ok {
		t.Error("a store without a fallback gained one")
	}
	s.Load(ctx, "app", "id", authz.Digest{})
	s.Load(ctx, "down", "id", authz.Digest{})
	s.Begin(ctx, &authz.Session{Policy: "app"})
	s.Touch(ctx, "down", "id", authz.Touch{})
	s.End(ctx, "app", "id", authz.Digest{}, authz.End{})
	s.End(ctx, "app", "id", authz.Digest{}, authz.End{})
	got := samples(t, reg)
	for k, want := range map[string]float64{
		`sessiongate_store_operations_total{op="load"}`:  2,
		`sessiongate_store_operations_total{op="begin"}`: 1,
		`sessiongate_store_operations_total{op="touch"}`: 1,
		`sessiongate_store_operations_total{op="end"}`:   2,
		`sessiongate_store_errors_total{op="load"}`:      1,
		`sessiongate_store_errors_total{op="begin"}`:     0,
		`sessiongate_store_errors_total{op="touch"}`:     1,
		`sessiongate_store_errors_total{op="end"}`:       0,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}

	near := &fakeStore{}
	fs, ok := InstrumentStore(&fakeFallbackStore{fakeStore{fallback: near}}, New(prometheus.NewRegistry())).(authz.FallbackStore)
	if !ok || fs.Fallback() != near {
		t.Errorf("instrumenting a store with a fallback hid it (FallbackStore %v)", ok)
	}
}
