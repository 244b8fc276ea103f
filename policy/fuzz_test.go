package policy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzLoadFiles: no file content makes LoadFiles panic; it returns either a
// set holding the one policy or only problems that each name the file and a
// line of it, in the "file:line: field: message" form that validate prints.
func FuzzLoadFiles(f *testing.F) {
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys/jwks.json"), []byte(`{"keys":[]}`), 0o644); err != nil {
		f.Fatal(err)
	}
	file := filepath.Join(dir, "p.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		set, err := LoadFiles([]string{file}, Options{})
		if (set == nil) == (err == nil) {
			t.Fatalf("LoadFiles = %v, %v: want exactly one", set, err)
		}
		if err == nil {
			if names := set.Names(); len(names) != 1 || names[0] != "p" {
				t.Fatalf("policies %v, want [p]", names)
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %T %v is not a non-empty Errors", err, err)
		}
		// YAML breaks lines at LF, CR, NEL, LS and PS; a problem at the end
		// may point past the last line.
		lines := 2
		for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(br))
		}
		for _, e := range errs {
			if e.File != file || e.Line < 1 || e.Line > lines {
				t.Fatalf("problem %q: want %s and a line in 1..%d", e.Error(), file, lines)
			}
			if !strings.HasPrefix(e.Error(), file+":"+strconv.Itoa(e.Line)+": ") {
				t.Fatalf("problem %q is not file:line: …", e.Error())
			}
		}
	})
}
