package authz

import "time"

// Events receives what operators and auditors need: one call per decision
// (metrics) and one per session lifecycle change (audit log, gauges). Calls
// are synchronous on the request path, so implementations must be cheap and
// must never block on I/O they cannot bound.
type Events interface {
	Decided(d *Decision, elapsed time.Duration)
	SessionStarted(e SessionEvent)
	SessionEnded(e SessionEvent)
	SessionReauthenticated(e SessionEvent)
}

// SessionEvent describes one session lifecycle change. It carries the session
// id so that sinks can hash it; they must never write it out in clear.
type SessionEvent struct {
	At        time.Time
	Policy    string
	Subject   string // the session's subject
	SessionID string
	// Scope is the session's S3 scope (the token's sid, else the user): an
	// end ends every session of its scope, which auditors link through it.
	Scope Digest
	Cause EndCause // for ends
	// Presented is the subject of the token that presented the session, set
	// for identity mismatches (S4).
	Presented string
	// Method is how the session was signed in to (token or oidc).
	Method SignInMethod
	// Reason is why a sign-in was refused (SignInAuditor).
	Reason     Reason
	SourceAddr string
	RequestID  string
}

// NopEvents discards everything.
type NopEvents struct{}

func (NopEvents) Decided(*Decision, time.Duration)    {}
func (NopEvents) SessionStarted(SessionEvent)         {}
func (NopEvents) SessionEnded(SessionEvent)           {}
func (NopEvents) SessionReauthenticated(SessionEvent) {}

// Fanout sends every event to each of its members in order.
type Fanout []Events

func (f Fanout) Decided(d *Decision, elapsed time.Duration) {
	for _, e := range f {
		e.Decided(d, elapsed)
	}
}

func (f Fanout) SessionStarted(ev SessionEvent) {
	for _, e := range f {
		e.SessionStarted(ev)
	}
}

func (f Fanout) SessionEnded(ev SessionEvent) {
	for _, e := range f {
		e.SessionEnded(ev)
	}
}

func (f Fanout) SessionReauthenticated(ev SessionEvent) {
	for _, e := range f {
		e.SessionReauthenticated(ev)
	}
}

// SignInFinished implements SignInCounter for the members that count.
func (f Fanout) SignInFinished(policy, result string, elapsed time.Duration) {
	for _, e := range f {
		if c, ok := e.(SignInCounter); ok {
			c.SignInFinished(policy, result, elapsed)
		}
	}
}

// Refreshed implements SignInCounter for the members that count.
func (f Fanout) Refreshed(policy, result string) {
	for _, e := range f {
		if c, ok := e.(SignInCounter); ok {
			c.Refreshed(policy, result)
		}
	}
}

// SignInRefused implements SignInAuditor for the members that audit.
func (f Fanout) SignInRefused(ev SessionEvent) {
	for _, e := range f {
		if a, ok := e.(SignInAuditor); ok {
			a.SignInRefused(ev)
		}
	}
}
