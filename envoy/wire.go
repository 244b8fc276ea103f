package envoy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sessiongate/sessiongate/authz"
)

// The gRPC server decodes a CheckRequest's wire bytes itself (wireRequest),
// reading only the fields ToRequest reads: host, path, method, scheme, the
// headers (map or header_map) and the source address. The generic protobuf
// decoder builds every field of the message — peers, metadata, the request
// time, a map entry and two strings per header — and was the largest part of
// the server's CPU per request. Here the message is copied once into a string
// and every kept string is a slice of it: one allocation for the strings of a
// request, none per header.
//
// The rule is ToRequest's: a request decoded here gives the authz.Request
// that ToRequest gives for proto.Unmarshal of the same bytes
// (TestWireMatchesProto, FuzzWireRequest). Kept strings are checked for
// valid UTF-8 as proto3 requires; fields not read are skipped without
// looking inside them, so a message malformed only there is decided where
// proto.Unmarshal would refuse it.

// wireRequest is a CheckRequest as the gRPC server decodes it.
type wireRequest struct {
	host, path, method, scheme, source string
	// headers are the headers map's entries in wire order (for a repeated
	// name the last wins, as in the map); headerMap is header_map's, used
	// when the map is empty and header_map is present.
	headers, headerMap []field
	hasHeaderMap       bool
	err                error     // the first error decoding it
	inline             [24]field // storage for the usual number of headers
}

type field struct{ k, v string }

// Field numbers, from the messages' descriptors.
var (
	fCheckAttributes   = number((*authv3.CheckRequest)(nil), "attributes")
	fAttrSource        = number((*authv3.AttributeContext)(nil), "source")
	fAttrRequest       = number((*authv3.AttributeContext)(nil), "request")
	fPeerAddress       = number((*authv3.AttributeContext_Peer)(nil), "address")
	fAddrSocket        = number((*corev3.Address)(nil), "socket_address")
	fSocketAddress     = number((*corev3.SocketAddress)(nil), "address")
	fRequestHTTP       = number((*authv3.AttributeContext_Request)(nil), "http")
	fHTTPMethod        = number((*authv3.AttributeContext_HttpRequest)(nil), "method")
	fHTTPHeaders       = number((*authv3.AttributeContext_HttpRequest)(nil), "headers")
	fHTTPPath          = number((*authv3.AttributeContext_HttpRequest)(nil), "path")
	fHTTPHost          = number((*authv3.AttributeContext_HttpRequest)(nil), "host")
	fHTTPScheme        = number((*authv3.AttributeContext_HttpRequest)(nil), "scheme")
	fHTTPHeaderMap     = number((*authv3.AttributeContext_HttpRequest)(nil), "header_map")
	fHeaderMapHeaders  = number((*corev3.HeaderMap)(nil), "headers")
	fHeaderValueKey    = number((*corev3.HeaderValue)(nil), "key")
	fHeaderValueValue  = number((*corev3.HeaderValue)(nil), "value")
	fHeaderValueRaw    = number((*corev3.HeaderValue)(nil), "raw_value")
	addressOneof       = oneofOf((*corev3.Address)(nil), "socket_address")
	errWireTruncated   = errors.New("truncated or malformed protobuf")
	errWireInvalidUTF8 = errors.New("string field contains invalid UTF-8")
)

type message interface{ ProtoReflect() protoreflect.Message }

func number(m message, name protoreflect.Name) protowire.Number {
	return m.ProtoReflect().Descriptor().Fields().ByName(name).Number()
}

// oneofOf is the numbers of the oneof that field name belongs to.
func oneofOf(m message, name protoreflect.Name) []protowire.Number {
	o := m.ProtoReflect().Descriptor().Fields().ByName(name).ContainingOneof()
	var ns []protowire.Number
	for i := range o.Fields().Len() {
		ns = append(ns, o.Fields().Get(i).Number())
	}
	return ns
}

// decode fills w from a CheckRequest's wire bytes. s must be b as a string:
// the kept strings are slices of it.
func (w *wireRequest) decode(b []byte, s string) error {
	w.headers = w.inline[:0]
	m := wireMessage{s: s, b: b, err: &w.err}
	for m.next() {
		if m.num == fCheckAttributes {
			w.attributes(m.sub())
		}
	}
	return w.err
}

// Each of the following reads one message into w, leaving the first error
// in *m.err, which all the messages of a request share.

func (w *wireRequest) attributes(m wireMessage) {
	for m.next() {
		switch m.num {
		case fAttrSource:
			for p := m.sub(); p.next(); {
				if p.num == fPeerAddress {
					w.address(p.sub())
				}
			}
		case fAttrRequest:
			for r := m.sub(); r.next(); {
				if r.num == fRequestHTTP {
					w.http(r.sub())
				}
			}
		}
	}
}

// address reads the source's socket address; another member of the
// address oneof set later replaces it, as in proto.Unmarshal.
func (w *wireRequest) address(m wireMessage) {
	for m.next() {
		if m.num == fAddrSocket {
			for a := m.sub(); a.next(); {
				if a.num == fSocketAddress {
					a.str(&w.source)
				}
			}
			continue
		}
		if slices.Contains(addressOneof, m.num) {
			w.source = ""
		}
	}
}

func (w *wireRequest) http(m wireMessage) {
	for m.next() {
		switch m.num {
		case fHTTPMethod:
			m.str(&w.method)
		case fHTTPPath:
			m.str(&w.path)
		case fHTTPHost:
			m.str(&w.host)
		case fHTTPScheme:
			m.str(&w.scheme)
		case fHTTPHeaders:
			var f field
			for e := m.sub(); e.next(); {
				switch e.num {
				case mapKey:
					e.str(&f.k)
				case mapValue:
					e.str(&f.v)
				}
			}
			w.headers = append(w.headers, f)
		case fHTTPHeaderMap:
			w.hasHeaderMap = true
			for hm := m.sub(); hm.next(); {
				if hm.num != fHeaderMapHeaders {
					continue
				}
				var f field
				var raw string
				for hv := hm.sub(); hv.next(); {
					switch hv.num {
					case fHeaderValueKey:
						hv.str(&f.k)
					case fHeaderValueValue:
						hv.str(&f.v)
					case fHeaderValueRaw:
						raw = hv.s[hv.off : hv.off+len(hv.v)] // bytes: no UTF-8 rule
					}
				}
				if f.v == "" {
					f.v = raw
				}
				w.headerMap = append(w.headerMap, f)
			}
		}
	}
}

// The field numbers of a map entry's key and value.
const mapKey, mapValue protowire.Number = 1, 2

// wireMessage walks the length-delimited fields of one message, skipping
// the others: next moves to the next one (num, its value v, at offset off
// of the whole message s) and is false at the end or on the first error.
type wireMessage struct {
	s    string
	b    []byte // the rest of this message
	base int    // offset of b in s
	num  protowire.Number
	v    []byte
	off  int
	err  *error // the request's first error
}

func (m *wireMessage) next() bool {
	for *m.err == nil && len(m.b) > 0 {
		num, typ, n := protowire.ConsumeTag(m.b)
		if n < 0 {
			m.fail(errWireTruncated)
			return false
		}
		m.advance(n)
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, m.b); n < 0 {
				m.fail(errWireTruncated)
				return false
			}
			m.advance(n)
			continue
		}
		v, n := protowire.ConsumeBytes(m.b)
		if n < 0 {
			m.fail(errWireTruncated)
			return false
		}
		m.num, m.v, m.off = num, v, m.base+n-len(v)
		m.advance(n)
		return true
	}
	return false
}

func (m *wireMessage) advance(n int) { m.b, m.base = m.b[n:], m.base+n }

// sub walks the current field's value as a message.
func (m *wireMessage) sub() wireMessage {
	return wireMessage{s: m.s, b: m.v, base: m.off, err: m.err}
}

func (m *wireMessage) fail(err error) { *m.err = err }

// str sets *dst to the current field's value as a string.
func (m *wireMessage) str(dst *string) {
	if !utf8.Valid(m.v) {
		m.fail(errWireInvalidUTF8)
		return
	}
	*dst = m.s[m.off : m.off+len(m.v)]
}

// Get implements authz.Headers for the headers map: the last entry of a
// name, as the map holds.
func (w *wireRequest) Get(name string) string {
	for i := len(w.headers) - 1; i >= 0; i-- {
		if w.headers[i].k == name {
			return w.headers[i].v
		}
	}
	return ""
}

// headerFields is HeaderFields for a wireRequest.
func (w *wireRequest) headerFields() int {
	n := len(w.headers)
	if n > MaxHeaderFields {
		// Repeated names count once, as in the map: counted only here,
		// where it decides a refusal.
		seen := make(map[string]struct{}, MaxHeaderFields+1)
		for _, f := range w.headers {
			seen[f.k] = struct{}{}
		}
		n = len(seen)
	}
	return max(n, len(w.headerMap))
}

// toRequest is ToRequest for a wireRequest.
func (w *wireRequest) toRequest() authz.Request {
	var headers authz.Headers = w
	if len(w.headers) == 0 && w.hasHeaderMap {
		headers = authz.HeaderMap(joinHeaderMap(len(w.headerMap), func(i int) (string, string) {
			return w.headerMap[i].k, w.headerMap[i].v
		}))
	}
	return request(w.host, w.path, w.method, w.scheme, w.source, headers)
}

// fields are the request's header fields: header_map's when toRequest
// reads it, else the headers map's.
func (w *wireRequest) fields() []field {
	if len(w.headers) == 0 && w.hasHeaderMap {
		return w.headerMap
	}
	return w.headers
}

// String describes the request for gRPC's logs, never its headers.
func (w *wireRequest) String() string { return fmt.Sprintf("CheckRequest %s %s", w.method, w.host) }

// wireCodec is the gRPC server's codec: protobuf, except that a
// CheckRequest is decoded into a wireRequest, and an answer comes encoded
// already (Service.checkWire).
type wireCodec struct{ proto encoding.CodecV2 }

func newWireCodec() wireCodec { return wireCodec{proto: encoding.GetCodecV2(protoenc.Name)} }

func (c wireCodec) Name() string { return c.proto.Name() }
func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(mem.Buffer); ok {
		return mem.BufferSlice{b}, nil
	}
	return c.proto.Marshal(v)
}
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	n := data.Len()
	if n == 0 {
		return w.decode(nil, "")
	}
	// One copy of the message, which the kept strings share; it is never
	// written after this, so it may back a string.
	b := make([]byte, n)
	data.CopyTo(b)
	return w.decode(b, unsafe.String(unsafe.SliceData(b), n))
}

// checkDesc is the ext_authz service with Check decoding its request into
// a wireRequest (Service.checkWire); otherwise authv3's.
var checkDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: authv3.Authorization_ServiceDesc.HandlerType,
	Methods: []grpc.MethodDesc{{
		MethodName: "Check",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			growStack(growIndex)
			in := new(wireRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			s := srv.(*Service)
			if interceptor == nil {
				return s.checkWire(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return s.checkWire(ctx, req.(*wireRequest))
			})
		},
	}},
	Metadata: authv3.Authorization_ServiceDesc.Metadata,
}

// handlerStack is the stack a check's goroutine has when it decides: the
// deepest call of a check needs 4–6.7 KiB of it (a sign-in session's the
// most), gRPC's frames below the handler 1.5 KiB (test/bench
// BenchmarkStack). With 8 KiB a sign-in session's check had its stack
// copied again on every request; 16 KiB leaves room to spare.
const handlerStack = 16 << 10

var growIndex = 1 // read only

// growStack grows the calling goroutine's stack to handlerStack at once.
// gRPC runs each request on a new goroutine, whose stack starts at 2 KiB
// and would otherwise be copied while the request is received and decided
// (4 KiB, 8 KiB, 16 KiB), the last time with a dozen of the check's frames
// on it: the runtime adjusts a copy frame by frame. Called first in the
// handler, it copies only gRPC's few frames, once. i is growIndex, a
// variable so that the frame is not optimised away.
//
//go:noinline
func growStack(i int) byte {
	var a [handlerStack - 4<<10]byte // does not fit in half of handlerStack, fits in it
	a[i%len(a)] = 1
	return a[(i+1)%len(a)]
}
