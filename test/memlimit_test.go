package test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cgroupLimit is the memory limit of the cgroup that
// TestMemoryLimitFromCgroup starts sessiongate in.
const cgroupLimit = 512 << 20

// TestMemoryLimitFromCgroup: sessiongate started in a memory cgroup limited
// to 512 MiB, without GOMEMLIMIT, gives the Go runtime 90% of that as its
// memory limit and says so once at start; with GOMEMLIMIT=off it leaves the
// runtime as the operator set it. Real cgroups: a child of the test's own
// cgroup v1 memory controller, which the process joins before exec.
func TestMemoryLimitFromCgroup(t *testing.T) {
	t.Parallel()
	parent := ownMemoryCgroup(t)
	for _, tc := range []struct {
		name     string
		env      []string
		goLimit  int64 // the runtime's limit; math.MaxInt64 is none
		announce bool  // the log line "memory limit set from the cgroup"
	}{
		{name: "no GOMEMLIMIT", goLimit: cgroupLimit / 100 * 90, announce: true},
		{name: "GOMEMLIMIT=off", env: []string{"GOMEMLIMIT=off"}, goLimit: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			child := makeCgroup(t, parent, "memory.limit_in_bytes", strconv.Itoa(cgroupLimit))
			s := startServerOpts(t, map[string]string{"app": pol{Hosts: []string{"app.test"}}.yaml()},
				serverOpts{cgroup: child, env: tc.env, unsetEnv: []string{"GOMEMLIMIT"}})

			// The process is in the child (else the rest proves nothing).
			rel, _ := filepath.Rel(parent, child)
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/cgroup"); err != nil ||
				!strings.Contains(string(b), "/"+rel+"\n") {
				t.Fatalf("sessiongate is not in the cgroup %s (%v):\n%s", child, err, b)
			}
			var lines []map[string]any
			for _, line := range strings.Split(s.stderr.String(), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "memory limit set from the cgroup" {
					lines = append(lines, rec)
				}
			}
			switch {
			case !tc.announce && len(lines) > 0:
				t.Errorf("logged %v, want no memory limit set from the cgroup", lines)
			case tc.announce && len(lines) != 1:
				t.Errorf("logged %d lines %q, want one:\n%s", len(lines), "memory limit set from the cgroup", s.stderr.String())
			case tc.announce:
				want := map[string]any{"level": "INFO", "cgroup_limit": float64(cgroupLimit), "go_limit": float64(tc.goLimit), "cgroup": child}
				for k, v := range want {
					if lines[0][k] != v {
						t.Errorf("the line says %s=%v, want %v: %v", k, lines[0][k], v, lines[0])
					}
				}
			}
			// What the runtime has, as the Go collector of /metrics reads it.
			if got := metricValue(s.metrics(t), "go_gc_gomemlimit_bytes", nil); got != float64(tc.goLimit) {
				t.Errorf("go_gc_gomemlimit_bytes = %v, want %v", got, float64(tc.goLimit))
			}
		})
	}
}

// ownMemoryCgroup returns the directory of the test process's cgroup in the
// cgroup v1 memory controller's hierarchy, or skips the test when there is
// none.
func ownMemoryCgroup(t *testing.T) string {
	t.Helper()
	procs, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	cgroup := ""
	for line := range strings.Lines(string(procs)) {
		if f := strings.SplitN(strings.TrimSpace(line), ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			cgroup = f[2]
		}
	}
	if cgroup == "" {
		t.Skip("no cgroup v1 memory controller: on cgroup v2 a child with a memory limit of its own needs a delegated subtree (no process in the parent), which this test does not set up")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mounts)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+4 || f[sep+1] != "cgroup" || !slices.Contains(strings.Split(f[sep+3], ","), "memory") {
			continue
		}
		if root := f[3]; root == "/" {
			return filepath.Join(f[4], cgroup)
		} else if cgroup == root || strings.HasPrefix(cgroup, root+"/") {
			return filepath.Join(f[4], strings.TrimPrefix(cgroup, root))
		}
	}
	t.Skipf("no mount of the cgroup v1 memory controller holds this process's cgroup %s", cgroup)
	return ""
}

// makeCgroup makes a child cgroup of parent with file set to value, and
// removes it when the test ends, after the processes started in it (whose
// cleanups, registered later, run first). It skips the test when cgroups
// cannot be made here.
func makeCgroup(t *testing.T, parent, file, value string) string {
	t.Helper()
	child := filepath.Join(parent, "sessiongate-test-"+randHex(6))
	if err := os.Mkdir(child, 0o755); err != nil {
		// Not root, cgroups mounted read-only, or a cgroup namespace whose
		// own cgroup is not where the mount shows it.
		t.Skipf("cgroups cannot be made here: %v", err)
	}
	t.Cleanup(func() {
		// A cgroup goes once it has no process; the last one may be
		// a moment in leaving after it was waited for.
		var err error
		if !waitFor(10*time.Second, func() bool { err = os.Remove(child); return err == nil }) {
			t.Errorf("the cgroup %s stays: %v", child, err)
		}
	})
	if err := os.WriteFile(filepath.Join(child, file), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
	return child
}
