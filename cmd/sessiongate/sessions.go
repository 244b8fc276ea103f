package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sessiongate/sessiongate/ends"
)

// defaultAdminAddr is where the sessions command looks for the admin API
// when neither --admin-addr nor SESSIONGATE_ADMIN_ADDR says otherwise.
const defaultAdminAddr = "127.0.0.1:9003"

const sessionsUsage = `Usage:
  sessiongate sessions list --user SUB [--policy P] [--json]
  sessiongate sessions end (--user SUB | --sid SID | --session HASH | --all) [--policy P]

Both talk to a running server's admin API (serve --admin-addr), with the
bearer token of --admin-token-file; over HTTPS with --admin-ca-file (the CA
of serve --admin-tls-cert-file) or an https:// --admin-addr, and with a
client certificate with --admin-cert-file and --admin-key-file. Sessions are named by a hash of their id
(the SESSION column); no id or token is ever shown. Flags are also read from
SESSIONGATE_* environment variables (SESSIONGATE_ADMIN_ADDR, ...).
`

// sessionsCmd lists or ends sessions through the admin API (S19).
func sessionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "end") {
		fmt.Fprint(stderr, sessionsUsage)
		return exitUsage
	}
	op, args := args[0], args[1:]
	fs := newFlagSet("sessions "+op, stderr)
	addr := fs.String("admin-addr", defaultAdminAddr, "the admin API's address (serve --admin-addr)")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin bearer token (serve --admin-token-file)")
	var tc adminTLSFlags
	fs.StringVar(&tc.caFile, "admin-ca-file", "", "PEM CA certificates to trust for the admin API's certificate (serve --admin-tls-cert-file); speaks HTTPS")
	fs.StringVar(&tc.certFile, "admin-cert-file", "", "PEM client certificate for the admin API (serve --admin-client-ca-file); speaks HTTPS. With --admin-key-file")
	fs.StringVar(&tc.keyFile, "admin-key-file", "", "PEM private key of --admin-cert-file")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	var req ends.EndRequestBody
	fs.StringVar(&req.User, "user", "", "the user (subject)")
	fs.StringVar(&req.Policy, "policy", "", "only this policy (default: every policy)")
	asJSON := false
	if op == "list" {
		fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	} else {
		fs.StringVar(&req.SID, "sid", "", "the provider session (the ID token's sid)")
		fs.StringVar(&req.Session, "session", "", "one session, by the hash that list shows")
		fs.BoolVar(&req.All, "all", false, "every session (of --policy, or of every policy)")
	}
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "sessiongate sessions %s: unexpected argument %q\n", op, fs.Arg(0))
		return exitUsage
	}
	token := ""
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "sessiongate sessions: --admin-token-file:", err)
			return exitFailure
		}
		token = strings.TrimSpace(string(b))
	}
	client, base, err := adminClient(*addr, tc)
	if err != nil {
		fmt.Fprintf(stderr, "sessiongate sessions %s: %v\n", op, err)
		if errors.As(err, new(fileError)) {
			return exitFailure // as for an unreadable --admin-token-file
		}
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var hreq *http.Request
	if op == "list" {
		if req.User == "" {
			fmt.Fprintln(stderr, "sessiongate sessions list: --user is required")
			return exitUsage
		}
		q := url.Values{"user": {req.User}}
		if req.Policy != "" {
			q.Set("policy", req.Policy)
		}
		hreq, err = http.NewRequestWithContext(ctx, http.MethodGet, base+ends.AdminSessionsPath+"?"+q.Encode(), nil)
	} else {
		n := 0
		for _, set := range []bool{req.User != "", req.SID != "", req.Session != "", req.All} {
			if set {
				n++
			}
		}
		if n != 1 {
			fmt.Fprintln(stderr, "sessiongate sessions end: give exactly one of --user, --sid, --session and --all")
			return exitUsage
		}
		body, _ := json.Marshal(req)
		hreq, err = http.NewRequestWithContext(ctx, http.MethodPost, base+ends.AdminEndPath, bytes.NewReader(body))
		if hreq != nil {
			hreq.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate sessions:", err)
		return exitUsage
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(hreq)
	if err != nil {
		fmt.Fprintf(stderr, "sessiongate sessions: cannot reach the admin API at %s (serve --admin-addr): %v\n", *addr, errors.Unwrap(err))
		return exitFailure
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate sessions:", err)
		return exitFailure
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(raw, &e)
		if resp.StatusCode == http.StatusUnauthorized {
			e.Description += " (--admin-token-file)"
		}
		fmt.Fprintf(stderr, "sessiongate sessions %s: %s: %s\n", op, resp.Status, e.Description)
		return exitFailure
	}
	if op == "end" {
		var out ends.EndResponse
		if err := json.Unmarshal(raw, &out); err != nil {
			fmt.Fprintln(stderr, "sessiongate sessions end: unreadable answer:", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "ended %d %s\n", out.Ended, plural(out.Ended, "session", "sessions"))
		for p, n := range out.ByPolicy {
			if n > 0 {
				fmt.Fprintf(stdout, "  %s: %d\n", p, n)
			}
		}
		return exitOK
	}
	if asJSON {
		stdout.Write(raw)
		return exitOK
	}
	var out ends.ListResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		fmt.Fprintln(stderr, "sessiongate sessions list: unreadable answer:", err)
		return exitFailure
	}
	if len(out.Sessions) == 0 {
		fmt.Fprintf(stdout, "no live sessions of %s\n", req.User)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tSESSION\tMETHOD\tSIGNED IN\tLAST ACTIVITY\tENDS AT (ABSOLUTE)\tENDS AT (IDLE)")
	for _, s := range out.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Policy, s.Session, s.Method, ts(s.SignIn), ts(s.LastActivity),
			ts(s.AbsoluteDeadline), ts(s.IdleDeadline))
	}
	tw.Flush()
	return exitOK
}

// adminTLSFlags are the sessions command's TLS flags.
type adminTLSFlags struct{ caFile, certFile, keyFile string }

// adminClient returns the client and base URL for the admin API at addr:
// HOST:PORT, :PORT (on 127.0.0.1), or either with http:// or https://.
// Without a scheme, HTTPS when a TLS flag is given, else HTTP.
func adminClient(addr string, f adminTLSFlags) (*http.Client, string, error) {
	useTLS := f.caFile != "" || f.certFile != ""
	if (f.certFile == "") != (f.keyFile == "") {
		return nil, "", errors.New("--admin-cert-file and --admin-key-file go together: give both or neither")
	}
	scheme, hostPort, ok := strings.Cut(addr, "://")
	switch {
	case !ok:
		scheme, hostPort = "http", addr
		if useTLS {
			scheme = "https"
		}
	case scheme == "https":
		useTLS = true
	case scheme == "http" && useTLS:
		return nil, "", fmt.Errorf("--admin-addr %s is plain HTTP: --admin-ca-file and --admin-cert-file need https", addr)
	case scheme != "http":
		return nil, "", fmt.Errorf("--admin-addr %s: the scheme must be http or https", addr)
	}
	hostPort = strings.TrimSuffix(hostPort, "/")
	if strings.HasPrefix(hostPort, ":") {
		hostPort = "127.0.0.1" + hostPort
	}
	if !useTLS {
		return http.DefaultClient, scheme + "://" + hostPort, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.caFile != "" {
		b, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, "", fileError{fmt.Errorf("--admin-ca-file: %w", err)}
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, "", fileError{fmt.Errorf("--admin-ca-file %s: no PEM certificate in it", f.caFile)}
		}
	}
	if f.certFile != "" {
		c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, "", fileError{fmt.Errorf("--admin-cert-file %s, --admin-key-file %s: %w", f.certFile, f.keyFile, err)}
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr}, "https://" + hostPort, nil
}

// fileError is adminClient's error for a file the flags name that cannot
// be read or used (exit 1), apart from flags that do not go together (2).
type fileError struct{ err error }

func (e fileError) Error() string { return e.err.Error() }
func (e fileError) Unwrap() error { return e.err }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
