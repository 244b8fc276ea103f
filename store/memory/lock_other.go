//go:build !unix

package memory

// lockFile is a no-op where flock is unavailable: run one process per state
// file.
func lockFile(string) (func(), error) { return func() {}, nil }
