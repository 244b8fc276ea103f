package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/internal/idp"
)

// demoKey is the repository's demo signing key, relative to its root.
const demoKey = "envoy/examples/demo-key.pem"

// findUp looks for rel in the working directory and each one above it, so
// that mint finds the demo key from anywhere inside a clone.
func findUp(rel string) (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// mint signs a token with a local key, for the quickstart and local trials
// only: a real deployment gets its tokens from its identity provider.
func mint(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("mint", stderr)
	keyFile := fs.String("key", "", "PEM private key (default: the repository's demo key "+demoKey+", looked for in the current directory and those above it; LOCAL USE ONLY)")
	iss := fs.String("iss", "https://idp.example.com", "issuer (iss)")
	sub := fs.String("sub", "", "subject (sub), required")
	aud := fs.String("aud", "app", "audience (aud), comma-separated for several")
	sid := fs.String("sid", "", "OIDC session id (sid), optional")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime (exp - iat)")
	authTime := fs.String("auth-time", "now", "auth_time: now, none, or Unix seconds")
	var claims headerList
	fs.Var(&claims, "claim", "extra claim name=value (repeatable; string values)")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "sessiongate mint: --sub is required")
		return exitUsage
	}
	if *keyFile == "" {
		found, ok := findUp(demoKey)
		if !ok {
			fmt.Fprintf(stderr, "sessiongate mint: no --key given, and the demo key %s is not below this directory or any above it: run inside a clone of the repository, or pass --key PEM\n", demoKey)
			return exitUsage
		}
		*keyFile = found
	}
	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate mint: --key:", err)
		return exitFailure
	}
	signer, err := idp.FromPEM(pem)
	if err != nil {
		fmt.Fprintf(stderr, "sessiongate mint: --key %s: %v\n", *keyFile, err)
		return exitFailure
	}
	now := time.Now().Unix()
	c := map[string]any{"iss": *iss, "sub": *sub, "iat": now, "nbf": now, "exp": now + int64(ttl.Seconds())}
	if auds := strings.Split(*aud, ","); len(auds) == 1 {
		c["aud"] = auds[0]
	} else {
		c["aud"] = auds
	}
	if *sid != "" {
		c["sid"] = *sid
	}
	switch *authTime {
	case "none":
	case "now":
		c["auth_time"] = now
	default:
		at, err := strconv.ParseInt(*authTime, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "sessiongate mint: --auth-time %q: want now, none or Unix seconds\n", *authTime)
			return exitUsage
		}
		c["auth_time"] = at
	}
	for _, kv := range claims {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "sessiongate mint: --claim %q: want name=value\n", kv)
			return exitUsage
		}
		c[k] = v
	}
	tok, err := signer.Mint(c)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate mint:", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, tok)
	return exitOK
}
