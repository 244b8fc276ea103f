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

// answer is the CheckResponse that answers a decision, as plain values: the
// one rule of what an answer says (build, removeAlias), from which
// ToResponse builds the protobuf message and the gRPC server's codec writes
// its bytes without building it (appendTo, wireresp.go). Its lists hold the
// usual headers in place, so that an answer built in a function's frame
// costs no allocation.
type answer struct {
	allow   bool
	code    int32  // google.rpc.Status code
	message string // google.rpc.Status message
	status  int32  // a denial's HTTP status
	body    string // a denial's body
	// headers are an allowed request's headers for the application, or a
	// denial's for the client.
	headers list[answerHeader]
	// remove and more are an allowed request's headers_to_remove: remove a
	// shared list (never modified), more what follows it.
	remove []string
	more   list[string]
	added  list[answerHeader] // an allowed request's response_headers_to_add

	aliases map[string]struct{} // removeAlias's, to remove each once
}

// list is a short list held in place: its first 8 elements in an array, all
// of them in a slice past that. It never points into itself, which would
// move an answer built in a function's frame to the heap.
type list[T any] struct {
	n    int
	in   [8]T
	past []T
}

func (l *list[T]) add(v T) {
	if l.past == nil && l.n < len(l.in) {
		l.in[l.n] = v
		l.n++
		return
	}
	if l.past == nil {
		l.past = append(make([]T, 0, 2*len(l.in)), l.in[:l.n]...)
	}
	l.past = append(l.past, v)
}

// all returns the elements, in order.
func (l *list[T]) all() []T {
	if l.past != nil {
		return l.past
	}
	return l.in[:l.n]
}

// answerHeader is a HeaderValueOption: a header and whether it is appended
// to the copies that exist (set-cookie) or overwrites them.
type answerHeader struct {
	key, value string
	append     bool
}

// DryRunPrefix starts the status message of a dry-run allow, followed by
// the reason enforcement would have denied with.
const DryRunPrefix = "dry_run_deny: "

// build sets a, a zero answer, to the answer of d, with an explicit append
// action on every header and one entry per Set-Cookie.
func (a *answer) build(d *authz.Decision) {
	if !d.Allow {
		a.deny(d)
		return
	}
	a.allow = true
	if d.DryRun {
		// What enforcement would have answered, for `sessiongate check` and
		// Envoy's debug logs; Envoy ignores the message of an OK status.
		a.message = DryRunPrefix + d.Reason.String()
	}
	if d.User != "" {
		// Both deadlines in one string: one allocation for two headers.
		var buf [40]byte
		b := strconv.AppendInt(buf[:0], d.SessionExpiresAt, 10)
		n := len(b)
		deadlines := string(strconv.AppendInt(b, d.IdleExpiresAt, 10))
		a.set(HeaderUser, d.User)
		a.set(HeaderSessionExpiry, deadlines[:n])
		a.set(HeaderIdleExpiry, deadlines[n:])
		a.remove = removeWithUser
	} else {
		a.remove = removeAll
	}
	// A sign-in's headers for the application (the access token, identity
	// headers), each overwriting a client-sent copy (S10, S15); one without
	// a value is only a client-sent copy to remove (S10).
	for _, h := range d.Upstream {
		if h.Value == "" {
			a.more.add(h.Name)
		} else {
			a.set(h.Name, h.Value)
		}
	}
	// The request's Cookie header without the gate's own cookies (S15):
	// replaced, or removed when nothing is left.
	if d.StripCookies {
		if d.UpstreamCookie != "" {
			a.set("cookie", d.UpstreamCookie)
		} else {
			a.more.add("cookie")
		}
	}
	if d.Warn {
		a.added.add(answerHeader{key: HeaderExpiresIn, value: strconv.FormatInt(d.ExpiresIn, 10)})
	}
	for _, c := range d.SetCookie {
		a.added.add(answerHeader{key: "set-cookie", value: c, append: true})
	}
}

// deny sets a to the denial of d.
func (a *answer) deny(d *authz.Decision) {
	reason := d.Reason.String()
	a.code, a.message = int32(codes.Unauthenticated), reason
	if d.Reason == authz.ReasonUnknownHost {
		a.code = int32(codes.PermissionDenied)
	}
	a.status, a.body = int32(d.Status), reason+"\n"
	a.set("cache-control", "no-store")
	a.set(HeaderReason, reason)
	if d.Location != "" {
		a.set("location", d.Location)
	}
	if d.Authenticate != "" {
		a.set("www-authenticate", d.Authenticate)
	}
	for _, c := range d.SetCookie {
		a.headers.add(answerHeader{key: "set-cookie", value: c, append: true})
	}
	if d.Body != "" {
		// A page (sign-in errors): the decision's body and its type.
		a.body = d.Body
		ct := d.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		a.set("content-type", ct)
		a.set("x-content-type-options", "nosniff")
	}
}

// set adds a header that overwrites any copy of it.
func (a *answer) set(k, v string) { a.headers.add(answerHeader{key: k, value: v}) }

// removeAlias adds name, a header name of the request, to an allowed
// answer's removals when it is an underscore spelling of one of the gate's
// headers (authz.IsGateHeaderAlias), so that no CGI-style upstream reads it
// as the gate's own (S10); once, however often the request repeats it.
func (a *answer) removeAlias(name string) {
	if !a.allow || !authz.IsGateHeaderAlias(name) {
		return
	}
	if _, dup := a.aliases[name]; dup {
		return
	}
	if a.aliases == nil {
		a.aliases = map[string]struct{}{} // requests rarely carry one
	}
	a.aliases[name] = struct{}{}
	a.more.add(name)
}

// proto builds the CheckResponse of a.
func (a *answer) proto() *authv3.CheckResponse {
	r := &authv3.CheckResponse{Status: &status.Status{Code: a.code, Message: a.message}}
	if !a.allow {
		r.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(a.status)}, Headers: options(a.headers.all()), Body: a.body}}
		return r
	}
	ok := &authv3.OkHttpResponse{Headers: options(a.headers.all()), ResponseHeadersToAdd: options(a.added.all()), HeadersToRemove: a.remove}
	if more := a.more.all(); len(more) > 0 {
		ok.HeadersToRemove = append(append(make([]string, 0, len(a.remove)+len(more)), a.remove...), more...)
	}
	r.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	return r
}

// options are hs as HeaderValueOptions; nil for none.
func options(hs []answerHeader) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	opts := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if h.append {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		opts[i] = &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.key, Value: h.value}, AppendAction: action}
	}
	return opts
}
