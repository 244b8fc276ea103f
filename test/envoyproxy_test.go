package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// envoyProxy stands in for Envoy with the ext_authz HTTP filter over gRPC
// (envoy/examples/envoy.yaml): for every request it sends sessiongate a
// CheckRequest built as Envoy builds one and applies the CheckResponse as
// the filter does. Allowed: the response's headers are set on the upstream
// request by their append_action, headers_to_remove removed, the request
// forwarded, and response_headers_to_add added to the client's response.
// Denied: the denied response's status (403 when absent), headers and body
// go to the client. A failed check is a 403 (failure_mode_allow: false,
// the default status_on_error).
type envoyProxy struct {
	auth     authv3.AuthorizationClient
	upstream *httputil.ReverseProxy
	timeout  time.Duration
}

// startEnvoyProxy serves on a free loopback port, or at, and returns its
// address.
func startEnvoyProxy(t *testing.T, grpcAddr, upstreamAddr string, at ...string) string {
	t.Helper()
	listen := "127.0.0.1:0"
	if len(at) > 0 {
		listen = at[0]
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	serveEnvoyProxy(t, grpcAddr, upstreamAddr, l)
	return l.Addr().String()
}

// serveEnvoyProxy serves the proxy on l until the test ends.
func serveEnvoyProxy(t *testing.T, grpcAddr, upstreamAddr string, l net.Listener) {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	target, _ := url.Parse("http://" + upstreamAddr)
	// The check's timeout: generous, since a callback's check includes the
	// code exchange at the provider and the test machine may be loaded.
	p := &envoyProxy{auth: authv3.NewAuthorizationClient(conn), timeout: 10 * time.Second,
		upstream: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // Envoy keeps the original :authority
		}}}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
}

func (p *envoyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), p.timeout)
	defer cancel()
	resp, err := p.auth.Check(ctx, checkRequestOf(r))
	if err != nil {
		http.Error(w, "", http.StatusForbidden)
		return
	}
	if resp.GetStatus().GetCode() == 0 { // codes.OK: allowed
		ok := resp.GetOkResponse()
		for _, h := range ok.GetHeaders() {
			applyHeader(r.Header, h)
		}
		for _, k := range ok.GetHeadersToRemove() {
			r.Header.Del(k)
		}
		add := ok.GetResponseHeadersToAdd()
		p.upstreamWith(add).ServeHTTP(w, r)
		return
	}
	d := resp.GetDeniedResponse()
	for _, h := range d.GetHeaders() {
		applyHeader(w.Header(), h)
	}
	status := int(d.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, d.GetBody())
}

// upstreamWith forwards to the upstream and adds headers to its response.
func (p *envoyProxy) upstreamWith(add []*corev3.HeaderValueOption) http.Handler {
	if len(add) == 0 {
		return p.upstream
	}
	rp := *p.upstream
	rp.ModifyResponse = func(res *http.Response) error {
		for _, h := range add {
			applyHeader(res.Header, h)
		}
		return nil
	}
	return &rp
}

// applyHeader applies one HeaderValueOption as Envoy does.
func applyHeader(h http.Header, o *corev3.HeaderValueOption) {
	k, v := o.GetHeader().GetKey(), o.GetHeader().GetValue()
	if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
		v = string(o.GetHeader().GetRawValue())
	}
	action := o.GetAppendAction()
	if o.GetAppend() != nil { // the deprecated bool, when a server sets it
		action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if o.GetAppend().GetValue() {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
	}
	_, exists := h[http.CanonicalHeaderKey(k)]
	switch action {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		h.Add(k, v)
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if !exists {
			h.Set(k, v)
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		h.Set(k, v)
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if exists {
			h.Set(k, v)
		}
	}
}

// checkRequestOf builds the CheckRequest Envoy sends for r: lower-case
// header names with repeated values joined by ",", the pseudo-headers,
// x-forwarded-proto and x-request-id as Envoy adds them at the edge
// (use_remote_address), and the peer as the source address.
func checkRequestOf(r *http.Request) *authv3.CheckRequest {
	headers := map[string]string{}
	for k, vs := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-forwarded-") {
			continue // an edge proxy replaces what the client sent
		}
		sep := ","
		if strings.EqualFold(k, "cookie") {
			sep = "; "
		}
		headers[strings.ToLower(k)] = strings.Join(vs, sep)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	requestID := fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:])
	headers[":authority"], headers[":method"], headers[":path"], headers[":scheme"] = r.Host, r.Method, r.URL.RequestURI(), "http"
	headers["x-forwarded-proto"], headers["x-request-id"] = "http", requestID
	r.Header.Set("X-Request-Id", requestID)
	host, port, _ := net.SplitHostPort(r.RemoteAddr)
	p, _ := strconv.Atoi(port)
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: requestID, Method: r.Method, Headers: headers, Path: r.URL.RequestURI(),
				Host: r.Host, Scheme: "http", Protocol: r.Proto,
			},
		},
	}}
}

// TestEnvoyProxyFlow: the token-mode walk of the forward-auth proxies
// (sign-in, inactivity, new sign-in, sign-out, spoofed headers) through the
// gRPC test proxy.
func TestEnvoyProxyFlow(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	s := startServer(t, map[string]string{"app": faFlowPolicy(idle)})
	up := startRecordingUpstream(t)
	proxy := startEnvoyProxy(t, s.grpcAddr, up.addr())
	forwardAuthFlow(t, s, up, newFABrowser(t, proxy), "alice-envoy", idle)
}
