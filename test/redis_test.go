package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// startReplicas starts two sessiongate processes on one shared store, with
// the same policies and the same identity provider, as a Deployment of two
// replicas would run.
func startReplicas(t *testing.T, storeA, storeB string, policies map[string]string) (a, b *server) {
	t.Helper()
	a = startServerOpts(t, policies, serverOpts{extraArgs: []string{"--store", storeA}})
	return a, startReplicaOf(t, a, storeB, policies)
}

// startReplicaOf starts another replica beside a, on store, trusting a's
// identity provider.
func startReplicaOf(t *testing.T, a *server, store string, policies map[string]string) *server {
	t.Helper()
	b := startServerOpts(t, policies, serverOpts{
		extraArgs: []string{"--store", store},
		setup: func(dir string) {
			if err := a.idp.WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
				t.Fatal(err)
			}
		},
	})
	b.idp = a.idp
	return b
}

// on returns a client of s that shares c's cookie jar: one browser whose
// requests the load balancer sends to either replica. Use them in turn,
// never at once.
func (c *client) on(s *server) *client {
	return &client{t: c.t, s: s, api: authv3.NewAuthorizationClient(s.conn), jar: c.jar, noCookies: c.noCookies}
}

func cookieOf(t *testing.T, r result) string {
	t.Helper()
	return "cookie: " + cookieName + "=" + wantNewSessionCookie(t, r, time.Hour)
}

// deniedWithin polls check until it is denied with reason, failing the test
// if that takes longer than d.
func deniedWithin(t *testing.T, d time.Duration, reason string, check func() result) {
	t.Helper()
	start := time.Now()
	for {
		r := check()
		if !r.Allowed {
			if r.Reason != reason {
				t.Fatalf("want %s, got %v", reason, r)
			}
			t.Logf("%s after %v", reason, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > d {
			t.Fatalf("still allowed %v after the change on the other replica: %v", d, r)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// replicaScenarios: activity on A keeps the session alive on B; a sign-out
// on A is refused on B within 100 ms; an identity mismatch on B ends the
// session on A.
func replicaScenarios(t *testing.T, storeA, storeB string) {
	const idle = 4 * time.Second
	policies := map[string]string{"app": pol{Hosts: []string{"app.test"}, Absolute: time.Hour, Idle: idle, LogoutPath: "/logout"}.yaml()}
	a, b := startReplicas(t, storeA, storeB, policies)
	ca := a.client(t)
	cb := ca.on(b)

	tok := a.token(t, "alice")
	r := ca.Check("app.test", "/", tok, false)
	wantAllowed(t, r)
	cookie := cookieOf(t, r)
	r = cb.Check("app.test", "/", tok, false)
	wantAllowed(t, r)
	wantNoSetCookie(t, r) // the same session, found in Redis

	// Activity on A only, for longer than the idle timeout; B last saw the
	// session at the start, but confirms with Redis before it would deny.
	until := time.Now().Add(idle + 1500*time.Millisecond)
	for time.Now().Before(until) {
		wantAllowed(t, ca.Check("app.test", "/work", tok, false))
		time.Sleep(400 * time.Millisecond)
	}
	r = cb.Check("app.test", "/", tok, false)
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
	if got, min := unixHeader(t, r, idleHeader), time.Now().Add(idle-2*time.Second).Unix(); got < min {
		t.Errorf("B's idle deadline %d ignores A's activity (want >= %d)", got, min)
	}

	// Sign-out on A, refused on B within 100 ms, with and without the cookie.
	wantAllowed(t, cb.Check("app.test", "/", tok, false))
	r = ca.Check("app.test", "/logout", tok, true)
	wantDenied(t, r, 302, "signed_out")
	deniedWithin(t, 100*time.Millisecond, "reauth_required", func() result { return cb.Check("app.test", "/", tok, false, cookie) })
	wantAPIDenied(t, cb.Check("app.test", "/", tok, false), "reauth_required", true)

	// A new sign-in; then B sees it presented with another user's token.
	nextSecond()
	tok2 := a.token(t, "alice")
	r = ca.Check("app.test", "/", tok2, false)
	wantAllowed(t, r)
	cookie2 := cookieOf(t, r)
	wantAllowed(t, cb.Check("app.test", "/", tok2, false, cookie2))
	wantAllowed(t, ca.Check("app.test", "/", tok2, false, cookie2))
	r = cb.Check("app.test", "/", a.token(t, "mallory"), false, cookie2)
	wantAPIDenied(t, r, "identity_mismatch", true)
	deniedWithin(t, 100*time.Millisecond, "reauth_required", func() result { return ca.Check("app.test", "/", tok2, false, cookie2) })
	wantAPIDenied(t, ca.Check("app.test", "/", tok2, false), "reauth_required", true)
	if evs := b.waitEvents(t, 1, map[string]string{"event": "session_ended", "cause": "identity_mismatch"}); len(evs) != 1 {
		t.Errorf("B's audit log: %d identity_mismatch ends, want 1", len(evs))
	}
}

// TestRedisReplicas: two replicas on one Redis.
func TestRedisReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	replicaScenarios(t, srv.URL(), srv.URL())
}

// TestRedisClusterReplicas: two replicas on a three-master Redis Cluster,
// each given a different seed node.
func TestRedisClusterReplicas(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	replicaScenarios(t, cl.URL(), "redis+cluster://"+cl.Nodes[2].Addr())
}

// TestRedisOutage: Redis stops mid-traffic and comes back. A policy with
// store_failure deny answers 503 store_unavailable meanwhile, one with
// continue decides on the near cache; neither ever revives a session that
// ended before or during the outage, on either replica; both recover
// without a restart.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	base := pol{Absolute: time.Hour, Idle: 10 * time.Minute, LogoutPath: "/logout"}
	strict, open := base, base
	strict.Hosts, open.Hosts = []string{"strict.test"}, []string{"open.test"}
	policies := map[string]string{
		"strict": strict.yaml(),
		"open":   strings.Replace(open.yaml(), "session:\n", "session:\n  store_failure: continue\n", 1),
	}
	url := srv.URL() + "?max_stale=250ms"
	a, b := startReplicas(t, url, url, policies)

	// One live and one signed-out session per policy, all seen by A.
	type sess struct{ tok, cookie string }
	begin := func(host, sub string) sess {
		tok := a.token(t, sub)
		r := a.apiClient(t).Check(host, "/", tok, false)
		wantAllowed(t, r)
		s := sess{tok, cookieOf(t, r)}
		wantAllowed(t, a.apiClient(t).Check(host, "/", tok, false, s.cookie))
		return s
	}
	strictLive, openLive, openOther := begin("strict.test", "sam"), begin("open.test", "olga"), begin("open.test", "otto")
	strictEnded, openEnded := begin("strict.test", "sue"), begin("open.test", "oona")
	for host, s := range map[string]sess{"strict.test": strictEnded, "open.test": openEnded} {
		wantDenied(t, a.apiClient(t).Check(host, "/logout", s.tok, true, s.cookie), 302, "signed_out")
	}

	// Traffic on the open policy's live session never stops.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < 2000; n++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r, err := a.apiClient(t).try("open.test", "/", openOther.tok, false, openOther.cookie)
			if err != nil || !r.Allowed {
				t.Errorf("open policy, live session, mid-outage: %v %v", r, err)
				return
			}
		}
	}()

	srv.Stop()
	for _, s := range []*server{a, b} {
		if !waitFor(5*time.Second, func() bool { return metricValue(s.metrics(t), "sessiongate_store_up", nil) == 0 }) {
			t.Fatal("sessiongate_store_up stays 1 during the outage")
		}
		// A policy with store_failure: continue can still be served, so the
		// replica stays in rotation: readiness must not take it out.
		if code, body, _ := s.httpGet("/readyz"); code != 200 {
			t.Errorf("/readyz during the outage with a fail-open policy: %d %s", code, body)
		}
	}
	c := a.apiClient(t)
	wantDenied(t, c.Check("strict.test", "/", strictLive.tok, false, strictLive.cookie), 503, "store_unavailable")
	wantAllowed(t, c.Check("open.test", "/", openLive.tok, false, openLive.cookie))
	for _, s := range []*server{a, b} { // B never saw openEnded: it heard the end
		c := s.apiClient(t)
		wantAPIDenied(t, c.Check("open.test", "/", openEnded.tok, false, openEnded.cookie), "reauth_required", true)
		wantAPIDenied(t, c.Check("open.test", "/", openEnded.tok, false), "reauth_required", true)
	}
	// An end decided during the outage sticks, here and, once Redis is
	// back, everywhere. (A sign-out is not one: the engine never fails open
	// on the logout path, it answers 503 until it can record the end.)
	wantDenied(t, c.Check("open.test", "/logout", openLive.tok, true, openLive.cookie), 503, "store_unavailable")
	wantAPIDenied(t, c.Check("open.test", "/", a.token(t, "mallory"), false, openLive.cookie), "identity_mismatch", true)
	wantAPIDenied(t, c.Check("open.test", "/", openLive.tok, false, openLive.cookie), "reauth_required", true)
	wantAPIDenied(t, c.Check("open.test", "/", openLive.tok, false), "reauth_required", true)

	srv.Restart()
	for _, s := range []*server{a, b} {
		if !waitFor(15*time.Second, func() bool { return metricValue(s.metrics(t), "sessiongate_store_up", nil) == 1 }) {
			t.Fatal("sessiongate_store_up stays 0 after Redis returned")
		}
		if err := s.waitReady(15 * time.Second); err != nil {
			t.Fatalf("not ready again after Redis returned: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	for _, s := range []*server{a, b} {
		c := s.apiClient(t)
		wantAllowed(t, c.Check("strict.test", "/", strictLive.tok, false, strictLive.cookie))
		for _, ended := range []sess{openLive, openEnded} {
			wantAPIDenied(t, c.Check("open.test", "/", ended.tok, false, ended.cookie), "reauth_required", true)
			wantAPIDenied(t, c.Check("open.test", "/", ended.tok, false), "reauth_required", true)
		}
		wantAPIDenied(t, c.Check("strict.test", "/", strictEnded.tok, false, strictEnded.cookie), "reauth_required", true)
	}
}

// TestRedisHung: Redis stops answering with its connections open (SIGSTOP,
// as a swapping or frozen host does). Every check is answered within a
// 0.5 s deadline, a quarter of the shipped Envoy configuration's 2 s — 503
// on a policy with store_failure deny, a near-cache decision on one with
// continue — never a timeout at Envoy; /readyz and store_up say Redis is
// not answering; all is well again once it answers.
func TestRedisHung(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	strict, open := pol{Hosts: []string{"strict.test"}}, pol{Hosts: []string{"open.test"}}
	a := startServerOpts(t, map[string]string{"strict": strict.yaml()}, serverOpts{extraArgs: []string{"--store", srv.URL()}})
	b := startServerOpts(t, map[string]string{"open": strings.Replace(open.yaml(), "session:\n", "session:\n  store_failure: continue\n", 1)},
		serverOpts{extraArgs: []string{"--store", srv.URL()}})
	ca, cb := a.apiClient(t), b.apiClient(t)
	ca.deadline, cb.deadline = 500*time.Millisecond, 500*time.Millisecond
	tokA, tokB := a.token(t, "sam"), b.token(t, "olga")
	wantAllowed(t, ca.Check("strict.test", "/", tokA, false))
	wantAllowed(t, cb.Check("open.test", "/", tokB, false))

	srv.Pause()
	unavailable := 0
	until := time.Now().Add(3 * time.Second) // past MaxStale (1s), when the near cache is no longer trusted
	for time.Now().Before(until) {
		r, err := ca.try("strict.test", "/", tokA, false)
		switch {
		case err != nil:
			t.Fatalf("strict policy, Redis hung: no answer within the deadline: %v", err)
		case !r.Allowed && r.Reason == "store_unavailable":
			unavailable++
		case !r.Allowed:
			t.Fatalf("strict policy, Redis hung: %v", r)
		}
		r, err = cb.try("open.test", "/", tokB, false)
		if err != nil || !r.Allowed {
			t.Fatalf("open policy, Redis hung: %v %v, want allowed on the near cache within the deadline", r, err)
		}
	}
	if unavailable == 0 {
		t.Fatal("the strict policy never answered store_unavailable: Redis was not found hung")
	}
	if code, body, _ := a.httpGet("/readyz"); code != 503 || !strings.Contains(body, "not answered") && !strings.Contains(body, "did not answer") {
		t.Errorf("/readyz with Redis hung: %d %q, want 503 saying Redis does not answer", code, body)
	}
	for _, s := range []*server{a, b} {
		if v := metricValue(s.metrics(t), "sessiongate_store_up", nil); v != 0 {
			t.Errorf("store_up %v with Redis hung, want 0", v)
		}
	}

	srv.Resume()
	for _, s := range []*server{a, b} {
		if err := s.waitReady(15 * time.Second); err != nil {
			t.Fatalf("not ready once Redis answers again: %v", err)
		}
	}
	wantAllowed(t, ca.Check("strict.test", "/", tokA, false))
	wantAllowed(t, cb.Check("open.test", "/", tokB, false))
}

// TestRedisOutageEndsSurviveTheReplica: with store_failure: continue, the
// ends a replica decides during a Redis outage (here identity mismatches:
// stolen cookies) are kept in its --state-file until Redis has them. The
// replica is killed (kill -9) and, in a second round, stopped (SIGTERM)
// before Redis returns; restarted, it refuses those sessions at once, and
// once Redis is back, so does a replica that never saw them.
func TestRedisOutageEndsSurviveTheReplica(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	open := pol{Hosts: []string{"open.test"}, Absolute: time.Hour, Idle: 10 * time.Minute}
	policies := map[string]string{"open": strings.Replace(open.yaml(), "session:\n", "session:\n  store_failure: continue\n", 1)}
	o := serverOpts{extraArgs: []string{"--store", srv.URL() + "?max_stale=250ms", "--state-file", filepath.Join(t.TempDir(), "outage")}}
	a := startServerOpts(t, policies, o)

	type sess struct{ tok, cookie string }
	var stolen []sess
	for round, kill := range []bool{true, false} {
		var victims []sess
		for i := range 10 {
			tok := a.token(t, fmt.Sprintf("victim-%d-%d", round, i))
			r := a.apiClient(t).Check("open.test", "/", tok, false)
			wantAllowed(t, r)
			victims = append(victims, sess{tok, cookieOf(t, r)})
		}
		srv.Stop()
		if !waitFor(5*time.Second, func() bool { return metricValue(a.metrics(t), "sessiongate_store_up", nil) == 0 }) {
			t.Fatal("sessiongate_store_up stays 1 during the outage")
		}
		for _, v := range victims {
			wantAPIDenied(t, a.apiClient(t).Check("open.test", "/", a.token(t, "mallory"), false, v.cookie), "identity_mismatch", true)
		}
		stolen = append(stolen, victims...)
		restart(t, a, o, kill)
		// Redis still down: the restarted replica knows the ends from its file.
		for _, v := range victims {
			wantAPIDenied(t, a.apiClient(t).Check("open.test", "/", v.tok, false, v.cookie), "reauth_required", true)
			wantAPIDenied(t, a.apiClient(t).Check("open.test", "/", v.tok, false), "reauth_required", true)
		}
		srv.Restart()
		// store_up, not /readyz: a replica with a fail-open policy stays
		// ready throughout, and sessions begun before the queue is in
		// Redis would be the fallback's, forgotten once it is.
		if !waitFor(15*time.Second, func() bool { return metricValue(a.metrics(t), "sessiongate_store_up", nil) == 1 }) {
			t.Fatal("store_up stays 0 after Redis returned")
		}
	}
	b := startReplicaOf(t, a, srv.URL(), policies)
	for _, s := range []*server{a, b} {
		for _, v := range stolen {
			wantAPIDenied(t, s.apiClient(t).Check("open.test", "/", v.tok, false, v.cookie), "reauth_required", true)
			wantAPIDenied(t, s.apiClient(t).Check("open.test", "/", v.tok, false), "reauth_required", true)
		}
	}
}

// TestRedisFallbackIdleNeedsEvidence: replica B read ten sessions once;
// they stay in use on replica A for longer than their idle timeout; then
// Redis stops. B's copies say the sessions idled, but a copy does not follow
// other replicas' activity: with store_failure: continue, B goes on serving
// them rather than ending them as idle on that stale read.
func TestRedisFallbackIdleNeedsEvidence(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const idle = 3 * time.Second
	open := pol{Hosts: []string{"open.test"}, Absolute: time.Hour, Idle: idle}
	policies := map[string]string{"open": strings.Replace(open.yaml(), "session:\n", "session:\n  store_failure: continue\n", 1)}
	url := srv.URL() + "?max_stale=250ms"
	a, b := startReplicas(t, url, url, policies)
	type sess struct{ tok, cookie string }
	var ss []sess
	for i := range 10 {
		tok := a.token(t, fmt.Sprintf("user%d", i))
		r := a.apiClient(t).Check("open.test", "/", tok, false)
		wantAllowed(t, r)
		s := sess{tok, cookieOf(t, r)}
		wantAllowed(t, b.apiClient(t).Check("open.test", "/", s.tok, false, s.cookie)) // B reads it once
		ss = append(ss, s)
	}
	until := time.Now().Add(idle + 500*time.Millisecond)
	for time.Now().Before(until) {
		for _, s := range ss {
			wantAllowed(t, a.apiClient(t).Check("open.test", "/", s.tok, false, s.cookie))
		}
		time.Sleep(300 * time.Millisecond)
	}
	srv.Stop()
	if !waitFor(5*time.Second, func() bool { return metricValue(b.metrics(t), "sessiongate_store_up", nil) == 0 }) {
		t.Fatal("store_up stays 1 on B during the outage")
	}
	for i, s := range ss {
		r := b.apiClient(t).Check("open.test", "/", s.tok, false, s.cookie)
		if !r.Allowed {
			t.Errorf("session %d, in use on A until the outage, on B during it: %v, want allowed", i, r)
		}
	}
	if n := len(b.findEvents(t, map[string]string{"event": "session_ended"})); n != 0 {
		t.Errorf("B ended %d sessions during the outage, want none", n)
	}
}

// TestRedisDataLoss: Redis loses every key (FLUSHALL; a restart without
// persistence looks the same). The replica that saw the sign-outs finds the
// loss from its marker key (store_data_losses_total), writes back every end
// it knows (store_ends_reasserted_total), and a replica started afterwards,
// which never saw them, refuses all of them.
func TestRedisDataLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	policies := map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()}
	a := startServerOpts(t, policies, serverOpts{extraArgs: []string{"--store", srv.URL()}})
	type sess struct{ tok, cookie string }
	var gone []sess
	for i := range 20 {
		tok := a.token(t, fmt.Sprintf("user%d", i))
		r := a.apiClient(t).Check("app.test", "/", tok, false)
		wantAllowed(t, r)
		s := sess{tok, cookieOf(t, r)}
		wantDenied(t, a.apiClient(t).Check("app.test", "/logout", s.tok, true, s.cookie), 302, "signed_out")
		gone = append(gone, s)
	}
	if err := srv.Client().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return metricValue(a.metrics(t), "sessiongate_store_data_losses_total", nil) == 1 }) {
		t.Fatal("store_data_losses_total stays 0 after FLUSHALL")
	}
	if !waitFor(5*time.Second, func() bool { return metricValue(a.metrics(t), "sessiongate_store_ends_reasserted_total", nil) >= 40 }) {
		t.Errorf("store_ends_reasserted_total = %v, want the 20 sessions and their 20 scopes", metricValue(a.metrics(t), "sessiongate_store_ends_reasserted_total", nil))
	}
	if !a.waitLog("Redis lost data") {
		t.Error("no log line about the loss")
	}
	c := startReplicaOf(t, a, srv.URL(), policies)
	for _, s := range []*server{a, c} {
		for _, g := range gone {
			wantAPIDenied(t, s.apiClient(t).Check("app.test", "/", g.tok, false, g.cookie), "reauth_required", true)
			wantAPIDenied(t, s.apiClient(t).Check("app.test", "/", g.tok, false), "reauth_required", true)
		}
	}
}

// TestRedisStoreURLErrors: a bad --store fails at start with a message that
// names the problem and never the password.
func TestRedisStoreURLErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app.yaml"), pol{Hosts: []string{"app.test"}}.yaml())
	if err := newIDP(t).WriteJWKS(filepath.Join(dir, jwksFileName)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ store, want string }{
		{"redis://:hunter2@cache:6379/x", "is not a number"},
		{"postgres://cache", "want memory, or a redis://"},
		{"redis+cluster://a:1?bogus=1", "unknown parameter"},
	} {
		_, stderr, code := runBin(t, "serve", "--policies", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--store", tc.store)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "hunter2") {
			t.Errorf("--store %s: exit %d, stderr %q; want a failure naming %q without the password", tc.store, code, stderr, tc.want)
		}
	}
}
