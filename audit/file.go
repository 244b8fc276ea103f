package audit

import (
	"fmt"
	"os"
	"sync"
)

// File is an audit log file opened for appending. Every Write goes straight
// to the operating system (no user-space buffer, so nothing is lost when the
// process dies and there is nothing to flush), and with O_APPEND each line
// lands whole at the end even if another process appends too. Reopen lets
// logrotate move the file away and have a new one created (its postrotate
// sends SIGHUP); Write, Reopen and Close are safe for concurrent use.
type File struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// OpenFile opens (or creates, mode 0600: audit lines name users) path.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return f, nil
}

// Write appends p in one write.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Write(p)
}

// Reopen opens the path again and switches to it, so that events after a
// rotation go to the new file. If the path cannot be opened, events keep
// going to the current file and the error says why.
func (f *File) Reopen() error {
	nf, err := openAppend(f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.f
	f.f = nf
	f.mu.Unlock()
	return old.Close()
}

// Close syncs the file to disk and closes it; later writes fail.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	serr := f.f.Sync()
	if err := f.f.Close(); err != nil {
		return err
	}
	return serr
}
