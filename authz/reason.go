package authz

// Reason is the closed set of decision reasons. The same strings appear in
// responses (x-sessiongate-reason), logs and metric labels, so they are bounded
// by construction.
type Reason uint8

const (
	ReasonNone Reason = iota // allowed, nothing to report
	ReasonNoToken
	ReasonInvalidToken
	ReasonTokenExpired
	ReasonIdleTimeout
	ReasonAbsoluteTimeout
	ReasonSignedOut
	ReasonIdentityMismatch
	ReasonReauthRequired
	ReasonUnknownHost
	ReasonStoreUnavailable
	// Sign-in (login.oidc) outcomes that are not a redirect: the callback
	// was refused (400), the provider said error=… (403), the provider
	// ignored a request for re-authentication (403, S14), or the provider
	// could not be reached (503).
	ReasonSignInFailed
	ReasonSignInDenied
	ReasonReauthNotPerformed
	ReasonProviderUnavailable
	// ReasonSignedIn answers a callback that opened a session: a redirect
	// (or a page that navigates) to where the sign-in began.
	ReasonSignedIn
	reasonCount
)

var reasonNames = [reasonCount]string{
	ReasonNone:                "",
	ReasonNoToken:             "no_token",
	ReasonInvalidToken:        "invalid_token",
	ReasonTokenExpired:        "token_expired",
	ReasonIdleTimeout:         "idle_timeout",
	ReasonAbsoluteTimeout:     "absolute_timeout",
	ReasonSignedOut:           "signed_out",
	ReasonIdentityMismatch:    "identity_mismatch",
	ReasonReauthRequired:      "reauth_required",
	ReasonUnknownHost:         "unknown_host",
	ReasonStoreUnavailable:    "store_unavailable",
	ReasonSignInFailed:        "sign_in_failed",
	ReasonSignInDenied:        "sign_in_denied",
	ReasonReauthNotPerformed:  "reauth_not_performed",
	ReasonProviderUnavailable: "provider_unavailable",
	ReasonSignedIn:            "signed_in",
}

// String returns the wire name of the reason ("" for ReasonNone).
func (r Reason) String() string {
	if r >= reasonCount {
		return "unknown"
	}
	return reasonNames[r]
}

// Reasons lists every non-empty reason, for pre-creating metric series.
func Reasons() []Reason {
	out := make([]Reason, 0, reasonCount-1)
	for r := ReasonNoToken; r < reasonCount; r++ {
		out = append(out, r)
	}
	return out
}

// HTTPStatus is the HTTP status of a denial of this reason that is answered
// with a page (sign-in outcomes, ErrorPage); the engine sets Decision.Status,
// which adapters send.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonNone:
		return 200
	case ReasonUnknownHost:
		return 403
	case ReasonStoreUnavailable, ReasonProviderUnavailable:
		return 503
	case ReasonSignInFailed:
		return 400
	case ReasonSignInDenied, ReasonReauthNotPerformed:
		return 403
	case ReasonSignedIn:
		return 302
	default:
		return 401
	}
}

// EndCause is why a session ended. It is stored in session records and
// reported in audit events and the sessions_ended_total metric.
type EndCause uint8

const (
	CauseNone EndCause = iota
	CauseIdle
	CauseAbsolute
	CauseSignedOut
	CauseIdentityMismatch
	CauseIdPLogout  // the provider said so (back-channel logout, S18)
	CauseIdPRevoked // the provider refused the refresh token (S16)
	CauseAdmin      // an operator ended it (S19)
	causeCount
)

var causeNames = [causeCount]string{"", "idle", "absolute", "signed_out", "identity_mismatch", "idp_logout", "idp_revoked", "admin"}

func (c EndCause) String() string {
	if c >= causeCount {
		return "unknown"
	}
	return causeNames[c]
}

// Causes lists every end cause, for pre-creating metric series.
func Causes() []EndCause {
	return []EndCause{CauseIdle, CauseAbsolute, CauseSignedOut, CauseIdentityMismatch, CauseIdPLogout, CauseIdPRevoked, CauseAdmin}
}

// Reason is the denial reason of the request that discovers the end.
func (c EndCause) Reason() Reason {
	switch c {
	case CauseIdle:
		return ReasonIdleTimeout
	case CauseAbsolute:
		return ReasonAbsoluteTimeout
	case CauseSignedOut:
		return ReasonSignedOut
	case CauseIdentityMismatch:
		return ReasonIdentityMismatch
	}
	return ReasonReauthRequired
}
