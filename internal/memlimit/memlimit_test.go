package memlimit

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

const mib = 1 << 20

// Lines of /proc/self/mountinfo as the kernel writes them.
const (
	mountV2     = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	mountV1Mem  = "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory\n"
	mountHybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
	// v1's "no limit", as memory.limit_in_bytes reads back.
	v1Unlimited = "9223372036854771712\n"
)

// TestFind runs Find on each tree of testdata/find: fake /proc and
// /sys/fs/cgroup of hosts and containers, and a file "want" beside them:
// "limit N" and "cgroup DIR" (the directory whose limit it is, relative to
// the tree) for a limit, or an error that names the file "error-names
// FILE" and says "error-says TEXT". Lines starting with # say what the
// tree is.
func TestFind(t *testing.T) {
	dirs, err := filepath.Glob("testdata/find/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no trees in testdata/find (%v)", err)
	}
	for _, root := range dirs {
		t.Run(filepath.Base(root), func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(root, "want"))
			if err != nil {
				t.Fatal(err)
			}
			limit, cgroup, findErr := Find(root)
			var wantLimit int64
			wantCgroup, wantErr := "", false
			for line := range strings.Lines(string(want)) {
				key, value, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
				switch key {
				case "limit":
					if wantLimit, err = strconv.ParseInt(value, 10, 64); err != nil {
						t.Fatalf("want: %q", line)
					}
				case "cgroup":
					wantCgroup = filepath.Join(root, value)
				case "error-names":
					value = filepath.Join(root, value)
					fallthrough
				case "error-says":
					if wantErr = true; findErr == nil || !strings.Contains(findErr.Error(), value) {
						t.Errorf("Find's error %v does not say %s", findErr, value)
					}
				}
			}
			if !wantErr && (findErr != nil || limit != wantLimit || cgroup != wantCgroup) {
				t.Errorf("Find = %d, %q, %v; want %d, %q", limit, cgroup, findErr, wantLimit, wantCgroup)
			}
			if wantErr && (limit != 0 || cgroup != "") {
				t.Errorf("Find = %d, %q with its error, want 0, \"\"", limit, cgroup)
			}
		})
	}
}

// TestApply: GOMEMLIMIT wins; otherwise a cgroup limit becomes the Go
// runtime's at GoPercent, said once; no limit or no answer changes nothing.
func TestApply(t *testing.T) {
	limited := map[string]string{
		"proc/self/cgroup": "0::/app\n", "proc/self/mountinfo": mountV2,
		"sys/fs/cgroup/app/memory.max": "536870912\n",
	}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		files  map[string]string
		set    int64  // the limit set; 0: none
		logged string // the one log line's level and message, "" for none
	}{
		{name: "GOMEMLIMIT=off", env: map[string]string{"GOMEMLIMIT": "off"}, files: limited},
		{name: "GOMEMLIMIT=450MiB", env: map[string]string{"GOMEMLIMIT": "450MiB"}, files: limited},
		{name: "a limit", files: limited, set: 512 * mib / 100 * 90, logged: "INFO memory limit set from the cgroup"},
		{name: "GOMEMLIMIT empty, as the runtime reads it: unset", env: map[string]string{"GOMEMLIMIT": ""}, files: limited,
			set: 512 * mib / 100 * 90, logged: "INFO memory limit set from the cgroup"},
		{name: "no limit", files: map[string]string{"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountV2, "sys/fs/cgroup/cgroup.procs": "1\n"}},
		{name: "a limit that cannot be read", files: map[string]string{"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountV2, "sys/fs/cgroup/memory.max": "lots"},
			logged: "WARN memory limit: the cgroup's cannot be read, so the Go runtime has none (GOMEMLIMIT sets one)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			var out bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&out, nil))
			var set []int64
			Apply(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, root,
				func(n int64) int64 { set = append(set, n); return n }, log)
			switch {
			case tc.set == 0 && len(set) > 0:
				t.Errorf("set the Go limit to %v, want it untouched", set)
			case tc.set != 0 && (len(set) != 1 || set[0] != tc.set):
				t.Errorf("set the Go limit to %v, want [%d] once", set, tc.set)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if tc.logged == "" {
				if out.Len() > 0 {
					t.Errorf("logged %s, want nothing", out.String())
				}
				return
			}
			var rec map[string]any
			if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil || rec["level"].(string)+" "+rec["msg"].(string) != tc.logged {
				t.Fatalf("logged %s, want one line %q", out.String(), tc.logged)
			}
			if tc.set != 0 {
				want := map[string]any{"cgroup_limit": float64(512 * mib), "go_limit": float64(tc.set), "cgroup": filepath.Join(root, "sys/fs/cgroup/app")}
				for k, v := range want {
					if rec[k] != v {
						t.Errorf("logged %s=%v, want %v", k, rec[k], v)
					}
				}
			} else if !strings.Contains(rec["err"].(string), `"lots"`) {
				t.Errorf("the warning's err %q does not say the value", rec["err"])
			}
		})
	}
}

// FuzzFind: whatever the three files say, Find neither panics nor returns
// a limit that is not positive, and a limit it returns is the one the
// limit files hold.
func FuzzFind(f *testing.F) {
	f.Add("0::/\n", mountV2, "268435456\n")
	f.Add("0::/a/b\n", "30 23 0:26 /a /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "max\n")
	f.Add("4:memory:/a/b\n0::/\n", mountV1Mem+mountHybrid, v1Unlimited)
	f.Add("4:memory:/a\n", "35 31 0:32 / /sys/fs/cgroup/memory\\040x rw - cgroup cgroup rw,memory\n", "104857600")
	f.Add("4:memory:/../a\n", mountV1Mem, "-1")
	f.Fuzz(func(t *testing.T, cgroup, mountinfo, limit string) {
		fsys := fstest.MapFS{
			"proc/self/cgroup":    {Data: []byte(cgroup)},
			"proc/self/mountinfo": {Data: []byte(mountinfo)},
		}
		// The limit file wherever the seeds' mounts put a cgroup.
		for _, dir := range []string{"sys/fs/cgroup", "sys/fs/cgroup/a", "sys/fs/cgroup/a/b",
			"sys/fs/cgroup/memory", "sys/fs/cgroup/memory/a", "sys/fs/cgroup/memory/a/b", "sys/fs/cgroup/memory x"} {
			fsys[dir+"/memory.max"] = &fstest.MapFile{Data: []byte(limit)}
			fsys[dir+"/memory.limit_in_bytes"] = &fstest.MapFile{Data: []byte(limit)}
		}
		got, where, err := tree{fsys: fsys, root: "/"}.find()
		switch {
		case err != nil && (got != 0 || where != ""):
			t.Fatalf("find = %d, %q with the error %v", got, where, err)
		case err == nil && got < 0:
			t.Fatalf("find = %d, a negative limit", got)
		case err == nil && got > 0:
			n, perr := strconv.ParseInt(strings.TrimSpace(limit), 10, 64)
			if perr != nil || n != got || where == "" {
				t.Fatalf("find = %d, %q from a limit file holding %q", got, where, limit)
			}
		}
	})
}

// writeTree writes files (path relative to the root → content) under a
// temporary root and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
