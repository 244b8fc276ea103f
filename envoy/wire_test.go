package envoy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/sessiongate/sessiongate/authz"
)

// wireDecode decodes b as the gRPC server does.
func wireDecode(b []byte) (*wireRequest, error) {
	w := new(wireRequest)
	// Two buffers, as gRPC hands a message that spans frames.
	half := len(b) / 2
	data := mem.BufferSlice{mem.SliceBuffer(slices.Clone(b[:half])), mem.SliceBuffer(slices.Clone(b[half:]))}
	return w, newWireCodec().Unmarshal(data, w)
}

// sameAsProto checks that b decodes here as proto.Unmarshal and ToRequest
// decode it, and returns proto.Unmarshal's error. A message this decoder
// refuses is one proto.Unmarshal refuses too; one it accepts that
// proto.Unmarshal refuses is malformed only in a field not read here.
func sameAsProto(t *testing.T, b []byte) error {
	t.Helper()
	var req authv3.CheckRequest
	perr := proto.Unmarshal(b, &req)
	w, werr := wireDecode(b)
	if werr != nil {
		if perr == nil {
			t.Fatalf("wire decoder refused what proto.Unmarshal accepts: %v", werr)
		}
		return perr
	}
	if perr != nil {
		return perr
	}
	want, got := ToRequest(&req), w.toRequest()
	if want.Host != got.Host || want.Path != got.Path || want.Method != got.Method || want.Scheme != got.Scheme ||
		want.SourceAddr != got.SourceAddr || want.RequestID != got.RequestID {
		t.Fatalf("request differs:\nproto %+v\nwire  %+v", want, got)
	}
	hm := want.Headers.(authz.HeaderMap)
	var names []string
	for _, f := range w.fields() {
		names = append(names, f.k)
	}
	slices.Sort(names)
	if keys := slices.Sorted(maps.Keys(hm)); !slices.Equal(slices.Compact(names), keys) {
		t.Fatalf("header names differ:\nproto %q\nwire  %q", keys, names)
	}
	for k, v := range hm {
		if g := got.Headers.Get(k); g != v {
			t.Fatalf("header %q: proto %q, wire %q", k, v, g)
		}
	}
	if g := got.Headers.Get("no-such-header"); g != "" {
		t.Fatalf("absent header read as %q", g)
	}
	// The count decides a refusal only: repeated names count once there.
	if p, n := HeaderFields(&req), w.headerFields(); (p > MaxHeaderFields) != (n > MaxHeaderFields) || (p <= MaxHeaderFields && n < p) {
		t.Fatalf("header fields: proto %d, wire %d", p, n)
	}
	return nil
}

func captures(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/captures/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		j, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(j, &req); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, err := proto.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func httpRequest(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
}

// wireCases are messages with the corners of the format: header_map,
// repeated names, merged messages, a replaced oneof, bad UTF-8.
func wireCases(t testing.TB) map[string][]byte {
	t.Helper()
	cases := captures(t)
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, Value: v} }
	cases["header_map"] = marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{
		Host: "app.example.com",
		HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			hv(":path", "/a"), hv("cookie", "a=1"), hv("cookie", "sg=2"), hv("x-forwarded-for", "1.2.3.4"),
			hv("x-forwarded-for", "5.6.7.8"), {Key: "x-raw", RawValue: []byte("raw\xffbytes")}, hv("x_sessiongate_user", "mallory"),
		}},
	}))
	cases["empty header_map"] = marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{Host: "h", HeaderMap: &corev3.HeaderMap{}}))
	cases["headers and header_map"] = marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{
		Headers:   map[string]string{":authority": "from-map", "x-request-id": "r1"},
		HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":authority", "from-header-map")}},
	}))
	cases["pseudo-headers only"] = marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{":authority": "a.example", ":path": "/p?q", ":scheme": "http", "x_SessionGate_User": "x"},
	}))
	cases["forwarded proto"] = marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{"x-forwarded-proto": "https"},
	}))
	// A message field sent twice is merged; a string sent twice, the last wins.
	first := marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{Host: "first", Path: "/first",
		Headers: map[string]string{"a": "1", "b": "1"}}))
	second := marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  peer("192.0.2.1"),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "second", Headers: map[string]string{"a": "2"}}},
	}})
	cases["merged"] = append(slices.Clone(first), second...)
	// An address replaced by another member of its oneof has no socket address.
	pipe := marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/s"}}}}}})
	cases["oneof replaced"] = append(marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: peer("192.0.2.1")}}), pipe...)
	cases["oneof restored"] = append(slices.Clone(pipe), marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: peer("192.0.2.9")}})...)
	// A map entry without its value, and one with its key twice.
	entry := func(fields ...[]byte) []byte {
		var e []byte
		for _, f := range fields {
			e = append(e, f...)
		}
		h := protowire.AppendTag(nil, fHTTPHeaders, protowire.BytesType)
		h = protowire.AppendBytes(h, e)
		r := protowire.AppendTag(nil, fRequestHTTP, protowire.BytesType)
		r = protowire.AppendBytes(r, h)
		a := protowire.AppendTag(nil, fAttrRequest, protowire.BytesType)
		a = protowire.AppendBytes(a, r)
		c := protowire.AppendTag(nil, fCheckAttributes, protowire.BytesType)
		return protowire.AppendBytes(c, a)
	}
	str := func(n protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), s)
	}
	cases["entry without value"] = entry(str(1, "x-empty"))
	cases["entry key twice"] = entry(str(1, "first"), str(2, "v"), str(1, "second"))
	cases["entry with unknown field"] = entry(str(1, "k"), protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.VarintType), 9), str(2, "v"))
	cases["host as varint"] = append(slices.Clone(first), entry(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5))...)
	cases["bad UTF-8 in a header"] = entry(str(1, "k"), str(2, "\xff"))
	cases["bad UTF-8 in the host"] = marshalNoCheck(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Host: "\xc0"}}}})
	many := map[string]string{}
	for i := range MaxHeaderFields {
		many[fmt.Sprint("x-h-", i)] = "v"
	}
	over := marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{Headers: many}))
	cases["as many headers as allowed, one repeated"] = append(slices.Clone(over), entry(str(1, "x-h-7"), str(2, "w"))...)
	cases["one header too many"] = append(slices.Clone(over), entry(str(1, "x-h-new"), str(2, "w"))...)
	cases["truncated"] = first[:len(first)-3]
	cases["empty"] = nil
	return cases
}

func peer(addr string) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: addr}}}}
}

// marshalNoCheck marshals a message with invalid UTF-8 in a string, as a
// peer that does not check would send it.
func marshalNoCheck(m *authv3.CheckRequest) []byte {
	host := m.Attributes.Request.Http.Host
	m.Attributes.Request.Http.Host = strings.Repeat("h", len(host))
	b, _ := proto.Marshal(m)
	i := strings.LastIndex(string(b), m.Attributes.Request.Http.Host)
	copy(b[i:], host)
	return b
}

func TestWireMatchesProto(t *testing.T) {
	refused := map[string]bool{"bad UTF-8 in a header": true, "bad UTF-8 in the host": true, "truncated": true}
	for name, b := range wireCases(t) {
		t.Run(name, func(t *testing.T) {
			err := sameAsProto(t, b)
			if (err != nil) != refused[name] {
				t.Fatalf("proto.Unmarshal: %v, want refused %v", err, refused[name])
			}
			if _, werr := wireDecode(b); (werr != nil) != refused[name] {
				t.Fatalf("wire decoder: %v, want refused %v", werr, refused[name])
			}
		})
	}
}

// TestWireSkipsFieldsNotRead: a message malformed only in a field the gate
// does not read (here the destination peer) is decided.
func TestWireSkipsFieldsNotRead(t *testing.T) {
	dest := protowire.AppendTag(nil, 2, protowire.BytesType)     // AttributeContext.destination
	dest = protowire.AppendBytes(dest, []byte{0x0a, 0x05, 0x01}) // a truncated address inside
	b := protowire.AppendTag(nil, fCheckAttributes, protowire.BytesType)
	b = protowire.AppendBytes(b, dest)
	if err := proto.Unmarshal(b, &authv3.CheckRequest{}); err == nil {
		t.Fatal("proto.Unmarshal accepts the malformed destination: the test needs another one")
	}
	if _, err := wireDecode(b); err != nil {
		t.Fatalf("wire decoder: %v", err)
	}
}

func FuzzWireRequest(f *testing.F) {
	for _, b := range wireCases(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameAsProto(t, b) })
}

func BenchmarkDecodeRequest(b *testing.B) {
	// A browser's request with its session cookie, as Envoy sent it.
	req := captures(b)["D1_from10_browser_get_with_session_cookie_http11.json"]
	data := mem.BufferSlice{mem.SliceBuffer(req)}
	codec := newWireCodec()
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r authv3.CheckRequest
			if err := codec.Unmarshal(data, &r); err != nil {
				b.Fatal(err)
			}
			_ = ToRequest(&r)
		}
	})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w := new(wireRequest)
			if err := codec.Unmarshal(data, w); err != nil {
				b.Fatal(err)
			}
			_ = w.toRequest()
		}
	})
}

// recorder allows everything with a user, recording what it was asked.
type recorder struct{ got chan authz.Request }

func (c recorder) Check(_ context.Context, r *authz.Request) authz.Decision {
	c.got <- *r
	return authz.Decision{Allow: true, User: "alice", SessionExpiresAt: 1, IdleExpiresAt: 2}
}

// TestServerDecodesAsCheck: over gRPC, the server gives the checker the
// request ToRequest gives, and answers what Service.Check answers.
func TestServerDecodesAsCheck(t *testing.T) {
	rec := recorder{got: make(chan authz.Request, 1)}
	srv := NewServer(rec)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop(context.Background())
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	reqs := map[string]*authv3.CheckRequest{}
	for name, b := range wireCases(t) {
		var req authv3.CheckRequest
		if proto.Unmarshal(b, &req) == nil && HeaderFields(&req) <= MaxHeaderFields {
			reqs[name] = &req
		}
	}
	reqs["aliases"] = httpRequest(&authv3.AttributeContext_HttpRequest{Host: "h", Headers: map[string]string{
		"x_sessiongate_user": "mallory", "X_SessionGate_Session_Expires_At": "9", "x-other": "1"}})
	sortRemovals := func(r *authv3.CheckResponse) {
		if ok := r.GetOkResponse(); ok != nil {
			ok.HeadersToRemove = slices.Sorted(slices.Values(ok.HeadersToRemove))
		}
	}
	for name, req := range reqs {
		got, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seen := <-rec.got
		want, err := NewService(rec).Check(context.Background(), req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wantReq := <-rec.got
		if seen.Host != wantReq.Host || seen.Path != wantReq.Path || seen.Method != wantReq.Method || seen.Scheme != wantReq.Scheme ||
			seen.SourceAddr != wantReq.SourceAddr || seen.RequestID != wantReq.RequestID {
			t.Errorf("%s: checker got %+v, want %+v", name, seen, wantReq)
		}
		for k, v := range wantReq.Headers.(authz.HeaderMap) {
			if g := seen.Headers.Get(k); g != v {
				t.Errorf("%s: header %q = %q, want %q", name, k, g, v)
			}
		}
		sortRemovals(got)
		sortRemovals(want)
		if !proto.Equal(got, want) {
			t.Errorf("%s: server answered\n%v\nService.Check answers\n%v", name, got, want)
		}
	}
}

// TestRepeatedAliasRemovedOnce: a header name repeated on the wire, which the
// map of proto.Unmarshal holds once, is removed once, not once per copy.
func TestRepeatedAliasRemovedOnce(t *testing.T) {
	b := slices.Repeat(marshal(t, httpRequest(&authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{"x_sessiongate_user": "m"}})), 1000)
	w, err := wireDecode(b)
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	a.build(&authz.Decision{Allow: true, User: "alice"})
	for _, f := range w.fields() {
		a.removeAlias(f.k)
	}
	resp := a.proto()
	if n := slices.Index(resp.GetOkResponse().GetHeadersToRemove(), "x_sessiongate_user"); n < 0 ||
		len(resp.GetOkResponse().GetHeadersToRemove()) != len(removeWithUser)+1 {
		t.Fatalf("headers to remove: %q", resp.GetOkResponse().GetHeadersToRemove())
	}
}
