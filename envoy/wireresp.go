package envoy

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// The gRPC server encodes the responses ToResponse builds itself: the
// generic protobuf encoder sizes and writes each message through
// reflection. marshalResponse writes the same bytes for the fields
// ToResponse sets (TestMarshalResponseMatchesProto, FuzzMarshalResponse);
// a response with any other field set is left to the generic encoder.

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

// marshalResponse encodes r, or returns false for a response with a field
// it does not encode.
func marshalResponse(r *authv3.CheckResponse) ([]byte, bool) {
	if !encodable(r) {
		return nil, false
	}
	return appendResponse(make([]byte, 0, sizeResponse(r)), r), true
}

// appendResponse appends the encoding of r, which must be encodable.
func appendResponse(b []byte, r *authv3.CheckResponse) []byte {
	if r.Status != nil {
		b = appendMessage(b, fRespStatus, sizeStatus(r.Status))
		b = appendStatus(b, r.Status)
	}
	if d := r.GetDeniedResponse(); d != nil {
		b = appendMessage(b, fRespDenied, sizeDenied(d))
		if d.Status != nil {
			b = appendMessage(b, fDeniedStatus, sizeEnum(fHTTPStatusCode, int32(d.Status.Code)))
			b = appendEnum(b, fHTTPStatusCode, int32(d.Status.Code))
		}
		b = appendOptions(b, fDeniedHeaders, d.Headers)
		b = appendString(b, fDeniedBody, d.Body)
	}
	if ok := r.GetOkResponse(); ok != nil {
		b = appendMessage(b, fRespOK, sizeOK(ok))
		b = appendOptions(b, fOKHeaders, ok.Headers)
		for _, k := range ok.HeadersToRemove {
			b = protowire.AppendTag(b, fOKRemove, protowire.BytesType)
			b = protowire.AppendString(b, k)
		}
		b = appendOptions(b, fOKResponseAdd, ok.ResponseHeadersToAdd)
	}
	return b
}

// encodable reports whether r sets only fields marshalResponse encodes,
// with valid UTF-8 in its strings (the generic encoder refuses others).
func encodable(r *authv3.CheckResponse) bool {
	if r.DynamicMetadata != nil || len(r.Status.GetDetails()) > 0 || r.GetErrorResponse() != nil ||
		!utf8.ValidString(r.Status.GetMessage()) {
		return false
	}
	if d := r.GetDeniedResponse(); d != nil {
		return optionsEncodable(d.Headers) && utf8.ValidString(d.Body)
	}
	if ok := r.GetOkResponse(); ok != nil {
		if ok.DynamicMetadata != nil || len(ok.QueryParametersToSet) > 0 || len(ok.QueryParametersToRemove) > 0 ||
			!optionsEncodable(ok.Headers) || !optionsEncodable(ok.ResponseHeadersToAdd) {
			return false
		}
		for _, k := range ok.HeadersToRemove {
			if !utf8.ValidString(k) {
				return false
			}
		}
	}
	return true
}

func optionsEncodable(opts []*corev3.HeaderValueOption) bool {
	for _, o := range opts {
		if o == nil || o.Append != nil || o.KeepEmptyValue || o.Header == nil || len(o.Header.RawValue) > 0 ||
			!utf8.ValidString(o.Header.Key) || !utf8.ValidString(o.Header.Value) {
			return false
		}
	}
	return true
}

func sizeResponse(r *authv3.CheckResponse) int {
	n := 0
	if r.Status != nil {
		n += sizeField(fRespStatus, sizeStatus(r.Status))
	}
	if d := r.GetDeniedResponse(); d != nil {
		n += sizeField(fRespDenied, sizeDenied(d))
	}
	if ok := r.GetOkResponse(); ok != nil {
		n += sizeField(fRespOK, sizeOK(ok))
	}
	return n
}

func sizeStatus(s *status.Status) int {
	return sizeEnum(fStatusCode, s.Code) + sizeString(fStatusMessage, s.Message)
}

func appendStatus(b []byte, s *status.Status) []byte {
	b = appendEnum(b, fStatusCode, s.Code)
	return appendString(b, fStatusMessage, s.Message)
}

func sizeDenied(d *authv3.DeniedHttpResponse) int {
	n := sizeOptions(fDeniedHeaders, d.Headers) + sizeString(fDeniedBody, d.Body)
	if d.Status != nil {
		n += sizeField(fDeniedStatus, sizeEnum(fHTTPStatusCode, int32(d.Status.Code)))
	}
	return n
}

func sizeOK(ok *authv3.OkHttpResponse) int {
	n := sizeOptions(fOKHeaders, ok.Headers) + sizeOptions(fOKResponseAdd, ok.ResponseHeadersToAdd)
	for _, k := range ok.HeadersToRemove {
		n += sizeField(fOKRemove, len(k))
	}
	return n
}

func sizeOption(o *corev3.HeaderValueOption) int {
	return sizeField(fOptionHeader, sizeHeader(o.Header)) + sizeEnum(fOptionAction, int32(o.AppendAction))
}

func sizeHeader(h *corev3.HeaderValue) int {
	return sizeString(fHeaderKey, h.Key) + sizeString(fHeaderValue, h.Value)
}

func sizeOptions(num protowire.Number, opts []*corev3.HeaderValueOption) int {
	n := 0
	for _, o := range opts {
		n += sizeField(num, sizeOption(o))
	}
	return n
}

func appendOptions(b []byte, num protowire.Number, opts []*corev3.HeaderValueOption) []byte {
	for _, o := range opts {
		b = appendMessage(b, num, sizeOption(o))
		b = appendMessage(b, fOptionHeader, sizeHeader(o.Header))
		b = appendString(b, fHeaderKey, o.Header.Key)
		b = appendString(b, fHeaderValue, o.Header.Value)
		b = appendEnum(b, fOptionAction, int32(o.AppendAction))
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

func appendEnum(b []byte, num protowire.Number, v int32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(int64(v)))
}
