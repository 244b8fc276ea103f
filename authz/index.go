package authz

import (
	"context"
	"crypto/sha256"
)

// SessionIndex is implemented by stores that find sessions by who they
// belong to, for ends decided outside a request: back-channel logout (S18)
// and administration (S19). Every store of this project implements it, and
// authz/storetest holds them to it.
//
// A session is indexed under the keys IndexKeys returns (its user and its
// scope; its scope alone when that is the user's own, Session.UserScope)
// from its Begin until its KeepUntil, which Touch may raise. The
// index is written before the session record, so that an end that lists
// the index after a Begin wrote it finds the session. A Begin racing an end
// is covered by the scopes the end raises first (EndSessions): a session
// created before its scope's end is dead on arrival.
type SessionIndex interface {
	// Indexed returns the kept sessions of policy indexed under key, live
	// and ended, in no particular order.
	Indexed(ctx context.Context, policy string, key Digest) ([]Session, error)
	// Sessions calls fn with every kept session of policy ("": of every
	// policy), live and ended, in no particular order, and stops at fn's
	// first error. fn is called from one goroutine at a time. Rare operations only (an administrator's "every
	// session"): it walks the whole store.
	Sessions(ctx context.Context, policy string, fn func(Session) error) error
}

// SubjectKey is the index key of one user's sessions of a policy. A policy
// trusts one issuer, so within it the subject names the user.
func SubjectKey(subject string) Digest {
	h := sha256.New()
	writeField(h, "subject")
	writeField(h, subject)
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

// IndexKeys returns the keys a SessionIndex files s under: its user
// (SubjectKey) and its S3 scope (the provider session, ScopeDigest with the
// token's sid, or the user when the token had none). A session whose scope
// is the user's (UserScope) is filed under its scope alone (both keys are
// its scope: stores file it once), where Select by user looks too: for a
// store that keeps a scope's sessions beside its scope record, that is no
// index record at all.
func IndexKeys(s *Session) [2]Digest {
	if s.UserScope {
		return [2]Digest{s.Scope, s.Scope}
	}
	return [2]Digest{SubjectKey(s.Subject), s.Scope}
}

// MaxIndexed bounds the sessions a store keeps in one index key; past it
// the entry that expires first is dropped. Ends by user still refuse the
// dropped sessions' tokens through the scopes they raise, but cannot mark
// every such record ended. A user with that many sessions in one policy
// within one absolute lifetime is a client that never keeps its cookie.
const MaxIndexed = 1024

// SessionHash is how administrators name a session (S19): a digest of its
// id, never the id itself, which is a credential (the cookie value).
func SessionHash(id string) string {
	h := sha256.Sum256([]byte("sessiongate-session\x00" + id))
	const hexdigits = "0123456789abcdef"
	var b [32]byte
	for i, c := range h[:16] {
		b[2*i], b[2*i+1] = hexdigits[c>>4], hexdigits[c&15]
	}
	return string(b[:])
}
