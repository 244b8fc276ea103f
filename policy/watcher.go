package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sessiongate/sessiongate/authz"
)

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	Options
	Logger *slog.Logger // default: discard
	// Debounce gathers a burst of file events into one reload. Default 250ms.
	Debounce time.Duration
	// PollInterval is how often the directory is fingerprinted as a fallback
	// for missed or unsupported file events, and for referenced files
	// (jwks_file) outside the watched directory. Default 5s.
	PollInterval time.Duration
	// OnReload, if set, is called after every load, the initial one
	// included, for metrics (policy_reloads_total and the last success
	// timestamp).
	OnReload func(ok bool, err error)
}

// Watcher keeps the policies of a directory current. It is an
// authz.PolicySource whose Set is swapped atomically on every successful
// reload; a reload that fails keeps the last good Set (S9: a broken change
// never takes the gate down or opens it).
type Watcher struct {
	dir  string
	opts WatcherOptions
	log  *slog.Logger
	cur  atomic.Pointer[Set]
	// watching is set while the directory has a file watch; the directory
	// being deleted or moved away ends it, and the poll sets it up again.
	watching atomic.Bool

	mu sync.Mutex // serialises reloads; guards the fields below
	// Fingerprints at the last load attempt: of the policy files, and of
	// the files the current Set references (jwks_file).
	filesSum, refsSum [sha256.Size]byte
	lastSuccess       time.Time
	lastErr           error
}

var _ authz.PolicySource = (*Watcher)(nil)

// NewWatcher loads dir and returns a Watcher serving it; it fails if that
// first load fails. Call Run to follow changes.
func NewWatcher(dir string, opts WatcherOptions) (*Watcher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	w := &Watcher{dir: dir, opts: opts, log: opts.Logger}
	if err := w.Reload(); err != nil {
		return nil, err
	}
	return w, nil
}

// Match implements authz.PolicySource with the current Set.
func (w *Watcher) Match(host string) *authz.Policy { return w.cur.Load().Match(host) }

// Current returns the Set in force.
func (w *Watcher) Current() *Set { return w.cur.Load() }

// LastReloadSuccess returns when a load last succeeded.
func (w *Watcher) LastReloadSuccess() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSuccess
}

// LastError returns the error of the latest load, nil if it succeeded.
func (w *Watcher) LastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// Reload loads the directory now, whether or not it changed (SIGHUP).
func (w *Watcher) Reload() error { return w.reload(true) }

// reload loads the directory if forced or if a fingerprint moved since the
// last attempt, so that event storms and the poll cost a hash rather than a
// reload, and a broken directory is reported once rather than on every
// tick. OnReload runs outside the lock, free to call the Watcher.
func (w *Watcher) reload(force bool) error {
	loaded, err := w.load(force)
	if loaded && w.opts.OnReload != nil {
		w.opts.OnReload(err == nil, err)
	}
	return err
}

func (w *Watcher) load(force bool) (loaded bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The policy files are fingerprinted before they are read, so that a
	// change racing with this load differs on the next check. Referenced
	// files are only known after the load; a change racing with that is
	// caught by the verifier's own periodic re-read.
	files := w.sumPolicyFiles()
	cur := w.cur.Load()
	if !force && cur != nil && files == w.filesSum && sumFiles(cur.refs) == w.refsSum {
		return false, nil
	}
	w.filesSum = files
	set, err := LoadDir(w.dir, w.opts.Options)
	if err != nil {
		w.lastErr = err
		// Problems name files, lines and fields, never token or key material.
		// The first load has nothing to keep: NewWatcher returns the error
		// and its caller says what happens instead.
		if cur != nil {
			w.log.Error("policy load failed; keeping the last good policies", "dir", w.dir, "err", err)
		}
	} else {
		w.cur.Store(set)
		w.lastErr, w.lastSuccess = nil, time.Now()
		w.log.Info("policies loaded", "dir", w.dir, "policies", set.Names())
		for _, warn := range set.Warnings() {
			w.log.Warn("policy: "+warn.Field+": "+warn.Msg, "file", warn.File)
		}
	}
	if cur := w.cur.Load(); cur != nil {
		w.refsSum = sumFiles(cur.refs)
	}
	return true, err
}

// Run follows changes until ctx is done. It watches the directory rather
// than the files, so that the atomic ..data symlink swap of a Kubernetes
// ConfigMap update is seen; every event (re)starts the debounce timer.
// Without file events (unsupported, or the watch failed) it still polls.
// A directory deleted or moved away takes its watch with it; the poll
// watches it again once it is back, so that edits apply on their events.
func (w *Watcher) Run(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("file events unavailable; polling only", "dir", w.dir, "err", err)
	} else {
		defer fw.Close()
		if err := fw.Add(w.dir); err != nil {
			w.log.Warn("cannot watch policy directory; polling only", "dir", w.dir, "err", err)
		} else {
			w.watching.Store(true)
		}
		events, errs = fw.Events, fw.Errors
	}
	// Changes made between the initial load and the watch have no event.
	_ = w.reload(false)
	debounce := time.NewTimer(w.opts.Debounce)
	debounce.Stop()
	defer debounce.Stop()
	poll := time.NewTicker(w.opts.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // closed: keep polling
				continue
			}
			if filepath.Clean(ev.Name) == filepath.Clean(w.dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				_ = fw.Remove(w.dir) // a moved directory's watch would follow it
				w.watching.Store(false)
			}
			debounce.Reset(w.opts.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.log.Warn("policy directory watch error", "dir", w.dir, "err", err)
		case <-debounce.C:
			_ = w.reload(false) // logged and reported through OnReload
		case <-poll.C:
			if fw != nil && !w.watching.Load() && fw.Add(w.dir) == nil {
				w.watching.Store(true)
				w.log.Info("watching the policy directory again", "dir", w.dir)
			}
			_ = w.reload(false) // logged and reported through OnReload
		}
	}
}

// sumPolicyFiles fingerprints the policy files of the directory; a listing
// problem contributes its text, so that its recovery is a change too.
func (w *Watcher) sumPolicyFiles() [sha256.Size]byte {
	files, errs := policyFiles(w.dir)
	sum := sumFiles(files)
	if len(errs) > 0 {
		sum = sha256.Sum256(append(sum[:], errs.Error()...))
	}
	return sum
}

// sumFiles fingerprints files by name, size, modification time and content.
// Policy and key files are small, and hashing content catches edits that
// keep size and mtime (same-second writes, restored backups).
func sumFiles(names []string) [sha256.Size]byte {
	h := sha256.New()
	for _, name := range names {
		fmt.Fprintf(h, "%q\n", name)
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(h, err)
			continue
		}
		if fi, err := f.Stat(); err == nil {
			fmt.Fprintln(h, fi.Size(), fi.ModTime().UnixNano())
		}
		if _, err := io.Copy(h, f); err != nil {
			fmt.Fprintln(h, err)
		}
		f.Close()
	}
	return [sha256.Size]byte(h.Sum(nil))
}
