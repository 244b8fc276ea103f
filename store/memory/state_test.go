package memory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// openState opens a store on the state file path with the test clock and
// no periodic snapshot, so that only what the test does writes one.
func openState(t *testing.T, path string, clock *fakeClock, mod ...func(*Options)) *Store {
	t.Helper()
	// Journals of the least length: each load reads a journal's unwritten
	// rest to tell it from damage.
	o := Options{Clock: clock, StateFile: path, SnapshotInterval: -1, ActivityInterval: -1, JournalLimit: minJournalLength}
	for _, m := range mod {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// crash stops s as kill -9 would as far as the files are concerned: no
// snapshot, the journal left as the last End wrote it.
func crash(s *Store) {
	st := s.state
	s.closed.Store(true)
	close(s.done)
	close(st.stop)
	<-st.loopEnd
	close(st.wstop)
	<-st.wEnd
	st.unlock()
	s.hot.Close()
	s.cold.Close()
}

var signOut = authz.End{Cause: authz.CauseSignedOut, At: t0 + 100, KeepUntil: t0 + 24*hourMs}

func mustEnd(t *testing.T, s *Store, id string, scope authz.Digest, e authz.End) {
	t.Helper()
	if _, _, err := s.End(ctx, "crm", id, scope, e); err != nil {
		t.Fatalf("End(%q): %v", id, err)
	}
}

func mustBegin(t *testing.T, s *Store, r *authz.Session) {
	t.Helper()
	if err := s.Begin(ctx, r); err != nil {
		t.Fatalf("Begin(%q): %v", r.ID, err)
	}
}

// wantEnded asserts that id is ended with cause and its scope ended at at.
func wantEnded(t *testing.T, s *Store, id string, scope authz.Digest, cause authz.EndCause, at int64) {
	t.Helper()
	l := mustLoad(t, s, id, scope)
	if !l.SessionFound || !l.Session.Ended() || l.Session.Cause != cause {
		t.Errorf("session %s = %+v (found %v); want ended with %v", id, l.Session, l.SessionFound, cause)
	}
	if !l.ScopeFound || l.Scope.EndedAt < at {
		t.Errorf("scope of %s = %+v (found %v); want ended at %d", id, l.Scope, l.ScopeFound, at)
	}
}

func TestStateGracefulRestartKeepsEverything(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock)
	live, gone := newSession("live", alice), newSession("gone", bob)
	mustBegin(t, s, live)
	mustBegin(t, s, gone)
	if _, _, err := s.Touch(ctx, "crm", "live", authz.Touch{LastActivity: t0 + 500}); err != nil {
		t.Fatal(err)
	}
	mustEnd(t, s, "gone", bob, signOut)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if names := stateFiles(t, path); names != "state state.journal.2 state.lock" {
		t.Errorf("files after Close = %q, want the snapshot, the journal it names (empty) and the lock", names)
	}

	s = openState(t, path, clock)
	defer s.Close()
	l := mustLoad(t, s, "live", alice)
	want := *live
	want.LastActivity = t0 + 500
	if !l.SessionFound || l.Session != want || l.Scope.Current != "live" {
		t.Errorf("live session after restart = %+v, scope %+v; want %+v", l.Session, l.Scope, want)
	}
	wantEnded(t, s, "gone", bob, authz.CauseSignedOut, signOut.At)
}

func stateFiles(t *testing.T, path string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestStateCrashKeepsEveryEnd: without Close, every End that returned is
// still there; what Begin and Touch did since the last snapshot is not (by
// design: a client opens a new session with the same token).
func TestStateCrashKeepsEveryEnd(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock)
	mustBegin(t, s, newSession("before", alice))
	if err := s.Close(); err != nil { // snapshot holds "before"
		t.Fatal(err)
	}
	s = openState(t, path, clock)
	causes := []authz.EndCause{authz.CauseSignedOut, authz.CauseIdle, authz.CauseAbsolute, authz.CauseIdentityMismatch}
	for i, cause := range causes {
		id := fmt.Sprintf("s%d", i)
		mustBegin(t, s, newSession(id, authz.ScopeDigest("https://idp", id, "")))
		mustEnd(t, s, id, authz.ScopeDigest("https://idp", id, ""), authz.End{Cause: cause, At: t0 + int64(i) + 1, KeepUntil: t0 + hourMs})
	}
	mustEnd(t, s, "", bob, signOut) // a scope end without a session
	mustBegin(t, s, newSession("after", bob))
	crash(s)

	s = openState(t, path, clock)
	defer s.Close()
	for i, cause := range causes {
		id := fmt.Sprintf("s%d", i)
		wantEnded(t, s, id, authz.ScopeDigest("https://idp", id, ""), cause, t0+int64(i)+1)
	}
	if l := mustLoad(t, s, "before", bob); !l.SessionFound || l.Session.Ended() || l.Scope.EndedAt != signOut.At {
		t.Errorf("after the crash: before = %+v, bob's scope = %+v", l.Session, l.Scope)
	}
	if l := mustLoad(t, s, "after", bob); l.SessionFound {
		t.Errorf("a session begun after the last snapshot survived a crash: %+v (fine, but the test assumed otherwise)", l.Session)
	}
}

// journalWith writes the store's journal as a crash would leave it, with
// tail written after its last frame, and returns the journal's name and
// where its frames ended.
func journalWith(t *testing.T, path string, clock *fakeClock, tail []byte) (string, int64) {
	t.Helper()
	s := openState(t, path, clock)
	mustBegin(t, s, newSession("s1", alice))
	mustEnd(t, s, "s1", alice, signOut)
	name := s.state.journalName(s.state.n)
	crash(s)
	end := s.state.size
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(tail, end); err != nil {
		t.Fatal(err)
	}
	return name, end
}

// TestStateTornTail: an End cut short by a crash (never answered) is
// ignored; the ends before it are kept.
func TestStateTornTail(t *testing.T) {
	frame := func() []byte {
		b, start := reserveFrame(nil)
		return closeFrame(appendPair(b, sessionKey("crm", "x"), []byte("whatever")), start)
	}()
	for name, tail := range map[string][]byte{
		"half a header":   frame[:3],
		"header only":     frame[:frameHeader],
		"half a payload":  frame[:len(frame)-2],
		"zeros":           make([]byte, 4096),
		"bad crc at end":  append(append([]byte(nil), frame[:len(frame)-1]...), frame[len(frame)-1]^1),
		"garbage + zeros": append([]byte{0, 0, 0, 9, 1, 2, 3, 4, 5}, make([]byte, 100)...),
	} {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			path := filepath.Join(t.TempDir(), "state")
			journalWith(t, path, clock, tail)
			s := openState(t, path, clock)
			defer s.Close()
			wantEnded(t, s, "s1", alice, authz.CauseSignedOut, signOut.At)
		})
	}
}

// TestStateDamageFailsStart: damage that is not a torn tail may hide ends,
// so the store refuses to start rather than revive sessions (S3).
func TestStateDamageFailsStart(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	name, end := journalWith(t, path, clock, nil)
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	// Two copies of the End's frame, the first one damaged; the journal at
	// its created length.
	head := b[:len(journalMagic)+journalHeader]
	frame := b[len(head):end]
	bad := append([]byte(nil), frame...)
	bad[len(bad)-1] ^= 0xff
	if err := os.WriteFile(name, append(append(append([]byte(nil), head...), bad...), frame...), 0o600); err != nil {
		t.Fatal(err)
	}
	truncate(t, name, int64(len(b)))
	if s, err := New(Options{Clock: clock, StateFile: path}); err == nil {
		s.Close()
		t.Fatal("started on a damaged journal")
	} else if !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "Restore the files from a backup") {
		t.Errorf("error = %v", err)
	}

	// So does a snapshot that is not one.
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(name)
	if s, err := New(Options{Clock: clock, StateFile: path}); err == nil {
		s.Close()
		t.Fatal("started on a snapshot that is not one")
	} else if !strings.Contains(err.Error(), "no sessiongate header") {
		t.Errorf("error = %v", err)
	}
}

func TestStateLockedByAnotherStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, newClock())
	defer s.Close()
	if s2, err := New(Options{StateFile: path}); err == nil {
		s2.Close()
		t.Fatal("two stores opened one state file")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error = %v", err)
	}
}

func TestStateMissingDirectory(t *testing.T) {
	if s, err := New(Options{StateFile: filepath.Join(t.TempDir(), "no", "such", "dir", "state")}); err == nil {
		s.Close()
		t.Fatal("opened a state file in a missing directory")
	}
}

// TestStateCompactionUnderLoad: with a tiny journal limit, snapshots run
// again and again while Ends keep coming; after a crash every End that
// returned is there, and the old journals are gone.
func TestStateCompactionUnderLoad(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock, func(o *Options) { o.JournalLimit = 512 })
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				scope := authz.ScopeDigest("https://idp", id, "")
				if err := s.Begin(ctx, newSession(id, scope)); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := s.End(ctx, "crm", id, scope, authz.End{Cause: authz.CauseSignedOut, At: t0 + 1, KeepUntil: t0 + hourMs}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitFor(t, "a compaction", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	if js, _ := s.state.journals(); len(js) > 3 {
		t.Errorf("%d journals left: compaction does not delete them", len(js))
	}
	crash(s)
	s = openState(t, path, clock)
	defer s.Close()
	for w := range workers {
		for i := range each {
			id := fmt.Sprintf("w%d-%d", w, i)
			wantEnded(t, s, id, authz.ScopeDigest("https://idp", id, ""), authz.CauseSignedOut, t0+1)
		}
	}
}

// diskFull is a file system with a byte budget shared by every file it
// opens; past it, writes fail with ENOSPC, as on a full disk.
type diskFull struct{ left atomic.Int64 }

func (d *diskFull) open(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &budgetFile{File: f, d: d}, nil
}

type budgetFile struct {
	*os.File
	d *diskFull
}

func (f *budgetFile) WriteAt(b []byte, off int64) (int, error) {
	if f.d.left.Add(-int64(len(b))) < 0 {
		f.d.left.Add(int64(len(b)))
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(b, off)
}

func (f *budgetFile) Write(b []byte) (int, error) {
	if f.d.left.Add(-int64(len(b))) < 0 {
		f.d.left.Add(int64(len(b)))
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(b)
}

// TestStateDiskFull: an End that cannot be journaled is not acknowledged
// (an error the engine answers with store_unavailable, and not one that a
// fail-open policy would wave through), yet this process refuses the
// session at once; once there is room again, the background snapshot makes
// that end durable and Ends are acknowledged again.
func TestStateDiskFull(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	disk := &diskFull{}
	disk.left.Store(1 << 20)
	s := openState(t, path, clock, func(o *Options) { o.openFile = disk.open })
	for _, id := range []string{"a", "b", "c"} {
		mustBegin(t, s, newSession(id, authz.ScopeDigest("https://idp", id, "")))
	}
	mustEnd(t, s, "a", authz.ScopeDigest("https://idp", "a", ""), signOut)

	disk.left.Store(0)
	bScope := authz.ScopeDigest("https://idp", "b", "")
	_, _, err := s.End(ctx, "crm", "b", bScope, signOut)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("End on a full disk = %v, want an ENOSPC error", err)
	}
	if errors.Is(err, authz.ErrStoreUnavailable) {
		t.Errorf("a durability failure wraps ErrStoreUnavailable, so fail-open policies would allow: %v", err)
	}
	wantEnded(t, s, "b", bScope, authz.CauseSignedOut, signOut.At) // refused here at once
	if _, _, err := s.End(ctx, "crm", "c", authz.ScopeDigest("https://idp", "c", ""), signOut); err == nil {
		t.Fatal("End acknowledged while the journal is broken")
	}
	if err := s.Ready(ctx); err == nil || !strings.Contains(err.Error(), "no space left") || s.StateFileErr() == nil {
		t.Errorf("Ready while ends are refused = %v (state file: %v), want not ready, saying why", err, s.StateFileErr())
	}

	disk.left.Store(1 << 20) // room again: the retried compaction recovers
	waitFor(t, "Ends acknowledged again", func() bool {
		_, _, err := s.End(ctx, "crm", "c", authz.ScopeDigest("https://idp", "c", ""), signOut)
		return err == nil
	})
	waitFor(t, "ready again", func() bool { return s.Ready(ctx) == nil && s.StateFileErr() == nil })
	crash(s)
	s = openState(t, path, clock)
	defer s.Close()
	for _, id := range []string{"a", "b", "c"} {
		wantEnded(t, s, id, authz.ScopeDigest("https://idp", id, ""), authz.CauseSignedOut, signOut.At)
	}
}

// TestStateSnapshotFailureKeepsJournals: a snapshot that cannot be written
// at Close deletes nothing; the next start replays the journals.
func TestStateSnapshotFailureKeepsJournals(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	disk := &diskFull{}
	disk.left.Store(1 << 20)
	s := openState(t, path, clock, func(o *Options) { o.openFile = disk.open })
	mustBegin(t, s, newSession("s1", alice))
	mustEnd(t, s, "s1", alice, signOut)
	disk.left.Store(int64(len(journalMagic) + journalHeader)) // a new journal, but no snapshot
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Errorf("Close on a full disk = %v, want the snapshot's error", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("a snapshot was written on a full disk")
	}
	s = openState(t, path, clock)
	defer s.Close()
	wantEnded(t, s, "s1", alice, authz.CauseSignedOut, signOut.At)
}

// FuzzReadFrames: whatever a state file holds, reading it never panics,
// and a file that reads cleanly still reads (at worst as a torn tail) when
// cut short anywhere, which is what a crash during an append leaves.
func FuzzReadFrames(f *testing.F) {
	b, start := reserveFrame([]byte(journalMagic))
	b = appendPair(b, sessionKey("crm", "s1"), []byte("value"))
	good := closeFrame(b, start)
	f.Add(good, 3)
	f.Add(good[:len(good)-3], 0)
	f.Add(append(append([]byte(nil), good...), 0, 0, 0, 0), 20)
	f.Add([]byte(journalMagic+"\xff\xff\xff\xff\x00\x00\x00\x00"), 1)
	f.Add([]byte(snapshotMagic), 0)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		read := func(b []byte) error {
			return readFrames(bytes.NewReader(b), journalMagic, func(k string, v []byte) error {
				if len(k)+len(v) > len(b) {
					t.Fatalf("pair larger than the input")
				}
				return nil
			})
		}
		if read(data) != nil || len(data) == 0 {
			return
		}
		cut = len(journalMagic) + abs(cut)%max(1, len(data)-len(journalMagic))
		if err := read(data[:min(cut, len(data))]); err != nil && !errors.Is(err, errTornTail) {
			t.Fatalf("a clean file cut at %d: %v", cut, err)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// BenchmarkEndJournaled measures End with a state file: every End is
// written and fsynced before it returns, concurrent Ends sharing a write.
func BenchmarkEndJournaled(b *testing.B) {
	for _, ends := range []int{1, 64} {
		b.Run(fmt.Sprintf("concurrent=%d", ends), func(b *testing.B) { benchmarkEndJournaled(b, ends) })
	}
}

func benchmarkEndJournaled(b *testing.B, concurrent int) {
	clock := newClock()
	s, err := New(Options{Clock: clock, StateFile: filepath.Join(b.TempDir(), "state"), SnapshotInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	b.SetParallelism(max(1, concurrent/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("%022d", n.Add(1))
			scope := authz.ScopeDigest("https://idp", id, "")
			if err := s.Begin(ctx, newSession(id, scope)); err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.End(ctx, "crm", id, scope, signOut); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSnapshot100k measures writing and loading the snapshot of 100,000
// sessions.
func BenchmarkSnapshot100k(b *testing.B) {
	clock := newClock()
	path := filepath.Join(b.TempDir(), "state")
	s, err := New(Options{Clock: clock, StateFile: path, SnapshotInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100_000 {
		id := fmt.Sprintf("%032d", i)
		if err := s.Begin(ctx, newSession(id, authz.ScopeDigest("https://idp", id, ""))); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			if err := s.state.compactNow(); err != nil {
				b.Fatal(err)
			}
		}
	})
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(path); err == nil {
		b.Logf("snapshot of 100k sessions: %.1f MiB", float64(fi.Size())/(1<<20))
	}
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			s, err := New(Options{Clock: clock, StateFile: path, SnapshotInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			crash(s) // no snapshot on the way out
			b.StartTimer()
		}
	})
}
