package memory

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// rotateOnly switches s to a new journal without a snapshot, as a
// compaction does before its snapshot (and as a crash between the two
// leaves it).
func rotateOnly(t *testing.T, s *Store) {
	t.Helper()
	reply := make(chan rotation, 1)
	s.state.rotate <- reply
	if r := <-reply; r.err != nil {
		t.Fatal(r.err)
	}
}

// damagedState leaves a state file as a crash would: a snapshot naming
// journal 2, journals 2 and 3 with ten answered sign-outs each, and returns
// the sessions' ids and scopes.
func damagedState(t *testing.T, path string, clock *fakeClock) map[string]authz.Digest {
	t.Helper()
	s := openState(t, path, clock)
	if err := s.state.compactNow(); err != nil { // snapshot, next = 2
		t.Fatal(err)
	}
	ended := map[string]authz.Digest{}
	for j := range 2 {
		for i := range 10 {
			id := fmt.Sprintf("j%d-s%d", j, i)
			scope := authz.ScopeDigest("https://idp", id, "")
			mustBegin(t, s, newSession(id, scope))
			mustEnd(t, s, id, scope, signOut)
			ended[id] = scope
		}
		if j == 0 {
			rotateOnly(t, s) // journal 3
		}
	}
	crash(s)
	return ended
}

// TestStateJournalDamageRefusesToStart: every damage to the state file that
// a crash cannot leave, and that could hide answered ends, stops the start
// with a message that says what to do; the intact files start and keep
// every end.
func TestStateJournalDamageRefusesToStart(t *testing.T) {
	for name, tc := range map[string]struct {
		damage func(t *testing.T, path string)
		want   string // in the error; "" starts
	}{
		"intact": {func(*testing.T, string) {}, ""},
		"journal emptied": {func(t *testing.T, p string) {
			truncate(t, p+".journal.3", 0)
		}, "no sessiongate header (0 bytes of it)"},
		"journal header cut": {func(t *testing.T, p string) {
			truncate(t, p+".journal.3", int64(len(journalMagic)+5))
		}, "header is cut or damaged"},
		"earlier journal cut to half": {func(t *testing.T, p string) {
			truncate(t, p+".journal.2", size(t, p+".journal.2")/2)
		}, "journal 2 is shorter than it was created"},
		"earlier journal emptied of its records": {func(t *testing.T, p string) {
			truncate(t, p+".journal.2", int64(len(journalMagic)+journalHeader))
		}, "journal 2 is shorter than it was created"},
		"earlier journal's records zeroed at its created length": {func(t *testing.T, p string) {
			b, err := os.ReadFile(p + ".journal.2")
			if err != nil {
				t.Fatal(err)
			}
			clear(b[len(journalMagic)+journalHeader:])
			if err := os.WriteFile(p+".journal.2", b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "journal 2 was cut short or changed after journal 3 began"},
		"journal deleted, snapshot kept": {func(t *testing.T, p string) {
			remove(t, p+".journal.2")
		}, "journal 2 is missing"},
		"newest journal deleted": {func(t *testing.T, p string) {
			remove(t, p+".journal.3")
		}, "journal 3, the newest, is missing"},
		"newest journal cut to half": {func(t *testing.T, p string) {
			truncate(t, p+".journal.3", size(t, p+".journal.3")/2)
		}, "journal 3 is shorter than it was created"},
		"newest journal cut after its records": {func(t *testing.T, p string) {
			truncate(t, p+".journal.3", 4096)
		}, "journal 3 is shorter than it was created"},
		"every journal deleted": {func(t *testing.T, p string) {
			remove(t, p+".journal.2")
			remove(t, p+".journal.3")
		}, "journal 2 is missing"},
		"snapshot deleted": {func(t *testing.T, p string) {
			remove(t, p)
		}, "the snapshot is missing"},
		"everything but the lock deleted": {func(t *testing.T, p string) {
			remove(t, p)
			remove(t, p+".journal.2")
			remove(t, p+".journal.3")
		}, "the snapshot and every journal are gone"},
	} {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			path := filepath.Join(t.TempDir(), "state")
			ended := damagedState(t, path, clock)
			tc.damage(t, path)
			s, err := New(Options{Clock: clock, StateFile: path, SnapshotInterval: -1, ActivityInterval: -1})
			if tc.want != "" {
				if err == nil {
					s.Close()
					t.Fatal("started on damaged files")
				}
				if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Restore the files from a backup") {
					t.Fatalf("error = %v, want %q and what to do", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for id, scope := range ended {
				wantEnded(t, s, id, scope, authz.CauseSignedOut, signOut.At)
			}
		})
	}
}

// TestStateActivitySurvivesACrash: the activity and the sessions begun
// since the last snapshot are journaled every ActivityInterval, so that a
// crash does not end sessions in use as idle.
func TestStateActivitySurvivesACrash(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock)
	old := newSession("old", alice)
	mustBegin(t, s, old)
	if err := s.Close(); err != nil { // the snapshot: old, last active at its start
		t.Fatal(err)
	}
	// An interval the test never reaches: it flushes by hand.
	s = openState(t, path, clock, func(o *Options) { o.ActivityInterval = time.Hour })
	if _, _, err := s.Touch(ctx, "crm", "old", authz.Touch{LastActivity: t0 + 5000}); err != nil {
		t.Fatal(err)
	}
	fresh := newSession("fresh", bob)
	mustBegin(t, s, fresh)
	if err := s.state.flushActivity(); err != nil { // what the ticker does
		t.Fatal(err)
	}
	crash(s)
	s = openState(t, path, clock)
	defer s.Close()
	if l := mustLoad(t, s, "old", alice); !l.SessionFound || l.Session.LastActivity != t0+5000 {
		t.Errorf("after a crash: %+v, want last activity %d", l.Session, t0+5000)
	}
	if l := mustLoad(t, s, "fresh", bob); !l.SessionFound || l.Session != *fresh || l.Scope.Current != "fresh" {
		t.Errorf("a session begun before the crash: %+v, scope %+v", l.Session, l.Scope)
	}
}

func truncate(t *testing.T, p string, n int64) {
	t.Helper()
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

func size(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func remove(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// TestStateReadsTheFormerFormat: files written before the headers existed
// (SGSNAP01, SGJRNL01, journals deleted when empty) still load, without the
// checks their format cannot support; the next files are of the new one.
func TestStateReadsTheFormerFormat(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	live, gone := newSession("live", alice), newSession("gone", bob)
	frame := func(magic string, rs ...*authz.Session) []byte {
		b, start := reserveFrame([]byte(magic))
		for _, r := range rs {
			v, err := r.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			b = appendPair(b, sessionKey("crm", r.ID), v)
		}
		return closeFrame(b, start)
	}
	ended := *gone
	ended.EndWith(signOut)
	for name, b := range map[string][]byte{
		path:                frame(snapshotMagicV1, live, gone),
		path + ".journal.7": frame(journalMagicV1, &ended),
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openState(t, path, clock)
	if l := mustLoad(t, s, "live", alice); !l.SessionFound || l.Session != *live {
		t.Errorf("live: %+v", l.Session)
	}
	if l := mustLoad(t, s, "gone", bob); !l.Session.Ended() {
		t.Errorf("gone: %+v", l.Session)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, clock)
	defer s.Close()
	if l := mustLoad(t, s, "gone", bob); !l.Session.Ended() {
		t.Errorf("gone after a restart in the new format: %+v", l.Session)
	}
}
