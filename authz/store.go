package authz

import (
	"context"
	"crypto/sha256"
	"errors"
)

// ErrStoreUnavailable wraps every failure to reach the session store; the
// engine answers store_unavailable (or fails open where the policy says so).
var ErrStoreUnavailable = errors.New("session store unavailable")

// Lookup is what one Load returns: the session named by the cookie (if any)
// and the state of the token's S3 scope.
type Lookup struct {
	Session      Session
	SessionFound bool
	Scope        ScopeState
	ScopeFound   bool
}

// Store keeps session records and S3 scope ends. Every read-modify-write is
// atomic per session and per scope, so that no interleaving can revive an
// ended session (S3). Times are Unix milliseconds.
type Store interface {
	// Load returns the session id of policy (skipped when id is "") and the
	// state of scope (skipped when scope is the zero Digest), in one round
	// trip where the backend allows it. A skipped part is reported not
	// found and costs nothing: a store with a near cache answers a Load of
	// a cached session alone without asking the store of record.
	Load(ctx context.Context, policy, id string, scope Digest) (Lookup, error)
	// Begin stores a new live session and makes it its scope's current one.
	Begin(ctx context.Context, s *Session) error
	// Touch atomically advances a live session (Session.Advance):
	// LastActivity, SignIn and KeepUntil only ever grow, and a grant is
	// replaced only by a newer one. It returns the record as stored
	// afterwards; an ended session is returned unchanged (found=false if it
	// is gone). A Touch that replaces the grant is written to the store of
	// record before it returns: a refreshed grant must not be lost.
	Touch(ctx context.Context, policy, id string, t Touch) (Session, bool, error)
	// End atomically ends the session id (if "" only the scope) with cause at
	// time at, and raises the scope's EndedAt to at. ended is true only for
	// the call that ended a live session, so events are emitted once.
	End(ctx context.Context, policy, id string, scope Digest, e End) (s Session, ended bool, err error)
	// Claim is a one-time claim of key: first is true for exactly one
	// caller until keepUntil (Unix ms), across every replica sharing the
	// store, and false for every other. Single-use login transactions,
	// refresh leases and logout-token replay checks are claims.
	Claim(ctx context.Context, key Digest, keepUntil int64) (first bool, err error)
	// Ready reports whether the store can serve requests.
	Ready(ctx context.Context) error
}

// ClaimKey digests what a claim is about: its purpose (a constant such as
// "login", "refresh") and a value, each length-prefixed, so that claims of
// different purposes never share a key.
func ClaimKey(purpose, value string) Digest {
	h := sha256.New()
	writeField(h, "claim")
	writeField(h, purpose)
	writeField(h, value)
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

// Touch is the activity update applied by Store.Touch.
type Touch struct {
	LastActivity int64 // 0: unchanged
	SignIn       int64 // 0: unchanged
	KeepUntil    int64 // 0: unchanged
	// Grant replaces the session's sealed grant (a refresh) when GrantAt is
	// after the stored one's; "": unchanged.
	Grant   string
	GrantAt int64
}

// MergeTouches joins two activity updates into one that advances a session
// as applying both would (stores that coalesce touches).
func MergeTouches(a, b Touch) Touch {
	a.LastActivity = max(a.LastActivity, b.LastActivity)
	a.SignIn = max(a.SignIn, b.SignIn)
	a.KeepUntil = max(a.KeepUntil, b.KeepUntil)
	if b.Grant != "" && b.GrantAt > a.GrantAt {
		a.Grant, a.GrantAt = b.Grant, b.GrantAt
	}
	return a
}

// End is the session end applied by Store.End.
type End struct {
	Cause     EndCause
	At        int64
	KeepUntil int64
}

// FallbackStore is implemented by stores that keep a local copy of what they
// serve (the near cache of a shared store). While the shared store is
// unreachable, a policy that opted in to fail-open decides on the local copy;
// the store is responsible for carrying ends recorded there back to the
// shared store when it returns, so that nothing is revived (S3).
//
// Such a store also answers reads from that copy while it is current, which
// may lag other replicas' activity and sign-ins: Confirmed returns the store
// with Loads that read the store of record itself. The engine loads so
// before it ends a session for a timeout (S1 and S2 count activity on every
// replica).
type FallbackStore interface {
	Store
	Fallback() Store
	Confirmed() Store
}
