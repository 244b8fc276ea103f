// Package filelock owns the exclusive locks that keep two processes from
// writing one local file: the embedded store's state file and the shared
// store's outage queue.
package filelock
