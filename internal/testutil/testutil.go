// Package testutil holds the small helpers that the tests of several
// packages share. It is imported by tests only.
package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer is an io.Writer safe for concurrent writers (a process's output
// copier, loggers on several goroutines) and readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
