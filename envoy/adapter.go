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
//
// Each response is built in one allocation (okAnswer, deniedAnswer) rather
// than one per message: a response is a dozen small protos that all live
// exactly as long as each other, until gRPC has marshalled them.
func ToResponse(d *authz.Decision) *authv3.CheckResponse {
	if d.Allow {
		return okResponse(d)
	}
	return deniedResponse(d)
}

// okAnswer is an allowed response and everything it points to.
type okAnswer struct {
	resp     authv3.CheckResponse
	status   status.Status
	oneof    authv3.CheckResponse_OkResponse
	ok       authv3.OkHttpResponse
	identity [3]header // user and the two deadlines
	headers  [3]*corev3.HeaderValueOption
}

// header is one HeaderValueOption with its HeaderValue.
type header struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

func (h *header) set(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	h.val.Key, h.val.Value = k, v
	h.opt.Header, h.opt.AppendAction = &h.val, action
	return &h.opt
}

func okResponse(d *authz.Decision) *authv3.CheckResponse {
	a := &okAnswer{}
	a.resp.Status, a.resp.HttpResponse = &a.status, &a.oneof
	a.oneof.OkResponse = &a.ok
	ok := &a.ok
	if d.User != "" {
		// Both deadlines in one string: one allocation for two headers.
		var buf [40]byte
		b := strconv.AppendInt(buf[:0], d.SessionExpiresAt, 10)
		n := len(b)
		deadlines := string(strconv.AppendInt(b, d.IdleExpiresAt, 10))
		a.headers = [3]*corev3.HeaderValueOption{
			a.identity[0].set(HeaderUser, d.User, overwriteAction),
			a.identity[1].set(HeaderSessionExpiry, deadlines[:n], overwriteAction),
			a.identity[2].set(HeaderIdleExpiry, deadlines[n:], overwriteAction),
		}
		ok.Headers = a.headers[:]
		ok.HeadersToRemove = upstreamHeaders[3:]
	} else {
		ok.HeadersToRemove = upstreamHeaders
	}
	if n := len(d.SetCookie); n > 0 || d.ExpiresIn >= 0 {
		hs := make([]header, 0, n+1)
		ok.ResponseHeadersToAdd = make([]*corev3.HeaderValueOption, 0, n+1)
		if d.ExpiresIn >= 0 {
			hs = append(hs, header{})
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd,
				hs[len(hs)-1].set(HeaderExpiresIn, strconv.FormatInt(d.ExpiresIn, 10), overwriteAction))
		}
		for _, c := range d.SetCookie {
			hs = append(hs, header{})
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, hs[len(hs)-1].set("set-cookie", c, appendAction))
		}
	}
	return &a.resp
}

// deniedAnswer is a denial and everything it points to, with room for the
// usual headers: cache-control, the reason, location (302) or
// www-authenticate (401), and a cookie.
type deniedAnswer struct {
	resp    authv3.CheckResponse
	status  status.Status
	oneof   authv3.CheckResponse_DeniedResponse
	denied  authv3.DeniedHttpResponse
	code    typev3.HttpStatus
	hs      [4]header
	headers [4]*corev3.HeaderValueOption
}

func deniedResponse(d *authz.Decision) *authv3.CheckResponse {
	a := &deniedAnswer{}
	code := codes.Unauthenticated
	if d.Reason == authz.ReasonUnknownHost {
		code = codes.PermissionDenied
	}
	reason := d.Reason.String()
	a.status = status.Status{Code: int32(code), Message: reason}
	a.code.Code = typev3.StatusCode(d.Status)
	a.denied.Status, a.denied.Body = &a.code, reason+"\n"
	a.resp.Status, a.resp.HttpResponse = &a.status, &a.oneof
	a.oneof.DeniedResponse = &a.denied

	hs := a.hs[:0]
	if extra := 4 + len(d.SetCookie) - len(a.hs); extra > 0 {
		hs = make([]header, 0, len(a.hs)+extra)
	}
	headers := a.headers[:0]
	put := func(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) {
		hs = append(hs, header{})
		headers = append(headers, hs[len(hs)-1].set(k, v, action))
	}
	put("cache-control", "no-store", overwriteAction)
	put(HeaderReason, reason, overwriteAction)
	if d.Location != "" {
		put("location", d.Location, overwriteAction)
	}
	if d.Authenticate != "" {
		put("www-authenticate", d.Authenticate, overwriteAction)
	}
	for _, c := range d.SetCookie {
		put("set-cookie", c, appendAction)
	}
	a.denied.Headers = headers
	return &a.resp
}

const (
	overwriteAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	appendAction    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
)
