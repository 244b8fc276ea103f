package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestHarness runs every scenario once with small counts against the real
// binaries and the embedded store: the harness must build and start both
// servers, and sessiongate must give each scenario's expected answer to
// every request (a wrong one fails the run), the access token of the
// sign-in session it loaded from the state file included. It measures
// nothing worth reading.
func TestHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts sessiongate and floor")
	}
	var out, errs bytes.Buffer
	args := []string{"-scenario", "all", "-pairs", "2", "-requests", "300", "-new-requests", "40",
		"-users", "30", "-warmup", "20", "-streams", "8", "-run-timeout", "30s"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code := run(ctx, args, &out, &errs); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	for _, name := range []string{"live-session", "api-client", "new-session", "deny-302", "mix", "oidc-session"} {
		if !strings.Contains(out.String(), "=> "+name+": sessiongate/floor throughput") {
			t.Errorf("no summary for %s:\n%s", name, out.String())
		}
	}
}

// TestHarnessRedis runs the allowed scenarios with sessiongate on a Redis
// the harness starts, which reports what reached Redis per request, the
// live sign-in session of a login.oidc policy included.
func TestHarnessRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts sessiongate, floor and redis-server")
	}
	redistest.Require(t)
	var out, errs bytes.Buffer
	args := []string{"-store", "redis", "-scenario", "live,api,oidc", "-pairs", "1", "-requests", "300",
		"-warmup", "20", "-streams", "8", "-run-timeout", "30s"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code := run(ctx, args, &out, &errs); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	if n := strings.Count(out.String(), "Redis (INFO commandstats, measured runs): "); n != 3 {
		t.Errorf("%d Redis summaries, want 3:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "=> oidc-session: sessiongate/floor throughput") {
		t.Errorf("no summary for oidc-session:\n%s", out.String())
	}
}

// TestFloorAnswers starts the floor with -floor-answers beside sessiongate
// and sends the oidc and live scenarios' requests to both: the floor's
// answer must be sessiongate's in shape (as many headers of each list) and
// in size, to within the few bytes of values it cannot know.
func TestFloorAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts sessiongate and floor")
	}
	cfg, err := parse([]string{"-floor-answers", "-scenario", "oidc", "-streams", "1", "-warmup", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := startServers(cfg, t.TempDir(), t.Logf)
	defer r.close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"oidc", "live"} {
		sc, err := r.st.build(name)
		if err != nil {
			t.Fatal(err)
		}
		req := sc.req(0, 0)
		want, err := r.st.sg.api.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.want(want); err != nil {
			t.Fatalf("%s: sessiongate: %v", name, err)
		}
		got, err := r.floor.api.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		w, g := want.GetOkResponse(), got.GetOkResponse()
		if len(g.GetHeaders()) != len(w.GetHeaders()) || len(g.GetHeadersToRemove()) != len(w.GetHeadersToRemove()) ||
			len(g.GetResponseHeadersToAdd()) != len(w.GetResponseHeadersToAdd()) {
			t.Errorf("%s: the floor's answer is not shaped like sessiongate's:\nfloor:       %v\nsessiongate: %v", name, got, want)
		}
		gs, ws := proto.Size(got), proto.Size(want)
		t.Logf("%s: floor %d bytes, sessiongate %d; %d headers, %d removed", name, gs, ws, len(w.GetHeaders()), len(w.GetHeadersToRemove()))
		if gs < ws-4 || gs > ws+4 {
			t.Errorf("%s: the floor's answer is %d bytes, sessiongate's %d", name, gs, ws)
		}
	}
	var out bytes.Buffer
	header(&out, cfg)
	if !strings.Contains(out.String(), "floor: answers like sessiongate (-floor-answers)") {
		t.Errorf("the header does not say which floor:\n%s", out.String())
	}
}

func TestParse(t *testing.T) {
	var errs bytes.Buffer
	c, err := parse([]string{"-scenario", "live, mix", "-pairs", "3"}, &errs)
	if err != nil || strings.Join(c.scenarios, ",") != "live,mix" || c.pairs != 3 || c.streams != 50 {
		t.Errorf("parse: %+v, %v", c, err)
	}
	for _, args := range [][]string{{"-scenario", "all"}, {"-scenario", "all", "-store", "redis"}} {
		if c, err := parse(args, &errs); err != nil || strings.Join(c.scenarios, ",") != "live,api,new,deny,mix,oidc" {
			t.Errorf("parse(%q): %v %v", args, c.scenarios, err)
		}
	}
	for _, bad := range [][]string{{"-pairs", "0"}, {"-scenario", ""}, {"-scenario", "live,bogus"}, {"extra"}, {"-run-timeout", "0s"}} {
		if _, err := parse(bad, &errs); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestStats(t *testing.T) {
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(lat, 0.5); p != 5 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(lat, 0.99); p != 10 {
		t.Errorf("p99 = %v", p)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestProcCPU(t *testing.T) {
	start, err := procCPU("self")
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the counter moves (it counts 10ms ticks); on a busy
	// machine that takes longer, so only a counter that never moves fails.
	deadline := time.Now().Add(10 * time.Second)
	for now := start; now <= start; {
		if time.Now().After(deadline) {
			t.Fatalf("CPU ticks still %d after 10s of spinning", now)
		}
		for x := 0; x < 1e6; x++ {
			_ = x * x
		}
		if now, err = procCPU("self"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := machineBusy(); err != nil {
		t.Error(err)
	}
}
