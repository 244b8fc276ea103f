package audit

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// blockingWriter holds every Write until release is closed; entered gets
// one value per Write.
type blockingWriter struct {
	entered, release chan struct{}
	mu               sync.Mutex
	buf              bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestQueueNeverWaitsForItsDestination: with the destination blocked, events
// are queued up to the capacity and then dropped with ErrQueueFull, each
// reported; none waits. Close writes out the queued ones, in order.
func TestQueueNeverWaitsForItsDestination(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}, 16), release: make(chan struct{})}
	q := NewQueue(w, 3, nil)
	var errs []error
	l := New(q, Options{OnError: func(err error) { errs = append(errs, err) }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 6 {
			if i == 1 {
				<-w.entered // the first event is with the writer
			}
			l.SessionStarted(authz.SessionEvent{At: time.Unix(int64(i), 0), Policy: "app", Subject: fmt.Sprint("user", i), SessionID: "s"})
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("an event waited for a blocked destination")
	}
	// One is with the writer, three are queued, two are dropped.
	if len(errs) != 2 || !errors.Is(errs[0], ErrQueueFull) || !errors.Is(errs[1], ErrQueueFull) {
		t.Fatalf("errors %v, want two ErrQueueFull", errs)
	}
	close(w.release)
	q.Close()
	lines := bytes.Split(bytes.TrimSpace(w.buf.Bytes()), []byte("\n"))
	if len(lines) != 4 {
		t.Fatalf("%d lines written, want 4:\n%s", len(lines), w.buf.String())
	}
	for i, line := range lines {
		if want := fmt.Sprintf(`"subject":"user%d"`, i); !bytes.Contains(line, []byte(want)) {
			t.Errorf("line %d is %s, want %s (in order)", i, line, want)
		}
	}
	if _, err := q.Write([]byte("late\n")); !errors.Is(err, ErrQueueClosed) {
		t.Errorf("Write after Close: %v, want ErrQueueClosed", err)
	}
}

// TestQueueReportsWriteFailures: a write that fails in the queue's goroutine
// is reported to onError.
func TestQueueReportsWriteFailures(t *testing.T) {
	var mu sync.Mutex
	var errs []error
	q := NewQueue(failingWriter{}, 8, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	New(q, Options{}).SessionEnded(authz.SessionEvent{At: time.Unix(1, 0), Policy: "app", SessionID: "s"})
	q.Close()
	if len(errs) != 1 {
		t.Fatalf("errors %v, want the failed write", errs)
	}
}
