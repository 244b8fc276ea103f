package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

func policyYAML(host, idle string) string {
	return fmt.Sprintf(`hosts: [%s]
session:
  absolute_timeout: 8h
  idle_timeout: %s
token:
  issuer: https://idp.example.com
  audiences: [app]
  jwks_file: keys/jwks.json
login:
  url: https://login.example.com/start
`, host, idle)
}

// writeFile replaces path atomically, as editors and config tools do, so
// that no reload sees half a file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds. The deadline only bounds a hung test:
// the 2-second reload budget is asserted against the real binary in
// test/reload_test.go, not in unit tests that a busy machine can starve.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
	}
}

// reloads records OnReload calls.
type reloads struct {
	mu      sync.Mutex
	ok, bad int
}

func (r *reloads) record(ok bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok != (err == nil) {
		panic("OnReload: ok and err disagree")
	}
	if ok {
		r.ok++
	} else {
		r.bad++
	}
}

func (r *reloads) counts() (ok, bad int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.bad
}

// startWatcher runs w until the test ends.
func startWatcher(t *testing.T, w *Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func idle(w *Watcher, host string) time.Duration {
	if p := w.Match(host); p != nil {
		return p.IdleTimeout
	}
	return -1
}

func TestWatcherEditBreakRestore(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys/jwks.json"), `{"keys":[]}`)
	p := filepath.Join(dir, "p.yaml")
	writeFile(t, p, policyYAML("p.example.com", "10m"))

	var r reloads
	// The poll is out of the way: file events alone must drive reloads.
	w, err := NewWatcher(dir, WatcherOptions{Debounce: 10 * time.Millisecond, PollInterval: time.Hour, OnReload: r.record})
	if err != nil {
		t.Fatal(err)
	}
	if ok, bad := r.counts(); ok != 1 || bad != 0 {
		t.Fatalf("initial load reported %d ok, %d failed", ok, bad)
	}
	if w.LastReloadSuccess().IsZero() || w.LastError() != nil {
		t.Fatalf("after initial load: success %v, error %v", w.LastReloadSuccess(), w.LastError())
	}
	startWatcher(t, w)

	writeFile(t, p, policyYAML("p.example.com", "20m"))
	waitFor(t, "edit applied", func() bool { return idle(w, "p.example.com") == 20*time.Minute })

	good, goodAt := w.Current(), w.LastReloadSuccess()
	writeFile(t, p, policyYAML("p.example.com", "forever"))
	// OnReload runs after the load has published its error: wait for both.
	waitFor(t, "broken file reported", func() bool { _, bad := r.counts(); return w.LastError() != nil && bad > 0 })
	if w.Current() != good || idle(w, "p.example.com") != 20*time.Minute {
		t.Fatal("a broken file replaced the last good policies")
	}
	if !w.LastReloadSuccess().Equal(goodAt) {
		t.Error("a failed reload moved LastReloadSuccess")
	}
	if _, bad := r.counts(); bad != 1 {
		t.Errorf("OnReload reported %d failures, want 1", bad)
	}

	writeFile(t, p, policyYAML("p.example.com", "30m"))
	waitFor(t, "restore applied", func() bool { return idle(w, "p.example.com") == 30*time.Minute })
	if err := w.LastError(); err != nil {
		t.Errorf("LastError after restore = %v", err)
	}

	writeFile(t, filepath.Join(dir, "q.yml"), policyYAML("q.example.com", "5m"))
	waitFor(t, "new file applied", func() bool { return idle(w, "q.example.com") == 5*time.Minute })

	os.Remove(filepath.Join(dir, "q.yml"))
	waitFor(t, "removed file dropped", func() bool { return w.Match("q.example.com") == nil })
}

// TestWatcherConfigMapSwap mimics how the kubelet updates a mounted
// ConfigMap: the files are symlinks through ..data, which is itself a
// symlink swapped atomically to a new timestamped directory.
func TestWatcherConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "..2025_01/p.yaml"), policyYAML("p.example.com", "10m"))
	writeFile(t, filepath.Join(dir, "..2025_01/keys/jwks.json"), `{"keys":[]}`)
	for _, link := range [][2]string{{"..2025_01", "..data"}, {"..data/p.yaml", "p.yaml"}, {"..data/keys", "keys"}} {
		if err := os.Symlink(link[0], filepath.Join(dir, link[1])); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(version, idleTimeout string) {
		t.Helper()
		writeFile(t, filepath.Join(dir, version, "p.yaml"), policyYAML("p.example.com", idleTimeout))
		writeFile(t, filepath.Join(dir, version, "keys/jwks.json"), `{"keys":[]}`)
		if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}

	w, err := NewWatcher(dir, WatcherOptions{Debounce: 10 * time.Millisecond, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Current().Names(); len(got) != 1 || got[0] != "p" {
		t.Fatalf("policies %v, want [p]: ..data and ..2025_01 are not policies", got)
	}
	startWatcher(t, w)

	swap("..2025_02", "20m")
	os.RemoveAll(filepath.Join(dir, "..2025_01"))
	waitFor(t, "swap applied", func() bool { return idle(w, "p.example.com") == 20*time.Minute })

	good := w.Current()
	swap("..2025_03", "20")
	waitFor(t, "broken swap reported", func() bool { return w.LastError() != nil })
	if w.Current() != good {
		t.Fatal("a broken swap replaced the last good policies")
	}

	swap("..2025_04", "40m")
	waitFor(t, "fixed swap applied", func() bool { return idle(w, "p.example.com") == 40*time.Minute })
}

// TestWatcherFingerprint checks that only a change reloads, and that files a
// policy references count: keys/ is a subdirectory, outside the watch.
func TestWatcherFingerprint(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "keys/jwks.json")
	writeFile(t, jwks, `{"keys":[]}`)
	writeFile(t, filepath.Join(dir, "p.yaml"), policyYAML("p.example.com", "10m"))
	var r reloads
	opts := WatcherOptions{OnReload: r.record, PollInterval: 10 * time.Millisecond}
	opts.NewVerifier = func(string, TokenConfig) (authz.Verifier, error) { return fakeVerifier{}, nil }
	w, err := NewWatcher(dir, opts)
	if err != nil {
		t.Fatal(err)
	}

	w.reload(false)
	w.reload(false)
	if ok, _ := r.counts(); ok != 1 {
		t.Fatalf("%d loads without a change, want only the initial one", ok)
	}
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := r.counts(); ok != 2 {
		t.Fatalf("Reload did not reload")
	}

	startWatcher(t, w)
	before := w.Current()
	writeFile(t, jwks, `{"keys":[{"kty":"EC"}]}`)
	waitFor(t, "key file change reloaded by the poll", func() bool { return w.Current() != before })
	if p := w.Match("p.example.com"); p.Verifier == nil {
		t.Error("reloaded policy has no verifier")
	}
}

func TestNewWatcherFailsOnBadDir(t *testing.T) {
	if _, err := NewWatcher("testdata/bad/jwks_neither", WatcherOptions{}); err == nil {
		t.Fatal("NewWatcher accepted a broken directory")
	}
	if _, err := NewWatcher(t.TempDir(), WatcherOptions{}); err == nil {
		t.Fatal("NewWatcher accepted an empty directory")
	}
}
