package policy

import (
	"cmp"
	"errors"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a policy file. Its text is "file:line: field:
// message", the form editors and CI annotate.
type Error struct {
	File  string // the path as given or joined to its directory
	Line  int    // 1-based; 0 when the problem has no line (unreadable file)
	Field string // dotted path such as session.idle_timeout or hosts[1]; may be ""
	Msg   string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	for _, s := range [...]string{e.Field, e.Msg} {
		if s == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Errors is every problem one load found, by file (in load order) and line.
// Loaders return it as their error; its text is one problem per line.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted orders each file's problems by line, keeping files in the order
// they were loaded, and returns nil for none, so that callers can return it
// as an error without the typed-nil trap.
func (es Errors) sorted() error {
	if len(es) == 0 {
		return nil
	}
	order := map[string]int{}
	for _, e := range es {
		if _, ok := order[e.File]; !ok {
			order[e.File] = len(order)
		}
	}
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(order[a.File], order[b.File]), cmp.Compare(a.Line, b.Line))
	})
	return es
}

// ioMsg drops the path an fs error repeats, since Error.File carries it.
func ioMsg(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
