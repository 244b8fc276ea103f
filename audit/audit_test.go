package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

const sessionID = "kc8BekaiXiPXI8INYiIAN2_WqHTUanGT" // a cookie value: never in clear

var (
	at    = time.Date(2030, 1, 2, 8, 1, 0, 500_000_000, time.FixedZone("CET", 3600))
	scope = authz.ScopeDigest("https://idp.example", "alice", "sid-1")
)

func event(cause authz.EndCause) authz.SessionEvent {
	return authz.SessionEvent{At: at, Policy: "app", Subject: "alice", SessionID: sessionID, Scope: scope,
		Cause: cause, SourceAddr: "10.0.0.7", RequestID: "req-1"}
}

func lines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func TestEvents(t *testing.T) {
	for _, hashed := range []bool{false, true} {
		var buf bytes.Buffer
		l := New(&buf, Options{HashSubject: hashed})
		l.Decided(&authz.Decision{Allow: true, Policy: "app"}, time.Millisecond) // not an audit event
		l.SessionStarted(event(authz.CauseNone))
		l.SessionReauthenticated(event(authz.CauseNone))
		l.SessionEnded(event(authz.CauseIdle))
		mismatch := event(authz.CauseIdentityMismatch)
		mismatch.Presented = "mallory"
		l.SessionEnded(mismatch)

		alice, mallory := "alice", "mallory"
		if hashed {
			alice, mallory = "2bd806c97f0e00af1a1fc3328fa763a9", Hash("mallory")
		}
		base := func(level, ev string) map[string]any {
			return map[string]any{"time": "2030-01-02T07:01:00.5Z", "level": level, "msg": "audit", "event": ev,
				"policy": "app", "subject": alice, "session": Hash(sessionID), "scope": Hash(string(scope[:])),
				"source": "10.0.0.7", "request_id": "req-1"}
		}
		idle := base("INFO", "session_ended")
		idle["cause"] = "idle"
		mis := base("WARN", "session_ended")
		mis["cause"], mis["presented_subject"] = "identity_mismatch", mallory
		started := base("INFO", "session_started")
		started["method"] = "token"
		want := []map[string]any{started, base("INFO", "session_reauthenticated"), idle, mis}
		if got := lines(t, buf.Bytes()); !reflect.DeepEqual(got, want) {
			t.Errorf("hash=%v:\n got %v\nwant %v", hashed, got, want)
		}
		if strings.Contains(buf.String(), sessionID) {
			t.Error("session id written in clear")
		}
		if hashed && strings.Contains(buf.String(), `"alice"`) {
			t.Error("subject written in clear with HashSubject")
		}
	}
}

func TestHash(t *testing.T) {
	// printf %s alice | sha256sum | cut -c1-32, as docs/operations.md says.
	if got := Hash("alice"); got != "2bd806c97f0e00af1a1fc3328fa763a9" {
		t.Errorf("Hash(alice) = %s", got)
	}
	if Hash("") != "" {
		t.Error(`Hash("") is not ""`)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteFailureIsReported(t *testing.T) {
	var got []error
	l := New(failingWriter{}, Options{OnError: func(err error) { got = append(got, err) }})
	l.SessionStarted(event(authz.CauseNone))
	l.SessionEnded(event(authz.CauseSignedOut))
	if len(got) != 2 {
		t.Errorf("OnError called %d times, want 2", len(got))
	}
}

// TestFileConcurrentWrites: events written from many goroutines land as
// whole lines, none lost or interleaved.
func TestFileConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l := New(f, Options{})
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				l.SessionStarted(event(authz.CauseNone))
			}
		})
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lines(t, b)); n != writers*each {
		t.Errorf("%d lines, want %d", n, writers*each)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := f.Write([]byte("x\n")); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestFileReopen: after logrotate moves the file, Reopen sends later events
// to a new file at the path; earlier ones stay in the moved file.
func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := New(f, Options{})
	l.SessionStarted(event(authz.CauseNone))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.SessionEnded(event(authz.CauseIdle)) // before the signal: still the moved file
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.SessionEnded(event(authz.CauseSignedOut))

	read := func(p string) []string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var evs []string
		for _, m := range lines(t, b) {
			cause, _ := m["cause"].(string)
			evs = append(evs, m["event"].(string)+"/"+cause)
		}
		return evs
	}
	if got, want := read(path+".1"), []string{"session_started/", "session_ended/idle"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rotated file: %v, want %v", got, want)
	}
	if got, want := read(path), []string{"session_ended/signed_out"}; !reflect.DeepEqual(got, want) {
		t.Errorf("new file: %v, want %v", got, want)
	}

	// A path that cannot be opened keeps the current file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err == nil {
		t.Error("Reopen onto a directory succeeded")
	}
	if _, err := f.Write([]byte("{}\n")); err != nil {
		t.Errorf("write after a failed Reopen: %v", err)
	}
}

// TestHashSubjects: the operator log's ReplaceAttr hashes every string
// attribute named subject or *_subject, inside groups too, and nothing else.
func TestHashSubjects(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{ReplaceAttr: HashSubjects}))
	log.With("subject", "alice").WithGroup("g").Warn("x", "session_subject", "bob", "token_subject", "carol",
		"policy", "app", "subjects", "dave", "empty_subject", "")
	out := b.String()
	for _, sub := range []string{"alice", "bob", "carol"} {
		if strings.Contains(out, `"`+sub+`"`) || !strings.Contains(out, Hash(sub)) {
			t.Errorf("%s not hashed: %s", sub, out)
		}
	}
	if !strings.Contains(out, `"policy":"app"`) || !strings.Contains(out, `"subjects":"dave"`) || !strings.Contains(out, `"empty_subject":""`) {
		t.Errorf("other attributes changed: %s", out)
	}
}
