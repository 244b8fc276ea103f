package authz

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Digest is a 128-bit truncated SHA-256, collision-resistant enough to stand
// for an identity or an S3 scope without storing the claims themselves.
type Digest [16]byte

// IdentityDigest digests the identity a session is bound to (S4): issuer,
// subject and the policy's bind claims, each length-prefixed so that no two
// different identities share an encoding.
func IdentityDigest(issuer, subject string, bind []string) Digest {
	h := sha256.New()
	writeField(h, "identity")
	writeField(h, issuer)
	writeField(h, subject)
	for _, v := range bind {
		writeField(h, v)
	}
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

// ScopeDigest digests the S3 scope of a token: its sid when present, else the
// user (issuer, subject).
func ScopeDigest(issuer, subject, sid string) Digest {
	h := sha256.New()
	if sid != "" {
		writeField(h, "sid")
		writeField(h, issuer)
		writeField(h, sid)
	} else {
		writeField(h, "user")
		writeField(h, issuer)
		writeField(h, subject)
	}
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

func writeField(h interface{ Write([]byte) (int, error) }, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Session is one sign-in session of one policy. Times are Unix milliseconds.
type Session struct {
	ID           string // random, at least 128 bits, the cookie value
	Policy       string
	Subject      string // for audit events; the binding uses Identity
	Identity     Digest
	Scope        Digest
	SignIn       int64 // token auth_time, else the session's start (S1)
	Created      int64
	LastActivity int64
	EndedAt      int64 // 0 while the session is live
	Cause        EndCause
	KeepUntil    int64 // the record may be forgotten after this
}

// Ended reports whether the session has ended (S3: for good).
func (s *Session) Ended() bool { return s.EndedAt != 0 }

// ScopeState is what a store keeps per S3 scope: the latest end in the scope
// and the latest session, which cookie-less clients continue.
type ScopeState struct {
	EndedAt   int64  // latest session end in the scope; 0 = none
	Current   string // id of the latest session opened in the scope
	KeepUntil int64
}

const (
	sessionRecordV1 = 1
	scopeRecordV1   = 2
	maxRecordString = 1 << 16
)

// ErrCorruptRecord is returned when a stored record cannot be decoded; the
// engine treats it like a store failure (S9), never as an absent session.
var ErrCorruptRecord = errors.New("corrupt session record")

// AppendBinary appends the compact binary encoding of s to b.
func (s *Session) AppendBinary(b []byte) ([]byte, error) {
	if len(s.ID) >= maxRecordString || len(s.Policy) >= maxRecordString || len(s.Subject) >= maxRecordString {
		return b, fmt.Errorf("session record: field longer than %d bytes", maxRecordString-1)
	}
	b = append(b, sessionRecordV1, byte(s.Cause))
	b = appendString(b, s.ID)
	b = appendString(b, s.Policy)
	b = appendString(b, s.Subject)
	b = append(b, s.Identity[:]...)
	b = append(b, s.Scope[:]...)
	for _, v := range [...]int64{s.SignIn, s.Created, s.LastActivity, s.EndedAt, s.KeepUntil} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	return b, nil
}

// UnmarshalBinary decodes a record written by AppendBinary.
func (s *Session) UnmarshalBinary(b []byte) error {
	if len(b) < 2 || b[0] != sessionRecordV1 {
		return ErrCorruptRecord
	}
	s.Cause = EndCause(b[1])
	var strs [3]string
	b, ok := readStrings(b[2:], strs[:])
	if !ok {
		return ErrCorruptRecord
	}
	s.ID, s.Policy, s.Subject = strs[0], strs[1], strs[2]
	if len(b) != 32+5*8 || s.Cause >= causeCount {
		return ErrCorruptRecord
	}
	copy(s.Identity[:], b[:16])
	copy(s.Scope[:], b[16:32])
	b = b[32:]
	for _, p := range [...]*int64{&s.SignIn, &s.Created, &s.LastActivity, &s.EndedAt, &s.KeepUntil} {
		*p = int64(binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	return nil
}

// AppendBinary appends the compact binary encoding of st to b.
func (st *ScopeState) AppendBinary(b []byte) ([]byte, error) {
	if len(st.Current) >= maxRecordString {
		return b, fmt.Errorf("scope record: session id longer than %d bytes", maxRecordString-1)
	}
	b = append(b, scopeRecordV1)
	b = appendString(b, st.Current)
	b = binary.BigEndian.AppendUint64(b, uint64(st.EndedAt))
	b = binary.BigEndian.AppendUint64(b, uint64(st.KeepUntil))
	return b, nil
}

// UnmarshalBinary decodes a record written by AppendBinary.
func (st *ScopeState) UnmarshalBinary(b []byte) error {
	if len(b) < 1 || b[0] != scopeRecordV1 {
		return ErrCorruptRecord
	}
	var cur [1]string
	b, ok := readStrings(b[1:], cur[:])
	if !ok || len(b) != 16 {
		return ErrCorruptRecord
	}
	st.Current = cur[0]
	st.EndedAt = int64(binary.BigEndian.Uint64(b))
	st.KeepUntil = int64(binary.BigEndian.Uint64(b[8:]))
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readStrings reads len(dst) strings written by appendString into dst and
// returns the rest of b. They share one allocation: stores decode a record
// on every request, and its strings live and die together.
func readStrings(b []byte, dst []string) ([]byte, bool) {
	end := 0
	for range dst {
		if len(b) < end+2 {
			return b, false
		}
		end += 2 + int(binary.BigEndian.Uint16(b[end:]))
		if len(b) < end {
			return b, false
		}
	}
	all := string(b[:end]) // length prefixes included: a few bytes, no second pass
	off := 0
	for i := range dst {
		n := int(binary.BigEndian.Uint16(b[off:]))
		dst[i] = all[off+2 : off+2+n]
		off += 2 + n
	}
	return b[end:], true
}
