package audit

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// QueueCapacity is how many events a Queue holds while its destination is
// slow: a few seconds of a sign-in storm, about a megabyte.
const QueueCapacity = 4096

var (
	// ErrQueueFull is the error of an event dropped because the
	// destination has not kept up with QueueCapacity events.
	ErrQueueFull = errors.New("audit queue full: the destination is not keeping up; event dropped")
	// ErrQueueClosed is the error of an event after Close.
	ErrQueueClosed = errors.New("audit queue closed")
)

// Queue hands events to one goroutine that writes them, in order, to its
// destination, so that a slow or blocked destination (a full disk, a pipe
// to a stalled log collector) never holds a request: authz.Events sinks
// must not block on I/O they cannot bound. Beyond its capacity an event is
// dropped and Write says so (the Log reports it through OnError) rather
// than waiting. Close writes out what is queued.
type Queue struct {
	w       io.Writer
	onError func(error)
	lines   chan []byte
	done    chan struct{}

	mu     sync.RWMutex // Write holds it shared, Close exclusively
	closed bool
}

// NewQueue starts the goroutine writing to w; onError (may be nil) is told
// of every failed write.
func NewQueue(w io.Writer, capacity int, onError func(error)) *Queue {
	q := &Queue{w: w, onError: onError, lines: make(chan []byte, capacity), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *Queue) run() {
	defer close(q.done)
	for line := range q.lines {
		if _, err := q.w.Write(line); err != nil && q.onError != nil {
			q.onError(err)
		}
	}
}

// Write queues a copy of p (one event) without waiting.
func (q *Queue) Write(p []byte) (int, error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return 0, ErrQueueClosed
	}
	select {
	case q.lines <- bytes.Clone(p):
		return len(p), nil
	default:
		return 0, ErrQueueFull
	}
}

// Close stops taking events and returns once every queued one is written.
func (q *Queue) Close() error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.lines)
	}
	q.mu.Unlock()
	<-q.done
	return nil
}
