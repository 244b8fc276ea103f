package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/token"
)

// validate checks policy files or directories the way serve would load them,
// JWKS files included, and prints one line per problem: file:line: field: msg.
func validate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sessiongate validate PATH...\n\nPATH is a policy file or a directory of policy files. Problems are printed as\nfile:line: field: message. Exit status 0 when all are valid (warnings, such as\na policy without logout, are printed but do not fail), 1 otherwise.")
	}
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	tokens := token.NewProvider(token.Options{Logger: slog.New(slog.DiscardHandler), Clock: authz.SystemClock{}})
	// Sign-ins are built as serve builds them, without discovery: validate
	// never uses the network.
	rp, err := oidc.New(oidc.Options{Keys: oidc.RandomKeyRing()})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	set, err := policy.LoadFiles(fs.Args(), policy.Options{
		NewVerifier: func(_ string, tc policy.TokenConfig) (authz.Verifier, error) {
			return tokens.Verifier(token.Config(tc))
		},
		NewSignIn: signInFactory(rp, tokens, false, false),
	})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	// Warnings do not fail validation: the policy is what its author chose.
	for _, w := range set.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	names := set.Names()
	noun := "policies"
	if len(names) == 1 {
		noun = "policy"
	}
	fmt.Fprintf(stdout, "ok: %d %s valid: %s\n", len(names), noun, strings.Join(names, ", "))
	return exitOK
}
