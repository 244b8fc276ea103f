package envoy

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/sessiongate/sessiongate/authz"
)

// Header names the gate sets (authz owns them; re-exported for callers).
const (
	HeaderUser          = authz.HeaderUser
	HeaderSessionExpiry = authz.HeaderSessionExpiry
	HeaderIdleExpiry    = authz.HeaderIdleExpiry
	HeaderExpiresIn     = authz.HeaderExpiresIn
	HeaderReason        = authz.HeaderReason
)

// Client-sent copies of the gate's headers are removed from every allowed
// request they are not set on; the three identity headers are overwritten
// when the gate sets them (S10).
var (
	removeAll      = authz.UpstreamRemovals(false)
	removeWithUser = authz.UpstreamRemovals(true)
)

// RemoveAliases adds to an allowed response the underscore spellings of the
// gate's headers that the request carries (authz.IsGateHeaderAlias), so that
// no CGI-style upstream reads one as the gate's own (S10). names calls its
// argument with each of the request's header names; a name it repeats is
// removed once.
func RemoveAliases(resp *authv3.CheckResponse, names func(func(string))) {
	ok := resp.GetOkResponse()
	if ok == nil {
		return
	}
	var seen map[string]struct{} // made for the first alias: requests rarely carry one
	names(func(k string) {
		if !authz.IsGateHeaderAlias(k) {
			return
		}
		if seen == nil {
			seen = map[string]struct{}{}
		}
		if _, dup := seen[k]; dup {
			return
		}
		seen[k] = struct{}{}
		// Never append into the shared lists above.
		ok.HeadersToRemove = append(slices.Clip(ok.HeadersToRemove), k)
	})
}

// MaxHeaderFields bounds the header fields of one CheckRequest (the entries
// of header_map, or of headers). Envoy sends at most its max_headers_count
// (100 by default); a request with more is refused by Service.Check with
// RESOURCE_EXHAUSTED, as one over MaxMessageBytes is, before any work.
const MaxHeaderFields = 10_000

// HeaderFields is the number of header fields a CheckRequest carries.
func HeaderFields(req *authv3.CheckRequest) int {
	h := req.GetAttributes().GetRequest().GetHttp()
	return max(len(h.GetHeaders()), len(h.GetHeaderMap().GetHeaders()))
}

// ToRequest translates a CheckRequest without copying its header map.
func ToRequest(req *authv3.CheckRequest) authz.Request {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	if len(headers) == 0 && h.GetHeaderMap() != nil {
		// Envoy sends header_map instead when encode_raw_headers is set.
		hvs := h.GetHeaderMap().GetHeaders()
		headers = joinHeaderMap(len(hvs), func(i int) (string, string) {
			v := hvs[i].GetValue()
			if v == "" {
				v = string(hvs[i].GetRawValue())
			}
			return hvs[i].GetKey(), v
		})
	}
	return request(h.GetHost(), h.GetPath(), h.GetMethod(), h.GetScheme(),
		attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(), authz.HeaderMap(headers))
}

// request is the authz.Request of a CheckRequest's fields: where the
// pseudo-headers stand in for empty ones.
func request(host, path, method, scheme, source string, hs authz.Headers) authz.Request {
	r := authz.Request{
		Host: host, Path: path, Method: method, Scheme: scheme,
		Headers: hs, SourceAddr: source, RequestID: hs.Get("x-request-id"),
	}
	if r.Host == "" {
		r.Host = hs.Get(":authority")
	}
	if r.Path == "" {
		r.Path = hs.Get(":path")
	}
	if r.Scheme == "" {
		r.Scheme = hs.Get(":scheme")
	}
	if r.Scheme == "" {
		// Set by Envoy from the downstream connection unless trusted upstream.
		r.Scheme = hs.Get("x-forwarded-proto")
	}
	return r
}

// joinHeaderMap folds header_map entries into one value per name. Repeated
// fields join with ",", but cookie crumbs with "; " (RFC 9113 §8.2.3): with
// "," a later crumb's session cookie or token would be lost in the previous
// one's value. Each repeated name is built in one growing buffer, so that
// the cost stays linear in the size of the message: joining by string
// concatenation copied the value so far for every repeat, quadratic in the
// number of repeats (160,000 copies of one name took seconds of CPU).
func joinHeaderMap(n int, at func(i int) (k, v string)) map[string]string {
	headers := make(map[string]string, n)
	var repeated map[string]*strings.Builder
	for i := range n {
		k, v := at(i)
		old, ok := headers[k]
		if !ok {
			headers[k] = v
			continue
		}
		if repeated == nil {
			repeated = make(map[string]*strings.Builder)
		}
		b := repeated[k]
		if b == nil {
			b = &strings.Builder{}
			b.WriteString(old)
			repeated[k] = b
		}
		if k == "cookie" {
			b.WriteString("; ")
		} else {
			b.WriteByte(',')
		}
		b.WriteString(v)
	}
	for k, b := range repeated {
		headers[k] = b.String()
	}
	return headers
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
	identity [len(authz.SessionHeaders)]header // user and the two deadlines
	headers  [len(authz.SessionHeaders)]*corev3.HeaderValueOption
}

// DryRunPrefix starts the status message of a dry-run allow, followed by
// the reason enforcement would have denied with.
const DryRunPrefix = "dry_run_deny: "

func okResponse(d *authz.Decision) *authv3.CheckResponse {
	a := &okAnswer{}
	a.resp.Status, a.resp.HttpResponse = &a.status, &a.oneof
	a.oneof.OkResponse = &a.ok
	if d.DryRun {
		// What enforcement would have answered, for `sessiongate check` and
		// Envoy's debug logs; Envoy ignores the message of an OK status.
		a.status.Message = DryRunPrefix + d.Reason.String()
	}
	ok := &a.ok
	if d.User != "" {
		// Both deadlines in one string: one allocation for two headers.
		var buf [40]byte
		b := strconv.AppendInt(buf[:0], d.SessionExpiresAt, 10)
		n := len(b)
		deadlines := string(strconv.AppendInt(b, d.IdleExpiresAt, 10))
		l := headerList{hs: a.identity[:0], opts: a.headers[:0]}
		l.add(HeaderUser, d.User, overwriteAction)
		l.add(HeaderSessionExpiry, deadlines[:n], overwriteAction)
		l.add(HeaderIdleExpiry, deadlines[n:], overwriteAction)
		ok.Headers = l.opts
		ok.HeadersToRemove = removeWithUser
	} else {
		ok.HeadersToRemove = removeAll
	}
	if len(d.Upstream) > 0 || d.StripCookies {
		upstream(ok, d)
	}
	if n := len(d.SetCookie); n > 0 || d.Warn {
		l := headerList{hs: make([]header, 0, n+1)}
		if d.Warn {
			l.add(HeaderExpiresIn, strconv.FormatInt(d.ExpiresIn, 10), overwriteAction)
		}
		for _, c := range d.SetCookie {
			l.add("set-cookie", c, appendAction)
		}
		ok.ResponseHeadersToAdd = l.opts
	}
	return &a.resp
}

// upstream adds a sign-in's headers for the application (the access token,
// identity headers), each overwriting a client-sent copy (S10, S15), and the
// request's Cookie header without the gate's own cookies (S15): replaced, or
// removed when nothing is left.
func upstream(ok *authv3.OkHttpResponse, d *authz.Decision) {
	l := headerList{hs: make([]header, 0, len(d.Upstream)+1),
		opts: make([]*corev3.HeaderValueOption, len(ok.Headers), len(ok.Headers)+len(d.Upstream)+1)}
	copy(l.opts, ok.Headers)
	for _, h := range d.Upstream {
		if h.Value == "" {
			// No value: only a client-sent copy to remove (S10).
			ok.HeadersToRemove = append(slices.Clip(ok.HeadersToRemove), h.Name)
			continue
		}
		l.add(h.Name, h.Value, overwriteAction)
	}
	if d.StripCookies {
		if d.UpstreamCookie != "" {
			l.add("cookie", d.UpstreamCookie, overwriteAction)
		} else {
			// Never append into the shared lists above.
			ok.HeadersToRemove = append(slices.Clip(ok.HeadersToRemove), "cookie")
		}
	}
	ok.Headers = l.opts
}

// deniedAnswer is a denial and everything it points to, with room for the
// usual headers: cache-control, the reason, location (302) or
// www-authenticate (401), and a cookie. A page's content type and nosniff,
// or more cookies, go past it (headerList): a header is 160 bytes, and
// every denial would carry room it rarely uses.
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
	a.resp.Status, a.resp.HttpResponse = &a.status, &a.oneof
	a.oneof.DeniedResponse = &a.denied
	reason := d.Reason.String()
	a.status.Code, a.status.Message = int32(codes.Unauthenticated), reason
	if d.Reason == authz.ReasonUnknownHost {
		a.status.Code = int32(codes.PermissionDenied)
	}
	a.code.Code = typev3.StatusCode(d.Status)
	a.denied.Status, a.denied.Body = &a.code, reason+"\n"
	l := headerList{hs: a.hs[:0], opts: a.headers[:0]}
	l.add("cache-control", "no-store", overwriteAction)
	l.add(HeaderReason, reason, overwriteAction)
	if d.Location != "" {
		l.add("location", d.Location, overwriteAction)
	}
	if d.Authenticate != "" {
		l.add("www-authenticate", d.Authenticate, overwriteAction)
	}
	for _, c := range d.SetCookie {
		l.add("set-cookie", c, appendAction)
	}
	if d.Body != "" {
		// A page (sign-in errors): the decision's body and its type.
		a.denied.Body = d.Body
		ct := d.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		l.add("content-type", ct, overwriteAction)
		l.add("x-content-type-options", "nosniff", overwriteAction)
	}
	a.denied.Headers = l.opts
	return &a.resp
}

// header is one HeaderValueOption with its HeaderValue.
type header struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

// headerList builds a []*HeaderValueOption in storage given up front. Past
// its capacity append moves on to new arrays; the options already handed
// out stay valid where they are.
type headerList struct {
	hs   []header
	opts []*corev3.HeaderValueOption
}

func (l *headerList) add(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) {
	l.hs = append(l.hs, header{})
	h := &l.hs[len(l.hs)-1]
	h.val.Key, h.val.Value = k, v
	h.opt.Header, h.opt.AppendAction = &h.val, action
	l.opts = append(l.opts, &h.opt)
}

const (
	overwriteAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	appendAction    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
)
