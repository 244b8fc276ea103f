package envoy

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// The gRPC server writes its answers itself, from the answer of a decision
// (answer.go) rather than from the CheckResponse ToResponse builds: the
// generic protobuf encoder sizes and writes each message through
// reflection, and building the messages costs a check a dozen allocations
// (a sign-in session's answer, 1.8 KB of them). appendTo writes the bytes
// proto.Marshal writes for answer.proto() (TestAnswerMatchesProto,
// FuzzAnswer).

var (
	fRespStatus     = number((*authv3.CheckResponse)(nil), "status")
	fRespDenied     = number((*authv3.CheckResponse)(nil), "denied_response")
	fRespOK         = number((*authv3.CheckResponse)(nil), "ok_response")
	fStatusCode     = number((*status.Status)(nil), "code")
	fStatusMessage  = number((*status.Status)(nil), "message")
	fDeniedStatus   = number((*authv3.DeniedHttpResponse)(nil), "status")
	fDeniedHeaders  = number((*authv3.DeniedHttpResponse)(nil), "headers")
	fDeniedBody     = number((*authv3.DeniedHttpResponse)(nil), "body")
	fHTTPStatusCode = number((*typev3.HttpStatus)(nil), "code")
	fOKHeaders      = number((*authv3.OkHttpResponse)(nil), "headers")
	fOKRemove       = number((*authv3.OkHttpResponse)(nil), "headers_to_remove")
	fOKResponseAdd  = number((*authv3.OkHttpResponse)(nil), "response_headers_to_add")
	fOptionHeader   = number((*corev3.HeaderValueOption)(nil), "header")
	fOptionAction   = number((*corev3.HeaderValueOption)(nil), "append_action")
	fHeaderKey      = number((*corev3.HeaderValue)(nil), "key")
	fHeaderValue    = number((*corev3.HeaderValue)(nil), "value")
)

// valid reports whether a's strings are valid UTF-8, as protobuf requires
// of string fields (the generic encoder refuses others).
func (a *answer) valid() bool {
	if !utf8.ValidString(a.message) || !utf8.ValidString(a.body) || !headersValid(a.headers.all()) || !headersValid(a.added.all()) {
		return false
	}
	for _, k := range a.more.all() { // remove is the gate's own names
		if !utf8.ValidString(k) {
			return false
		}
	}
	return true
}

func headersValid(hs []answerHeader) bool {
	for _, h := range hs {
		if !utf8.ValidString(h.key) || !utf8.ValidString(h.value) {
			return false
		}
	}
	return true
}

// sizes are the sizes of a's Status, of its DeniedHttpResponse or
// OkHttpResponse, and of its whole encoding: computed once, for appendTo.
func (a *answer) sizes() (status, body, total int) {
	status, body = a.sizeStatus(), a.sizeBody()
	return status, body, sizeField(fRespStatus, status) + sizeField(a.bodyField(), body)
}

// bodyField is the CheckResponse field of a's DeniedHttpResponse or
// OkHttpResponse.
func (a *answer) bodyField() protowire.Number {
	if a.allow {
		return fRespOK
	}
	return fRespDenied
}

func (a *answer) sizeStatus() int {
	return sizeEnum(fStatusCode, a.code) + sizeString(fStatusMessage, a.message)
}

// sizeBody is the size of the DeniedHttpResponse or OkHttpResponse.
func (a *answer) sizeBody() int {
	if !a.allow {
		return sizeField(fDeniedStatus, sizeEnum(fHTTPStatusCode, a.status)) + sizeHeaders(fDeniedHeaders, a.headers.all()) +
			sizeString(fDeniedBody, a.body)
	}
	n := sizeHeaders(fOKHeaders, a.headers.all()) + sizeHeaders(fOKResponseAdd, a.added.all())
	for _, k := range a.remove {
		n += sizeField(fOKRemove, len(k))
	}
	for _, k := range a.more.all() {
		n += sizeField(fOKRemove, len(k))
	}
	return n
}

// appendTo appends the encoding of a, which must be valid, given the sizes
// of its Status and body (sizes): the bytes proto.Marshal writes for the
// CheckResponse a.proto() builds.
func (a *answer) appendTo(b []byte, status, body int) []byte {
	b = appendMessage(b, fRespStatus, status)
	b = appendEnum(b, fStatusCode, a.code)
	b = appendString(b, fStatusMessage, a.message)
	b = appendMessage(b, a.bodyField(), body)
	if !a.allow {
		b = appendMessage(b, fDeniedStatus, sizeEnum(fHTTPStatusCode, a.status))
		b = appendEnum(b, fHTTPStatusCode, a.status)
		b = appendHeaders(b, fDeniedHeaders, a.headers.all())
		return appendString(b, fDeniedBody, a.body)
	}
	b = appendHeaders(b, fOKHeaders, a.headers.all())
	for _, k := range a.remove {
		b = appendRepeated(b, fOKRemove, k)
	}
	for _, k := range a.more.all() {
		b = appendRepeated(b, fOKRemove, k)
	}
	return appendHeaders(b, fOKResponseAdd, a.added.all())
}

// The HeaderValueOption's append_action of a header.
func action(h answerHeader) int32 {
	if h.append {
		return int32(corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	}
	return int32(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
}

func sizeOption(h answerHeader) int {
	return sizeField(fOptionHeader, sizeHeader(h)) + sizeEnum(fOptionAction, action(h))
}

func sizeHeader(h answerHeader) int {
	return sizeString(fHeaderKey, h.key) + sizeString(fHeaderValue, h.value)
}

func sizeHeaders(num protowire.Number, hs []answerHeader) int {
	n := 0
	for _, h := range hs {
		n += sizeField(num, sizeOption(h))
	}
	return n
}

func appendHeaders(b []byte, num protowire.Number, hs []answerHeader) []byte {
	for _, h := range hs {
		b = appendMessage(b, num, sizeOption(h))
		b = appendMessage(b, fOptionHeader, sizeHeader(h))
		b = appendString(b, fHeaderKey, h.key)
		b = appendString(b, fHeaderValue, h.value)
		b = appendEnum(b, fOptionAction, action(h))
	}
	return b
}

// sizeField is the size of a length-delimited field of n bytes.
func sizeField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

// sizeString is the size of a string field, none when empty (proto3).
func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return sizeField(num, len(s))
}

// sizeEnum is the size of an int32 or enum field, none when zero.
func sizeEnum(num protowire.Number, v int32) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(uint64(int64(v)))
}

func appendMessage(b []byte, num protowire.Number, size int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(size))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendRepeated appends an element of a repeated string field, written
// even when empty.
func appendRepeated(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendEnum(b []byte, num protowire.Number, v int32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(int64(v)))
}
