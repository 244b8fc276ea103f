//go:build unix

package memory

import (
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on path, so that two processes never
// write one state file: the second fails at start instead of corrupting it.
func lockFile(path string) (unlock func(), err error) {
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
