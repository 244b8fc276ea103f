package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

const usage = `sessiongate enforces sign-in session security per host for Envoy ext_authz.

Usage:
  sessiongate serve --policies DIR [--grpc-addr ADDR] [--http-addr ADDR] [--store URL] [--state-file PATH]
  sessiongate validate PATH...
  sessiongate check [--addr ADDR] --host HOST [--path PATH] [--token JWT] [--cookie C] [--browser] [-H 'name: value']...
  sessiongate health [--addr ADDR]
  sessiongate sessions list --user SUB [--policy P]
  sessiongate sessions end (--user SUB | --sid SID | --session HASH | --all) [--policy P]
  sessiongate mint --sub SUB [--key PEM] [--iss URL] [--aud AUD] [--sid SID] [--auth-time now|none|UNIX] [--ttl 1h] [--claim k=v]...   (local demos only)
  sessiongate version

Flags of serve are also read from SESSIONGATE_* environment variables
(--grpc-addr from SESSIONGATE_GRPC_ADDR, and so on). Run "sessiongate CMD -h" for details.
`

// exit codes
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "validate":
		return validate(rest, stdout, stderr)
	case "check":
		return check(ctx, rest, stdout, stderr)
	case "health":
		return healthCmd(ctx, rest, stdout, stderr)
	case "mint":
		return mint(rest, stdout, stderr)
	case "sessions":
		return sessionsCmd(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "sessiongate", readBuildInfo())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sessiongate: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// Build identity stamped by the image build (go build -ldflags "-X
// main.stampVersion=… -X main.stampRevision=…"), whose context has no VCS
// metadata; empty otherwise, and the Go toolchain's build info is used.
var (
	stampVersion  string
	stampRevision string
)

// buildInfo is what a binary knows of the source it was built from.
type buildInfo struct {
	version  string // module version: a tag, a pseudo-version, or "devel"
	revision string // VCS commit, "" when unknown
	time     string // commit time (RFC 3339), "" when unknown
	modified bool   // built from a tree with uncommitted changes
	goVer    string
}

// readBuildInfo takes the module version and VCS revision that the Go
// toolchain records (a build inside a git checkout stamps both, unless
// -buildvcs=false), overridden by what the image build stamped.
func readBuildInfo() buildInfo {
	b := buildInfo{version: "devel"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.goVer = bi.GoVersion
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.revision = s.Value
			case "vcs.time":
				b.time = s.Value
			case "vcs.modified":
				b.modified = s.Value == "true"
			}
		}
	}
	if stampVersion != "" {
		b.version = stampVersion
	}
	if stampRevision != "" {
		b.revision, b.time, b.modified = stampRevision, "", false
	}
	return b
}

// version is the module version, for logs and the User-Agent.
func version() string { return readBuildInfo().version }

// String is the line `sessiongate version` prints after the name.
func (b buildInfo) String() string {
	var s strings.Builder
	s.WriteString(b.version)
	var parts []string
	if b.revision != "" {
		r := "revision " + b.revision
		if b.modified {
			r += " (modified)"
		}
		if b.time != "" {
			r += " of " + b.time
		}
		parts = append(parts, r)
	} else {
		parts = append(parts, "revision unknown")
	}
	if b.goVer != "" {
		parts = append(parts, b.goVer)
	}
	s.WriteString(" (" + strings.Join(parts, ", ") + ")")
	return s.String()
}

// parseFlags parses args and then fills every flag not given on the command
// line from SESSIONGATE_<NAME> (upper case, dashes as underscores).
func parseFlags(fs *flag.FlagSet, args []string, env func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := "SESSIONGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := env(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	err := errors.Join(errs...)
	if err != nil {
		fmt.Fprintln(fs.Output(), err)
	}
	return err
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sessiongate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// flagExit maps a flag parsing error to an exit code (-h is not a failure).
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
