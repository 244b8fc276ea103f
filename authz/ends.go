package authz

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Selector names sessions of one policy for an end decided outside a
// request: a back-channel logout (S18) or an administrator (S19).
type Selector struct {
	// Issuer is the policy's issuer: S3 scopes are digested with it.
	Issuer string
	// Subject names a user, SID a provider session (the ID token's sid).
	// SID alone: the sessions of that provider session. Subject alone:
	// every session of that user. Both (a logout token with both): the
	// sessions of that sid, and those of that user whose token carried no
	// sid.
	Subject, SID string
	// Session is a SessionHash (administrators name one session so).
	Session string
	// All selects every session of the policy.
	All bool
	// SignedInBy, when set, leaves alone the sessions signed in after it
	// (Unix ms): a logout token ends the sign-ins before it, and a replay
	// of it ends none made since.
	SignedInBy int64
}

// ErrNoSelector is returned for a Selector that names nothing.
var ErrNoSelector = errors.New("authz: selector names no session")

// scopes returns the S3 scopes an end of sel raises: a token of them signed
// in up to the end stays refused, and a sign-in still in flight (a callback)
// cannot open a session in them afterwards.
func (sel Selector) scopes() []Digest {
	var out []Digest
	if sel.SID != "" {
		out = append(out, ScopeDigest(sel.Issuer, "", sel.SID))
	}
	if sel.Subject != "" {
		out = append(out, ScopeDigest(sel.Issuer, sel.Subject, ""))
	}
	return out
}

// Select returns the kept sessions of p that sel names, live and ended.
func Select(ctx context.Context, ix SessionIndex, p *Policy, sel Selector) ([]Session, error) {
	switch {
	case sel.All:
		var out []Session
		err := ix.Sessions(ctx, p.Name, func(s Session) error {
			if sel.Session == "" || SessionHash(s.ID) == sel.Session {
				out = append(out, s)
			}
			return nil
		})
		return out, err
	case sel.SID != "" || sel.Subject != "":
		var keys []Digest
		switch {
		case sel.SID != "" && sel.Subject != "":
			// The user-scope sessions: those whose token had no sid.
			keys = sel.scopes()
		case sel.SID != "":
			keys = sel.scopes()
		default:
			// The user's sessions with a sid, and those without, which
			// are filed under the user's scope alone (IndexKeys).
			keys = []Digest{SubjectKey(sel.Subject), ScopeDigest(sel.Issuer, sel.Subject, "")}
		}
		seen := map[string]bool{}
		var out []Session
		for _, k := range keys {
			list, err := ix.Indexed(ctx, p.Name, k)
			if err != nil {
				return nil, err
			}
			for _, s := range list {
				if seen[s.ID] || (sel.Session != "" && SessionHash(s.ID) != sel.Session) {
					continue
				}
				seen[s.ID] = true
				out = append(out, s)
			}
		}
		return out, nil
	case sel.Session != "":
		return Select(ctx, ix, p, Selector{Session: sel.Session, All: true})
	}
	return nil, ErrNoSelector
}

// EndSessions ends, at `at` (Unix ms) and with cause, the live sessions of
// p that sel names, through the store's ordinary End (the state file's
// journal, Redis' change channel: every replica refuses them within the
// cross-replica bound), and raises the scopes sel names so that no token
// or sign-in from up to `at` opens a session afterwards (S3). Each ended
// session is reported to ev. It returns the sessions it ended; on an error
// some may have ended already (they are returned too) and the call may be
// repeated: ends are idempotent.
func EndSessions(ctx context.Context, st Store, ev Events, p *Policy, sel Selector, cause EndCause, at int64) ([]Session, error) {
	ix, ok := st.(SessionIndex)
	if !ok {
		return nil, fmt.Errorf("authz: the store cannot find sessions by user (%T)", st)
	}
	if at <= 0 {
		return nil, fmt.Errorf("authz: end at %d", at)
	}
	keep := keepEnd(p, nil, nil, at) // until every token the end covers has expired
	// Scopes first: from here on nothing signed in up to `at` begins.
	for _, d := range sel.scopes() {
		if _, _, err := st.End(ctx, p.Name, "", d, End{Cause: cause, At: at, KeepUntil: keep}); err != nil {
			return nil, err
		}
	}
	list, err := Select(ctx, ix, p, sel)
	if err != nil {
		return nil, err
	}
	var out []Session
	for _, s := range list {
		if s.Ended() || sel.SignedInBy != 0 && s.SignIn > sel.SignedInBy {
			continue
		}
		r, ended, err := st.End(ctx, p.Name, s.ID, s.Scope, End{Cause: cause, At: at, KeepUntil: max(keep, s.KeepUntil)})
		if err != nil {
			return out, err
		}
		if ended {
			out = append(out, r)
			ev.SessionEnded(SessionEvent{At: time.UnixMilli(at), Policy: p.Name, Subject: r.Subject, SessionID: r.ID, Scope: r.Scope, Cause: cause})
		}
	}
	return out, nil
}

// EndRequest is one request to end or list sessions from outside a
// request, for the audit log: who asked, what, and how many sessions it
// ended. It carries no token or session id: a session is named by its
// SessionHash.
type EndRequest struct {
	At time.Time
	// Kind is "backchannel_logout" or "admin".
	Kind string
	// Operation is "logout" (back-channel), "list" or "end" (admin).
	Operation string
	// Who asked: the issuer of a logout token, or the fingerprint of an
	// administrator's credential.
	Who      string
	Policies []string
	Subject  string
	SID      string
	Session  string // a SessionHash
	All      bool
	Result   string // "ok" or the reason of a refusal
	Ended    int
	Source   string // the client's address
}
