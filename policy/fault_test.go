package policy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatcherKeepsLastGoodSetThroughFaults: whatever happens to the policy
// directory — deleted, replaced by a file, a policy that cannot be read, a
// file caught half-written — the reload fails, is reported, and the last
// good policies stay in force; putting things right applies again.
func TestWatcherKeepsLastGoodSetThroughFaults(t *testing.T) {
	good := policyYAML("p.example.com", "10m")
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, dir string)
	}{
		{"directory deleted", func(t *testing.T, dir string) { must(t, os.RemoveAll(dir)) }},
		{"directory replaced by a file", func(t *testing.T, dir string) {
			must(t, os.RemoveAll(dir))
			must(t, os.WriteFile(dir, []byte(good), 0o644))
		}},
		{"policy unreadable (dangling symlink)", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "p.yaml")
			must(t, os.Remove(p))
			must(t, os.Symlink(filepath.Join(dir, "..gone/p.yaml"), p))
		}},
		{"a second file with the same policy name", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "p.yml"), []byte(good), 0o644)) // same name, second file
		}},
		{"half-written (cut mid-line)", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(good[:len(good)/2]), 0o644))
		}},
		{"half-written (cut at a line)", func(t *testing.T, dir string) {
			cut := 0
			for i, c := range good {
				if c == '\n' && i > len(good)/3 {
					cut = i + 1
					break
				}
			}
			must(t, os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(good[:cut]), 0o644))
		}},
		{"emptied", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "p.yaml"), nil, 0o644))
		}},
		{"binary garbage", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "p.yaml"), []byte{0xff, 0xfe, 0, 1, '\n', 0x80}, 0o644))
		}},
		{"key file deleted", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "keys/jwks.json")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "policies")
			writeFile(t, filepath.Join(dir, "keys/jwks.json"), `{"keys":[]}`)
			writeFile(t, filepath.Join(dir, "p.yaml"), good)
			var r reloads
			w, err := NewWatcher(dir, WatcherOptions{OnReload: r.record})
			if err != nil {
				t.Fatal(err)
			}
			before := w.Current()
			tc.breakIt(t, dir)
			if err := w.Reload(); err == nil {
				t.Fatal("the reload succeeded")
			}
			if w.Current() != before || idle(w, "p.example.com") != 10*time.Minute || w.LastError() == nil {
				t.Fatalf("after a failed reload: policies %v, last error %v", w.Current().Names(), w.LastError())
			}
			if _, bad := r.counts(); bad != 1 {
				t.Errorf("OnReload saw %d failures, want 1", bad)
			}

			must(t, os.RemoveAll(dir))
			writeFile(t, filepath.Join(dir, "keys/jwks.json"), `{"keys":[]}`)
			writeFile(t, filepath.Join(dir, "p.yaml"), policyYAML("p.example.com", "20m"))
			if err := w.Reload(); err != nil {
				t.Fatalf("reload after the repair: %v", err)
			}
			if idle(w, "p.example.com") != 20*time.Minute {
				t.Error("the repaired directory did not apply")
			}
		})
	}
}

// TestWatcherFollowsARecreatedDirectory: a policy directory deleted and
// created again (a volume remounted, a deploy tool that replaces it) keeps
// the last good policies meanwhile, loads again once it is back, and is
// watched again, so that later edits apply on their file events rather than
// only on the poll.
func TestWatcherFollowsARecreatedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	writeFile(t, filepath.Join(dir, "keys/jwks.json"), `{"keys":[]}`)
	writeFile(t, filepath.Join(dir, "p.yaml"), policyYAML("p.example.com", "10m"))
	w, err := NewWatcher(dir, WatcherOptions{Debounce: 10 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	startWatcher(t, w)
	waitFor(t, "the directory watched", w.watching.Load)
	must(t, os.RemoveAll(dir))
	waitFor(t, "the deletion noticed", func() bool { return w.LastError() != nil && !w.watching.Load() })
	if idle(w, "p.example.com") != 10*time.Minute {
		t.Fatal("the last good policies were dropped with the directory")
	}
	writeFile(t, filepath.Join(dir, "keys/jwks.json"), `{"keys":[]}`)
	writeFile(t, filepath.Join(dir, "p.yaml"), policyYAML("p.example.com", "20m"))
	waitFor(t, "the recreated directory loaded", func() bool { return idle(w, "p.example.com") == 20*time.Minute })
	waitFor(t, "the recreated directory watched", w.watching.Load)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
