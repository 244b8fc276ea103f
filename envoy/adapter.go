package envoy

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/sessiongate/sessiongate/authz"
)

// Header names the gate sets. Upstream ones are overwritten when set and
// removed when not, so a client can never spoof them (S10).
const (
	HeaderUser          = "x-sessiongate-user"
	HeaderSessionExpiry = "x-sessiongate-session-expires-at"
	HeaderIdleExpiry    = "x-sessiongate-idle-expires-at"
	HeaderExpiresIn     = "x-sessiongate-expires-in"
	HeaderReason        = "x-sessiongate-reason"
)

// upstreamHeaders are stripped from every allowed request they are not set on.
var upstreamHeaders = []string{HeaderUser, HeaderSessionExpiry, HeaderIdleExpiry, HeaderExpiresIn, HeaderReason}

// ToRequest translates a CheckRequest without copying its header map.
func ToRequest(req *authv3.CheckRequest) authz.Request {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	if len(headers) == 0 && h.GetHeaderMap() != nil {
		// Envoy sends header_map instead when encode_raw_headers is set.
		headers = make(map[string]string, len(h.GetHeaderMap().GetHeaders()))
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			if old, ok := headers[hv.GetKey()]; ok {
				v = old + "," + v
			}
			headers[hv.GetKey()] = v
		}
	}
	hm := authz.HeaderMap(headers)
	r := authz.Request{
		Host:       h.GetHost(),
		Path:       h.GetPath(),
		Method:     h.GetMethod(),
		Scheme:     h.GetScheme(),
		Headers:    hm,
		SourceAddr: attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(),
		RequestID:  hm["x-request-id"],
	}
	if r.Host == "" {
		r.Host = hm[":authority"]
	}
	if r.Path == "" {
		r.Path = hm[":path"]
	}
	if r.Scheme == "" {
		r.Scheme = hm[":scheme"]
	}
	if r.Scheme == "" {
		// Set by Envoy from the downstream connection unless trusted upstream.
		r.Scheme = hm["x-forwarded-proto"]
	}
	return r
}

// ToResponse translates a decision into Envoy's CheckResponse, with an
// explicit append_action on every header and one entry per Set-Cookie.
func ToResponse(d *authz.Decision) *authv3.CheckResponse {
	if d.Allow {
		return &authv3.CheckResponse{
			Status:       &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: okResponse(d)},
		}
	}
	code := codes.Unauthenticated
	if d.Reason == authz.ReasonUnknownHost {
		code = codes.PermissionDenied
	}
	headers := make([]*corev3.HeaderValueOption, 0, 4+len(d.SetCookie))
	headers = append(headers,
		overwrite("cache-control", "no-store"),
		overwrite(HeaderReason, d.Reason.String()))
	if d.Location != "" {
		headers = append(headers, overwrite("location", d.Location))
	}
	if d.Authenticate != "" {
		headers = append(headers, overwrite("www-authenticate", d.Authenticate))
	}
	for _, c := range d.SetCookie {
		headers = append(headers, appendHeader("set-cookie", c))
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(code), Message: d.Reason.String()},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: headers,
			Body:    d.Reason.String() + "\n",
		}},
	}
}

func okResponse(d *authz.Decision) *authv3.OkHttpResponse {
	ok := &authv3.OkHttpResponse{}
	if d.User != "" {
		ok.Headers = []*corev3.HeaderValueOption{
			overwrite(HeaderUser, d.User),
			overwrite(HeaderSessionExpiry, strconv.FormatInt(d.SessionExpiresAt, 10)),
			overwrite(HeaderIdleExpiry, strconv.FormatInt(d.IdleExpiresAt, 10)),
		}
		ok.HeadersToRemove = upstreamHeaders[3:]
	} else {
		ok.HeadersToRemove = upstreamHeaders
	}
	if d.ExpiresIn >= 0 {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, overwrite(HeaderExpiresIn, strconv.FormatInt(d.ExpiresIn, 10)))
	}
	for _, c := range d.SetCookie {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, appendHeader("set-cookie", c))
	}
	return ok
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func appendHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	}
}
