//go:build !unix

package filelock

// Lock is a no-op where flock is unavailable: run one process per file.
func Lock(string) (func(), error) { return func() {}, nil }
