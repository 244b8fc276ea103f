package authz

// Decision is the engine's answer, free of any proxy's wire format. Adapters
// translate it (envoy: CheckResponse; HTTP forward-auth: a status and headers).
type Decision struct {
	// Allow is true when the request may proceed; a dry-run denial is allowed
	// with DryRun set and Reason naming what enforcement would have said.
	Allow  bool
	DryRun bool
	Reason Reason
	// Warn is set inside the policy's warning window (S11): the client is
	// told ExpiresIn. The zero value warns of nothing. (Here, beside the
	// other small fields, so that it costs the struct no padding.)
	Warn bool
	// Policy is the name of the matched policy ("" for an unknown host).
	Policy string

	// Status is the HTTP status of a denial: 302, 401, 403 or 503; 400 for
	// a refused sign-in callback; 200 for the page that a completed
	// sign-in navigates on with (reason signed_in, SameSite=Strict cookies),
	// which forward-auth proxies, where 2xx means allow, show as 403.
	Status int
	// Location is the redirect target of a 302 denial.
	Location string
	// Authenticate is the WWW-Authenticate value of a 401 denial.
	Authenticate string

	// Upstream identity and deadlines of an allowed request with a session;
	// empty for bypassed paths, where adapters remove any client-sent copies.
	User             string
	SessionExpiresAt int64 // Unix seconds, absolute deadline
	IdleExpiresAt    int64 // Unix seconds, inactivity deadline
	// ExpiresIn is the seconds (>= 0) until the earlier deadline, told to
	// the client when Warn is set (inside the warning window).
	ExpiresIn int64

	// SetCookie holds Set-Cookie values for the client, one header each.
	SetCookie []string

	// Upstream holds further headers of an allowed request for the
	// application: the access token and identity headers of a sign-in
	// (login.oidc). Adapters set each one overwriting any client-sent copy
	// (S10, S15); one with an empty Value (an identity header the grant has
	// no value for, or whose value no header can carry) is removed, or set
	// empty where a proxy copies a fixed list of headers.
	Upstream []Header
	// StripCookies asks adapters to replace the allowed request's Cookie
	// header with UpstreamCookie: the request's cookies without the gate's
	// own (S15). An empty UpstreamCookie removes the header.
	StripCookies   bool
	UpstreamCookie string

	// Body and ContentType are the page of a denial that is not a redirect
	// (sign-in errors): HTML for browsers, JSON otherwise. Empty: adapters
	// write their usual short body.
	Body        string
	ContentType string
}

// Denial reports whether enforcement would deny (the response denies, or a
// dry-run policy let a denial through).
func (d *Decision) Denial() bool { return !d.Allow || d.DryRun }

// Label is the bounded metric value of the decision: allow, deny or dry_run_deny.
func (d *Decision) Label() string {
	switch {
	case d.DryRun:
		return "dry_run_deny"
	case d.Allow:
		return "allow"
	}
	return "deny"
}
