package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/idp"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// TestServeInProcess: the server runs in the test's process. It answers a
// check; when its context ends it stops every one of its units (listeners,
// watchers, background refreshes) before it closes the store and the audit
// log, so the final state-file snapshot holds the session and the audit log
// its start, and nothing listens any more.
func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := idp.New(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteJWKS(filepath.Join(policies, "jwks.json")); err != nil {
		t.Fatal(err)
	}
	pol := "hosts: [app.test]\nsession: {absolute_timeout: 1h, idle_timeout: 30m}\n" +
		"token: {issuer: \"https://idp.test\", audiences: [app], jwks_file: jwks.json}\n" +
		"login: {url: \"https://login.test/start\"}\n"
	if err := os.WriteFile(filepath.Join(policies, "app.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	stateFile, auditFile := filepath.Join(dir, "state"), filepath.Join(dir, "audit.log")

	now := time.Now()
	tok, err := d.Mint(map[string]any{"iss": "https://idp.test", "aud": "app", "sub": "alice",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	// Twice, the second time on the first's state file: the session
	// survives, so the second run resumes it and starts none.
	for run := 1; run <= 2; run++ {
		runServeOnce(t, []string{"--policies", policies, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--audit-log", auditFile, "--state-file", stateFile, "--drain-delay", "0"}, tok)
	}
	audit, err := os.ReadFile(auditFile)
	if err != nil || bytes.Count(audit, []byte(`"event":"session_started"`)) != 1 {
		t.Errorf("audit log after two runs (%v), want one session_started:\n%s", err, audit)
	}
}

// runServeOnce runs serve with args until it serves, makes one check with
// the bearer token tok (which must be allowed), ends serve's context and
// waits for it to return, then checks that nothing listens any more.
func runServeOnce(t *testing.T, args []string, tok string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- serve(ctx, args, &stdout, &stderr) }()
	var serving struct {
		HTTPAddr string `json:"http_addr"`
	}
	for deadline := time.Now().Add(30 * time.Second); serving.HTTPAddr == ""; time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, `"msg":"sessiongate serving"`) {
				_ = json.Unmarshal([]byte(line), &serving)
			}
		}
		select {
		case code := <-done:
			t.Fatalf("serve returned %d before serving:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 30s:\n%s", stderr.String())
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+serving.HTTPAddr+"/auth/forward", nil)
	req.Header.Set("X-Forwarded-Host", "app.test")
	req.Header.Set("X-Forwarded-Uri", "/")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Method", "GET")
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("check answered %s, want 200", res.Status)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("serve returned %d, want %d:\n%s", code, exitOK, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not return a minute after its context ended")
	}
	if c, err := net.DialTimeout("tcp", serving.HTTPAddr, time.Second); err == nil {
		c.Close()
		t.Error("the HTTP listener still accepts after serve returned")
	}
}
