package oidc

import (
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// resendAttempts bounds the attempts of one request: each stale pooled
// connection costs one.
const resendAttempts = 3

// resendUnanswered sends a request again, up to resendAttempts in all,
// when it went out on a connection kept alive from an earlier request and
// the provider closed that connection before a single byte of answer.
//
// That is the keep-alive race: a server drops a connection idle for its
// keep-alive timeout (Node's 5 s, the default of many providers) just as
// the client reuses it, and under load a server that checks its timers
// before reading may drop it with the request unread. net/http resends
// such a request only when it is idempotent; a POST of an authorization
// code is not, but it is safe to resend: a code is redeemed at most once,
// so a provider that did read the first attempt refuses the second
// (invalid_grant) and no second sign-in comes of it.
type resendUnanswered struct{ base http.RoundTripper }

func (t resendUnanswered) RoundTrip(r *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		// The hooks run on the transport's goroutines.
		var reused, answered atomic.Bool
		trace := &httptrace.ClientTrace{
			GotConn:              func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
			GotFirstResponseByte: func() { answered.Store(true) },
		}
		req := r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
		if attempt > 1 {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
		resp, err := t.base.RoundTrip(req)
		if err == nil || !reused.Load() || answered.Load() || attempt == resendAttempts ||
			r.Context().Err() != nil || (r.Body != nil && r.Body != http.NoBody && r.GetBody == nil) {
			return resp, err
		}
	}
}
