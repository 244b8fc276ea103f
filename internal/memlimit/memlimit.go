// Package memlimit owns the memory limit of the cgroup sessiongate runs in:
// finding it (cgroup v2, or the memory controller of cgroup v1) and giving
// the Go runtime a limit below it. Go reads a container's CPU limit but not
// its memory limit: without one, the collector lets the heap grow to twice
// what is live before it collects, and a store of a million sessions then
// grows past a container's limit and is killed, when a collection would
// have kept it under.
package memlimit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// GoPercent is the share of the cgroup's limit given to the Go runtime. The
// rest is for what the runtime does not count and the cgroup does: the
// binary's mapped pages, the kernel's memory for sockets, the page cache of
// the state file and the audit log (reclaimable, but charged), and the
// collector's lag behind a heap that grows fast.
const GoPercent = 90

// unlimitedFrom: cgroup v1 reads back "no limit" as the largest page-aligned
// int64 (9223372036854771712 with 4 KiB pages); no real limit is this large.
const unlimitedFrom = 1 << 62

const (
	maxFileBytes = 4 << 20 // mountinfo of a host with thousands of mounts fits
	maxPathBytes = 4096    // PATH_MAX: a cgroup path is a directory's
)

// Apply sets the Go runtime's memory limit (setLimit:
// runtime/debug.SetMemoryLimit) to GoPercent of the limit of the cgroup the
// process runs in, as the files under root (the file system's, "/") say.
// A GOMEMLIMIT in the environment (any value but empty, "off" too) is the
// operator's decision, which the runtime has already applied: Apply leaves it.
// No limit (or no cgroups: not Linux) changes nothing; a limit that cannot
// be read is logged as a warning and changes nothing either: sessiongate
// runs on, as it would have without this.
func Apply(lookupEnv func(string) (string, bool), root string, setLimit func(int64) int64, log *slog.Logger) {
	// The runtime reads an empty GOMEMLIMIT as unset; so does Apply.
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		return
	}
	limit, cgroup, err := Find(root)
	if err != nil && runtime.GOOS != "linux" && errors.Is(err, fs.ErrNotExist) {
		return // no cgroups to have a limit
	}
	if err != nil {
		log.Warn("memory limit: the cgroup's cannot be read, so the Go runtime has none (GOMEMLIMIT sets one)", "err", err)
		return
	}
	if limit == 0 {
		log.Debug("memory limit: the cgroup has none")
		return
	}
	goLimit := limit / 100 * GoPercent
	setLimit(goLimit)
	log.Info("memory limit set from the cgroup", "cgroup_limit", limit, "go_limit", goLimit, "cgroup", cgroup)
}

// Find returns the memory limit in bytes of the cgroup the process runs in,
// as the files under root say (root is "/" but in tests), and the directory
// of the cgroup that sets it: the smallest limit from the process's cgroup
// up to the root of the cgroup file system's mount, since a limit on a
// parent (a pod's) binds its children (the pod's containers) too. No limit
// anywhere is 0 and no error. A file that cannot be read (/proc/self/cgroup
// missing too: cgroups are Linux's) or does not say what it should is an
// error that names it and what it says.
func Find(root string) (limit int64, cgroup string, err error) {
	return tree{fsys: os.DirFS(root), root: root}.find()
}

// tree is a file system whose paths are written as from its root
// ("/proc/self/cgroup"), and named in errors as the process sees them.
type tree struct {
	fsys fs.FS
	root string
}

func (t tree) find() (int64, string, error) {
	const cgroupFile, mountinfoFile = "/proc/self/cgroup", "/proc/self/mountinfo"
	b, err := t.read(cgroupFile)
	if err != nil {
		return 0, "", err
	}
	h, ok, err := memoryHierarchy(string(b))
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", t.name(cgroupFile), err)
	}
	if !ok {
		return 0, "", nil // no hierarchy has the memory controller: nothing limits memory
	}
	b, err = t.read(mountinfoFile)
	if err != nil {
		return 0, "", err
	}
	m, err := mountOf(string(b), h)
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", t.name(mountinfoFile), err)
	}
	return t.smallestLimit(h, m)
}

// hierarchy is the cgroup of the process in the hierarchy that has the
// memory controller: v2 (unified) or v1.
type hierarchy struct {
	v2   bool
	path string // as /proc/self/cgroup says: absolute, within the hierarchy
}

// memoryHierarchy reads /proc/self/cgroup: lines "id:controllers:path".
// The line of v1's memory controller wins, since a controller belongs to
// one hierarchy only: a host with both (v1 memory beside a v2 mount that
// has no memory controller, "hybrid") limits memory through v1. Otherwise
// the unified line "0::path" is the one. ok is false when there is neither.
func memoryHierarchy(s string) (h hierarchy, ok bool, err error) {
	var v1, v2 string // their lines
	for line := range strings.Lines(s) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		id, rest, ok1 := strings.Cut(line, ":")
		controllers, _, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2:
			return hierarchy{}, false, fmt.Errorf("line %s is not id:controllers:path", quote(line))
		case id == "0" && controllers == "":
			v2 = line
		case hasItem(controllers, "memory") && v1 == "":
			v1 = line
		}
	}
	line := v1
	if line == "" {
		line = v2
	}
	if line == "" {
		return hierarchy{}, false, nil
	}
	_, rest, _ := strings.Cut(line, ":")
	_, p, _ := strings.Cut(rest, ":")
	if !validPath(p) {
		return hierarchy{}, false, fmt.Errorf("cgroup path %s (line %s) is not a path within the hierarchy", quote(p), quote(line))
	}
	return hierarchy{v2: v1 == "", path: p}, true, nil
}

// validPath: absolute, clean and not above the hierarchy's root. A process
// in a cgroup outside its cgroup namespace sees a path with "..", which no
// mount of the namespace holds.
func validPath(p string) bool {
	return len(p) <= maxPathBytes && strings.HasPrefix(p, "/") && path.Clean(p) == p
}

// mount is the mount of a cgroup hierarchy: the directory of the
// hierarchy's cgroup root (as mounted, the cgroup at mountpoint) and where.
type mount struct {
	root, point string
}

// mountOf finds in /proc/self/mountinfo the mount that holds the cgroup of
// h: of the hierarchy's type (cgroup2; cgroup with the memory option) and
// whose root is the cgroup or one of its parents. Containers often mount
// their own cgroup as the root, and bind mounts can show one hierarchy more
// than once: the deepest root wins, then the last line (a later mount on
// the same point hides an earlier one).
func mountOf(s string, h hierarchy) (mount, error) {
	var best mount
	found := false
	for line := range strings.Lines(s) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			return mount{}, fmt.Errorf("line %s is not a mount (root, mountpoint, options, -, type, source, options)", quote(line))
		}
		fstype, superOptions := f[sep+1], f[sep+3]
		if h.v2 && fstype != "cgroup2" || !h.v2 && (fstype != "cgroup" || !hasItem(superOptions, "memory")) {
			continue
		}
		m := mount{root: unescape(f[3]), point: unescape(f[4])}
		if !within(h.path, m.root) || found && len(m.root) < len(best.root) {
			continue
		}
		if !strings.HasPrefix(m.point, "/") {
			return mount{}, fmt.Errorf("mount point %s (line %s) is not an absolute path", quote(m.point), quote(line))
		}
		m.point = path.Clean(m.point)
		best, found = m, true
	}
	if !found {
		kind := "cgroup2 (unified)"
		if !h.v2 {
			kind = "cgroup with the memory controller"
		}
		return mount{}, fmt.Errorf("no %s mount holds the process's cgroup %s", kind, quote(h.path))
	}
	return best, nil
}

// within: the cgroup p is root or below it.
func within(p, root string) bool {
	return root == "/" || p == root || strings.HasPrefix(p, root) && p[len(root)] == '/'
}

// smallestLimit walks from the process's cgroup up to the mount's root and
// returns the smallest limit on the way, with its directory.
func (t tree) smallestLimit(h hierarchy, m mount) (int64, string, error) {
	file := "memory.limit_in_bytes"
	if h.v2 {
		file = "memory.max"
	}
	dir := m.point
	if m.root != "/" {
		dir = path.Join(dir, h.path[len(m.root):])
	} else {
		dir = path.Join(dir, h.path)
	}
	// The cgroup's own directory must be there: if it is not, the mount
	// seen is not the process's and the limits under it are not its own.
	if fi, err := fs.Stat(t.fsys, fsPath(dir)); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return 0, "", fmt.Errorf("the process's cgroup %s, mounted from %s at %s: %w",
			quote(h.path), quote(m.root), quote(m.point), t.fail(dir, err))
	}
	var limit int64
	var where string
	for {
		l, err := t.limit(path.Join(dir, file))
		if err != nil {
			return 0, "", err
		}
		if l > 0 && (limit == 0 || l < limit) {
			limit, where = l, t.name(dir)
		}
		if len(dir) <= len(m.point) {
			return limit, where, nil
		}
		dir = path.Dir(dir)
	}
}

// limit reads one limit file: bytes, or none (0) when it says "max" (v2),
// a number too large to be a limit (v1), or is not there (the root cgroup
// of v2, or a cgroup whose parent does not delegate the memory controller).
func (t tree) limit(p string) (int64, error) {
	b, err := t.read(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s: %s is not a memory limit (bytes, or max)", t.name(p), quote(s))
	}
	if n >= unlimitedFrom {
		return 0, nil
	}
	return int64(n), nil
}

// read returns a small file's content; an error names the file.
func (t tree) read(p string) ([]byte, error) {
	f, err := t.fsys.Open(fsPath(p))
	if err != nil {
		return nil, t.fail(p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, t.fail(p, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: longer than %d bytes", t.name(p), maxFileBytes)
	}
	return b, nil
}

// fail names the file once: an fs.PathError's own name is relative to root.
func (t tree) fail(p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: %w", t.name(p), err)
}

// name is the file p as the process sees it.
func (t tree) name(p string) string {
	return filepath.Join(t.root, filepath.FromSlash(p))
}

// fsPath is p, absolute within the tree, as an fs.FS path.
func fsPath(p string) string {
	if p = strings.TrimPrefix(p, "/"); p == "" {
		return "."
	}
	return p
}

// hasItem: item is one of the comma-separated list's.
func hasItem(list, item string) bool {
	for s := range strings.SplitSeq(list, ",") {
		if s == item {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space, \011, \012,
// \134 for a backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1], '3') && isOctal(s[i+2], '7') && isOctal(s[i+3], '7') {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c, max byte) bool { return '0' <= c && c <= max }

// quote quotes a value for an error, cut short: files can be long.
func quote(s string) string {
	const most = 120
	if len(s) > most {
		return strconv.Quote(s[:most]) + "…"
	}
	return strconv.Quote(s)
}
