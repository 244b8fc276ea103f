package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sessiongate/sessiongate/envoy"
)

// exitDenied is check's exit status for a denial, so scripts can branch.
const exitDenied = 3

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// check sends one CheckRequest to a running server, as Envoy would, and
// prints the decision, HTTP status, headers and reason.
func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	addr := fs.String("addr", "127.0.0.1:9001", "gRPC address of a running sessiongate")
	host := fs.String("host", "", "request host (:authority), required")
	path := fs.String("path", "/", "request path with query")
	method := fs.String("method", "GET", "request method")
	scheme := fs.String("scheme", "https", "request scheme")
	tok := fs.String("token", "", "bearer token to send in Authorization")
	cookie := fs.String("cookie", "", "Cookie header value")
	browser := fs.Bool("browser", false, "send browser navigation headers (Accept: text/html, Sec-Fetch-Mode: navigate)")
	timeout := fs.Duration("timeout", 5*time.Second, "RPC timeout")
	var extra headerList
	fs.Var(&extra, "H", "extra request header 'name: value' (repeatable)")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	if *host == "" {
		fmt.Fprintln(stderr, "sessiongate check: --host is required")
		return exitUsage
	}
	headers := map[string]string{
		":authority": *host, ":path": *path, ":method": *method, ":scheme": *scheme,
		"x-forwarded-proto": *scheme, "user-agent": "sessiongate-check/" + version(),
	}
	if *tok != "" {
		headers["authorization"] = "Bearer " + *tok
	}
	if *cookie != "" {
		headers["cookie"] = *cookie
	}
	if *browser {
		headers["accept"] = "text/html,application/xhtml+xml"
		headers["sec-fetch-mode"] = "navigate"
	}
	for _, h := range extra {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(stderr, "sessiongate check: -H %q: want 'name: value'\n", h)
			return exitUsage
		}
		headers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: *method, Path: *path, Host: *host, Scheme: *scheme, Headers: headers, Protocol: "HTTP/1.1",
		}},
	}}
	conn, err := dial(*addr)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate check:", err)
		return exitFailure
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate check:", err)
		return exitFailure
	}
	return printResponse(stdout, resp)
}

func printResponse(w io.Writer, resp *authv3.CheckResponse) int {
	if ok := resp.GetOkResponse(); resp.GetStatus().GetCode() == 0 {
		if reason, dry := strings.CutPrefix(resp.GetStatus().GetMessage(), envoy.DryRunPrefix); dry {
			// A dry-run policy let a denial through: say what enforcement
			// would have done, which is why operators run check on it.
			fmt.Fprintln(w, "decision: allow (dry-run: enforcement would deny)")
			fmt.Fprintln(w, "status:   200 (forwarded upstream)")
			fmt.Fprintf(w, "reason:   %s\n", reason)
		} else {
			fmt.Fprintln(w, "decision: allow")
			fmt.Fprintln(w, "status:   200 (forwarded upstream)")
		}
		printHeaders(w, "upstream", ok.GetHeaders())
		for _, h := range ok.GetHeadersToRemove() {
			fmt.Fprintf(w, "upstream remove: %s\n", h)
		}
		printHeaders(w, "client", ok.GetResponseHeadersToAdd())
		return exitOK
	}
	d := resp.GetDeniedResponse()
	fmt.Fprintln(w, "decision: deny")
	fmt.Fprintf(w, "status:   %d\n", d.GetStatus().GetCode())
	fmt.Fprintf(w, "reason:   %s\n", resp.GetStatus().GetMessage())
	printHeaders(w, "client", d.GetHeaders())
	return exitDenied
}

func printHeaders(w io.Writer, to string, hs []*corev3.HeaderValueOption) {
	lines := make([]string, 0, len(hs))
	for _, h := range hs {
		lines = append(lines, fmt.Sprintf("%s header: %s: %s", to, h.GetHeader().GetKey(), h.GetHeader().GetValue()))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// healthCmd asks a running server's grpc.health.v1 service; exit 0 when
// SERVING. It lets a container health check work without a shell.
func healthCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", stderr)
	addr := fs.String("addr", "127.0.0.1:9001", "gRPC address of a running sessiongate")
	timeout := fs.Duration("timeout", 3*time.Second, "RPC timeout")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return flagExit(err)
	}
	st, err := grpcHealth(ctx, *addr, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "sessiongate health:", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, st)
	if st != "SERVING" {
		return exitFailure
	}
	return exitOK
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
