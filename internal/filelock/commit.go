package filelock

import (
	"os"
	"path/filepath"
)

// Commit makes a file written as tmp durable under its final name: f is
// fsynced and closed, renamed to final, and the directory fsynced, so that
// after a crash final is either absent or whole. On failure tmp is removed.
func Commit(f interface {
	Sync() error
	Close() error
}, tmp, final string) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(final))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// SyncDir fsyncs a directory, making the creations, renames and removals
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
