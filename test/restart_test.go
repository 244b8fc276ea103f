package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// restart stops s's process — SIGKILL when kill, else SIGTERM and a clean
// exit — and starts it again with the same policy directory and arguments.
// Clients made before hold the old connection: make new ones.
func restart(t *testing.T, s *server, o serverOpts, kill bool) {
	t.Helper()
	if kill {
		if err := s.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill -9: %v", err)
		}
		<-s.done
	} else {
		s.signal(t, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Fatal("no exit within 10s of SIGTERM")
		}
		if s.waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", s.waitErr, tail(s.stderr.String(), 4000))
		}
	}
	// The harness scans the last process's output at the end; this one's
	// output is replaced by the restart, so it is scanned now.
	s.mu.Lock()
	leaks := findSecrets(s.secrets, map[string]string{"stdout before the restart": s.stdout.String(), "stderr before the restart": s.stderr.String()})
	s.mu.Unlock()
	for _, l := range leaks {
		t.Error(l)
	}
	s.conn.Close()
	var err error
	for range 5 {
		if err = s.start(o); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s.conn = conn
	t.Cleanup(func() { conn.Close() })
	if err := s.waitReady(15 * time.Second); err != nil {
		t.Fatalf("not ready after the restart: %v\n%s", err, s.stderr.String())
	}
}

// TestSessionEndsSurviveKill9: every kind of session end that was answered
// — sign-out, idle timeout, identity mismatch — is still in force after the
// process is killed with SIGKILL and started again on the same state file.
func TestSessionEndsSurviveKill9(t *testing.T) {
	t.Parallel()
	o := serverOpts{extraArgs: []string{"--state-file", filepath.Join(t.TempDir(), "state")}}
	s := startServerOpts(t, map[string]string{
		"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout", Idle: 2 * time.Second, Absolute: time.Hour}.yaml(),
	}, o)
	tokens := map[string]string{}
	cookies := map[string]string{}
	signIn := func(user string) {
		t.Helper()
		tokens[user] = s.token(t, user)
		c := s.client(t)
		r := c.Check("app.test", "/", tokens[user], true)
		wantAllowed(t, r)
		cookies[user] = wantNewSessionCookie(t, r, time.Hour)
	}
	for _, u := range []string{"idler", "alice", "dave"} {
		signIn(u)
	}
	idleFrom := time.Now()
	with := func(user string) string { return "cookie: " + cookieName + "=" + cookies[user] }

	wantDenied(t, s.client(t).Check("app.test", "/logout", tokens["alice"], true, with("alice")), 302, "signed_out")
	wantAPIDenied(t, s.client(t).Check("app.test", "/", s.token(t, "mallory"), false, with("dave")), "identity_mismatch", true)
	sleepUntil(idleFrom.Add(2500 * time.Millisecond))
	wantAPIDenied(t, s.client(t).Check("app.test", "/", tokens["idler"], false, with("idler")), "idle_timeout", true)
	signIn("erin") // a session live at the kill

	restart(t, s, o, true)

	c := s.client(t)
	for _, u := range []string{"alice", "dave", "idler"} {
		wantAPIDenied(t, c.Check("app.test", "/", tokens[u], false, with(u)), "reauth_required", true)
		wantAPIDenied(t, c.Check("app.test", "/", tokens[u], false), "reauth_required", true)
	}
	// A live session continues (its start was journaled within a second,
	// or the same token opens a new one).
	wantAllowed(t, c.Check("app.test", "/", tokens["erin"], false, with("erin")))
}

// TestStateFileActivityAfterKill9: activity is journaled every second, so
// a session in use is not ended as idle after kill -9, however long since
// the last snapshot: here the session was snapshotted at a graceful restart,
// then used for longer than its idle timeout, then the process was killed.
func TestStateFileActivityAfterKill9(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	o := serverOpts{extraArgs: []string{"--state-file", filepath.Join(t.TempDir(), "state")}}
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, Idle: idle, Absolute: time.Hour}.yaml()}, o)
	tok := s.token(t, "alice")
	r := s.client(t).Check("app.test", "/", tok, true)
	wantAllowed(t, r)
	cookie := "cookie: " + cookieName + "=" + wantNewSessionCookie(t, r, time.Hour)
	restart(t, s, o, false) // the snapshot: the session, active at its start

	// The last activity is journaled (the debug log says so) before the kill.
	const journaled = "state file: activity journaled"
	var seen int
	until := time.Now().Add(idle + time.Second)
	for time.Now().Before(until) {
		seen = strings.Count(s.stderr.String(), journaled)
		r = s.client(t).Check("app.test", "/", tok, false, cookie)
		wantAllowed(t, r)
		wantNoSetCookie(t, r)
		time.Sleep(250 * time.Millisecond)
	}
	if !waitFor(5*time.Second, func() bool { return strings.Count(s.stderr.String(), journaled) > seen }) {
		t.Fatal("no activity journaled within 5s of the last request")
	}
	restart(t, s, o, true)
	r = s.client(t).Check("app.test", "/", tok, false, cookie)
	wantAllowed(t, r)
	wantNoSetCookie(t, r) // the same session, not a new one
}

// TestStateFileDamageRefusesToStart: a journal cut after kill -9 (here to
// half of it, as a bad copy or a restore would) is found at the next start,
// which stops with a message that says what to do, instead of letting the
// signed-out sessions in again.
func TestStateFileDamageRefusesToStart(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state")
	o := serverOpts{extraArgs: []string{"--state-file", state}}
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()}, o)
	for i := range 20 {
		tok := s.token(t, fmt.Sprintf("user%d", i))
		c := s.client(t)
		wantAllowed(t, c.Check("app.test", "/", tok, true))
		wantDenied(t, c.Check("app.test", "/logout", tok, true), 302, "signed_out")
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.done
	s.waitErr = nil // killed on purpose; the cleanup expects a clean exit
	journals, _ := filepath.Glob(state + ".journal.*")
	if len(journals) != 1 {
		t.Fatalf("journals after the kill: %v, want one", journals)
	}
	fi, err := os.Stat(journals[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(journals[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runBin(t, append([]string{"serve", "--policies", s.dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t)}, o.extraArgs...)...)
	if code != 1 || !strings.Contains(stderr, "is shorter than it was created") || !strings.Contains(stderr, "Restore the files from a backup") {
		t.Errorf("start on a cut journal: exit %d, want 1 with a message that says what to do:\n%s", code, stderr)
	}
}

// TestGracefulRestartKeepsSessions: after SIGTERM and a start on the same
// state file, a live session continues (same cookie, same deadlines, no new
// cookie) and a signed-out one stays refused.
func TestGracefulRestartKeepsSessions(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state")
	o := serverOpts{extraArgs: []string{"--state-file", state}}
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()}, o)
	aliceTok, bobTok := s.token(t, "alice"), s.token(t, "bob")
	c := s.client(t)
	r := c.Check("app.test", "/", aliceTok, true)
	wantAllowed(t, r)
	cookie := wantNewSessionCookie(t, r, time.Hour)
	deadline := unixHeader(t, r, expiresHeader)
	b := s.client(t)
	wantAllowed(t, b.Check("app.test", "/", bobTok, true))
	wantDenied(t, b.Check("app.test", "/logout", bobTok, true), 302, "signed_out")

	restart(t, s, o, false)
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no snapshot after a graceful stop: %v", err)
	}

	r = s.client(t).Check("app.test", "/next", aliceTok, true, "cookie: "+cookieName+"="+cookie)
	wantAllowed(t, r)
	wantNoSetCookie(t, r)
	if got := unixHeader(t, r, expiresHeader); got != deadline {
		t.Errorf("absolute deadline after the restart = %d, want %d (the same session)", got, deadline)
	}
	wantAPIDenied(t, s.client(t).Check("app.test", "/", bobTok, false), "reauth_required", true)
	if evs := s.findEvents(t, map[string]string{"event": "session_started", "subject": "alice"}); len(evs) != 0 {
		t.Errorf("the restarted process started a session for alice: %v", evs)
	}
}

// TestStateFileDiskFull: on a full disk a sign-out is answered 503
// store_unavailable (never a 302 that pretends), the session is refused at
// once all the same, and once there is room again the sign-out succeeds and
// every end survives kill -9. It needs a tiny tmpfs, so root and the right
// to mount.
func TestStateFileDiskFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	o := serverOpts{extraArgs: []string{"--state-file", filepath.Join(dir, "state")}}
	s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}, LogoutPath: "/logout"}.yaml()}, o)
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	var signedOut []string
	tokens := map[string]string{}
	failed := ""
	for i := 0; i < 200 && failed == ""; i++ {
		u := fmt.Sprintf("user%d", i)
		tokens[u] = s.token(t, u)
		c := s.client(t)
		wantAllowed(t, c.Check("app.test", "/", tokens[u], true))
		r := c.Check("app.test", "/logout", tokens[u], false)
		switch {
		case r.Reason == "signed_out":
			signedOut = append(signedOut, u)
		case r.Reason == "store_unavailable" && r.Status == 503:
			failed = u
		default:
			t.Fatalf("sign-out of %s on a full disk: %v", u, r)
		}
	}
	if failed == "" {
		t.Fatal("200 sign-outs on a full 256k tmpfs all succeeded: the journal is not written")
	}
	t.Logf("%d sign-outs journaled before the disk was full", len(signedOut))
	wantAPIDenied(t, s.client(t).Check("app.test", "/", tokens[failed], false), "reauth_required", true)
	// Readiness, store_up and state_file_writable say so, as long as it lasts.
	if code, body, _ := s.httpGet("/readyz"); code != 503 || !strings.Contains(body, "no space left on device") {
		t.Errorf("/readyz with the state file's disk full: %d %q, want 503 saying why", code, body)
	}
	m := s.metrics(t)
	if up, w := metricValue(m, "sessiongate_store_up", nil), metricValue(m, "sessiongate_state_file_writable", nil); up != 0 || w != 0 {
		t.Errorf("store_up %v, state_file_writable %v with the disk full, want 0 and 0", up, w)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		return s.client(t).Check("app.test", "/logout", tokens[failed], false).Reason == "signed_out"
	}) {
		t.Fatalf("the sign-out still fails with room on the disk:\n%s", tail(s.stderr.String(), 4000))
	}
	if err := s.waitReady(10 * time.Second); err != nil {
		t.Errorf("not ready again with room on the disk: %v", err)
	}
	if w := metricValue(s.metrics(t), "sessiongate_state_file_writable", nil); w != 1 {
		t.Errorf("state_file_writable %v with room on the disk, want 1", w)
	}
	restart(t, s, o, true)
	c := s.client(t)
	for _, u := range append(signedOut, failed) {
		wantAPIDenied(t, c.Check("app.test", "/", tokens[u], false), "reauth_required", true)
	}
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
