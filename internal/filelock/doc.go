// Package filelock owns what the stores' local files need of the file
// system: exclusive locks that keep two processes from writing one file (the
// embedded store's state file, the shared store's outage queue), and files
// made durable whole (Commit).
package filelock
