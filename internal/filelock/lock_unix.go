//go:build unix

package filelock

import (
	"fmt"
	"os"
	"syscall"
)

// Lock takes an exclusive flock on path (created if missing), so that two
// processes never write the files it guards: the second fails at start
// instead of corrupting them.
func Lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("in use by another process (%s: %v)", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
