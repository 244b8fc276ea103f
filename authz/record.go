package authz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// Session is one sign-in session of one policy. Times are Unix milliseconds.
//
// The rules every copy of a record obeys live here, once: Advance (times
// only grow), EndWith (an end is final), MergeSessions and MergeScopes (what
// two copies of one record mean together). Stores call them; none writes its
// own. The encoding is below (AppendBinary); see DESIGN.md §5 for adding a
// field.
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

	// Method is how the session was signed in to (audit): a token
	// presented by the client, or the gate's own sign-in (login.oidc).
	Method SignInMethod
	// Grant is the sealed grant of a sign-in (SignIn.Seal), opaque to the
	// stores; "" for token sessions and once the session has ended. A
	// string, not a []byte, so that records stay comparable and immutable
	// when copies are shared.
	Grant string
	// GrantAt is when Grant was stored: a copy's grant replaces another's
	// only when it is newer (a refresh).
	GrantAt int64
	// UserScope says that Scope is the user's own S3 scope (the token had
	// no sid), under which Select finds the user's sessions too: the index
	// by user need not list this one (IndexKeys). A hint for indexing only:
	// format 3 does not keep it, and a session read without it is indexed
	// under both keys, as before.
	UserScope bool
}

// Ended reports whether the session has ended (S3: for good).
func (s *Session) Ended() bool { return s.EndedAt != 0 }

// SignInMethod says how a session was signed in to.
type SignInMethod uint8

const (
	MethodToken SignInMethod = iota // a token the client presented
	MethodOIDC                      // the gate's OpenID Connect sign-in
	methodCount
)

func (m SignInMethod) String() string {
	switch m {
	case MethodToken:
		return "token"
	case MethodOIDC:
		return "oidc"
	}
	return "unknown"
}

// Advance applies an activity update to a live session: LastActivity,
// SignIn and KeepUntil only grow, and the grant is replaced only by a newer
// one (t.GrantAt after s.GrantAt). An ended session is left as it is (S3).
// It reports whether anything changed.
func (s *Session) Advance(t Touch) bool {
	if s.Ended() {
		return false
	}
	old := *s
	s.LastActivity = max(s.LastActivity, t.LastActivity)
	s.SignIn = max(s.SignIn, t.SignIn)
	s.KeepUntil = max(s.KeepUntil, t.KeepUntil)
	if t.Grant != "" && t.GrantAt > s.GrantAt {
		s.Grant, s.GrantAt = t.Grant, t.GrantAt
	}
	return *s != old
}

// EndWith ends a live session as e says and drops its grant: the tokens of
// a sign-in are not kept past its session (S15). An ended session is left
// as it is: the first end is final (S3). It reports whether it ended s.
func (s *Session) EndWith(e End) bool {
	if s.Ended() {
		return false
	}
	s.EndedAt, s.Cause, s.KeepUntil = e.At, e.Cause, max(s.KeepUntil, e.KeepUntil)
	s.Grant = ""
	return true
}

// MergeSessions joins two copies of one session record into what they mean
// together, whichever was read first: times only grow (LastActivity,
// SignIn, KeepUntil are the later of the two); an end is final, and of two
// ended copies the earlier end wins, as if both ends had been applied in
// time order (EndWith leaves an ended session alone); a live record's grant
// is the newer one, and an ended one holds none.
func MergeSessions(a, b Session) Session {
	out := a
	switch {
	case a.Ended() && b.Ended():
		if b.EndedAt < a.EndedAt || b.EndedAt == a.EndedAt && b.Cause < a.Cause {
			out = b
		}
	case b.Ended():
		out = b
	case a.Ended():
	default:
		if b.GrantAt > a.GrantAt {
			out.Grant, out.GrantAt = b.Grant, b.GrantAt
		}
	}
	out.LastActivity = max(a.LastActivity, b.LastActivity)
	out.SignIn = max(a.SignIn, b.SignIn)
	out.KeepUntil = max(a.KeepUntil, b.KeepUntil)
	out.UserScope = a.UserScope || b.UserScope // a copy in format 3 lost it
	return out
}

// ScopeState is what a store keeps per S3 scope: the latest end in the scope
// and the latest session, which cookie-less clients continue.
type ScopeState struct {
	EndedAt   int64  // latest session end in the scope; 0 = none
	Current   string // id of the latest session opened in the scope
	KeepUntil int64
}

// Begin makes id the scope's current session (Store.Begin).
func (st *ScopeState) Begin(id string, keepUntil int64) {
	st.Current = id
	st.KeepUntil = max(st.KeepUntil, keepUntil)
}

// Raise records an end in the scope: its EndedAt and KeepUntil only rise.
func (st *ScopeState) Raise(e End) {
	st.EndedAt = max(st.EndedAt, e.At)
	st.KeepUntil = max(st.KeepUntil, e.KeepUntil)
}

// MergeScopes joins two copies of one scope record, b being the later one
// read: ends and KeepUntil only rise, and the current session is b's when
// b names one.
func MergeScopes(a, b ScopeState) ScopeState {
	if b.Current != "" {
		a.Current = b.Current
	}
	a.EndedAt = max(a.EndedAt, b.EndedAt)
	a.KeepUntil = max(a.KeepUntil, b.KeepUntil)
	return a
}

// RecordKind is the kind of a stored record, read from its first byte.
type RecordKind uint8

const (
	KindUnknown RecordKind = iota
	KindSession
	KindScope
)

// KindOf returns the kind of the encoded record b (any version this binary
// reads), KindUnknown for anything else.
func KindOf(b []byte) RecordKind {
	if len(b) == 0 {
		return KindUnknown
	}
	switch b[0] {
	case formatSessionV1, formatSessionV2, formatSessionKeyed:
		return KindSession
	case formatScopeV1:
		return KindScope
	}
	return KindUnknown
}

// Record formats: the first byte of a record names its kind and version.
// Records of every format listed here are read; only the newest of each kind
// is written. A format, once shipped, is never changed: a new field is a new
// format (see DESIGN.md §5).
const (
	formatSessionV1 = 1 // up to the sign-in fields: no Method, Grant, GrantAt
	formatScopeV1   = 2
	formatSessionV2 = 3
	// formatSessionKeyed is the compact session format of stores whose key
	// names the policy and the id (AppendKeyed): written by store/memory,
	// beside formatSessionV2, which stays the format of records patched in
	// place (store/redis).
	formatSessionKeyed = 4

	maxRecordString = 1 << 16
	// maxGrant bounds a sealed grant: three tokens of the policy's largest
	// size, identity headers, and sealing overhead fit with room.
	maxGrant = 1 << 20
)

// The current session format, for stores that patch records in place
// (store/redis generates its Lua scripts' offsets from these): a fixed part
// of SessionFixedLen bytes, then ID, Policy and Subject (each a 2-byte
// big-endian length and the bytes) and Grant (a 4-byte length and the
// bytes). Offsets count from 0; times are big-endian int64s.
const (
	SessionFormat          = formatSessionV2
	SessionOffCause        = 1
	SessionOffMethod       = 2
	SessionOffSignIn       = 3
	SessionOffCreated      = 11
	SessionOffLastActivity = 19
	SessionOffEndedAt      = 27
	SessionOffKeepUntil    = 35
	SessionOffGrantAt      = 43
	SessionOffIdentity     = 51
	SessionOffScope        = 67
	SessionFixedLen        = 83

	// ScopeFormat is the current scope format: the format byte, Current
	// (2-byte length and bytes), EndedAt, KeepUntil.
	ScopeFormat = formatScopeV1
)

// ErrCorruptRecord is returned when a stored record cannot be decoded; the
// engine treats it like a store failure (S9), never as an absent session.
var ErrCorruptRecord = errors.New("corrupt session record")

// AppendBinary appends the encoding of s in the current format to b.
func (s *Session) AppendBinary(b []byte) ([]byte, error) {
	if len(s.ID) >= maxRecordString || len(s.Policy) >= maxRecordString || len(s.Subject) >= maxRecordString {
		return b, fmt.Errorf("session record: field longer than %d bytes", maxRecordString-1)
	}
	if len(s.Grant) >= maxGrant {
		return b, fmt.Errorf("session record: grant longer than %d bytes", maxGrant-1)
	}
	b = append(b, formatSessionV2, byte(s.Cause), byte(s.Method))
	for _, v := range [...]int64{s.SignIn, s.Created, s.LastActivity, s.EndedAt, s.KeepUntil, s.GrantAt} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	b = append(b, s.Identity[:]...)
	b = append(b, s.Scope[:]...)
	b = appendString(b, s.ID)
	b = appendString(b, s.Policy)
	b = appendString(b, s.Subject)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Grant)))
	return append(b, s.Grant...), nil
}

// UnmarshalBinary decodes a session record of any format this binary reads
// that holds its own ID and Policy: a format 4 record does not (it is read
// with UnmarshalKeyed), and is refused here as corrupt.
func (s *Session) UnmarshalBinary(b []byte) error { return s.unmarshal(b, false) }

// UnmarshalOwned is UnmarshalBinary for a record its reader hands over:
// the strings of s share b's memory instead of a copy of it, so b must
// never be changed afterwards. Stores whose reads return a fresh copy of a
// record (bigcache's Get does) decode with it: a read then costs no second
// copy of the record, with its grant, and one allocation fewer.
func (s *Session) UnmarshalOwned(b []byte) error { return s.unmarshal(b, true) }

func (s *Session) unmarshal(b []byte, own bool) error {
	if len(b) == 0 {
		return ErrCorruptRecord
	}
	*s = Session{}
	switch b[0] {
	case formatSessionV2:
		return s.unmarshalV2(b, own)
	case formatSessionV1:
		return s.unmarshalV1(b, own)
	}
	return ErrCorruptRecord
}

// str is b as a string: a copy, or b's own memory where the caller hands b
// over (own, see Session.UnmarshalOwned).
func str(b []byte, own bool) string {
	if own {
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return string(b)
}

func (s *Session) unmarshalV2(b []byte, own bool) error {
	if len(b) < SessionFixedLen+3*2+4 {
		return ErrCorruptRecord
	}
	s.Cause, s.Method = EndCause(b[SessionOffCause]), SignInMethod(b[SessionOffMethod])
	if s.Cause >= causeCount || s.Method >= methodCount {
		return ErrCorruptRecord
	}
	p := b[SessionOffSignIn:]
	for _, f := range [...]*int64{&s.SignIn, &s.Created, &s.LastActivity, &s.EndedAt, &s.KeepUntil, &s.GrantAt} {
		*f = int64(binary.BigEndian.Uint64(p))
		p = p[8:]
	}
	copy(s.Identity[:], b[SessionOffIdentity:])
	copy(s.Scope[:], b[SessionOffScope:])
	// The strings and the grant are the tail: one allocation for all.
	tail := b[SessionFixedLen:]
	var lens [4]int
	off := 0
	for i := range lens {
		w := 2
		if i == 3 {
			w = 4
		}
		if len(tail) < off+w {
			return ErrCorruptRecord
		}
		if w == 2 {
			lens[i] = int(binary.BigEndian.Uint16(tail[off:]))
		} else {
			lens[i] = int(binary.BigEndian.Uint32(tail[off:]))
		}
		off += w
		if lens[i] > len(tail)-off {
			return ErrCorruptRecord
		}
		off += lens[i]
	}
	if off != len(tail) {
		return ErrCorruptRecord
	}
	all := str(tail, own)
	off = 0
	for i, f := range [...]*string{&s.ID, &s.Policy, &s.Subject, &s.Grant} {
		w := 2
		if i == 3 {
			w = 4
		}
		off += w
		*f = all[off : off+lens[i]]
		off += lens[i]
	}
	return nil
}

// AppendKeyed appends the compact encoding of s (format 4) to b, for a
// store that keeps it under a key naming s.Policy and s.ID, which it leaves
// out: format byte; cause (low 4 bits) and method (high 4 bits); a flags
// byte (bit 0: EndedAt is set, bit 1: GrantAt is set, bit 2: UserScope);
// Created as a varint;
// SignIn, LastActivity, KeepUntil, then EndedAt and GrantAt when set, each a
// varint of its difference from Created; Identity and Scope (16 bytes each);
// Subject (uvarint length and bytes); and the Grant, the rest of the record.
// A token session at rest takes about 85 bytes instead of format 3's 164.
// UnmarshalKeyed reads it back.
func (s *Session) AppendKeyed(b []byte) ([]byte, error) {
	if len(s.Subject) >= maxRecordString {
		return b, fmt.Errorf("session record: subject longer than %d bytes", maxRecordString-1)
	}
	if len(s.Grant) >= maxGrant {
		return b, fmt.Errorf("session record: grant longer than %d bytes", maxGrant-1)
	}
	var flags byte
	if s.EndedAt != 0 {
		flags |= keyedEnded
	}
	if s.GrantAt != 0 {
		flags |= keyedGrantAt
	}
	if s.UserScope {
		flags |= keyedUserScope
	}
	b = append(b, formatSessionKeyed, byte(s.Cause)|byte(s.Method)<<4, flags)
	// Differences wrap like the sums that undo them: every int64 survives.
	b = binary.AppendVarint(b, s.Created)
	b = binary.AppendVarint(b, s.SignIn-s.Created)
	b = binary.AppendVarint(b, s.LastActivity-s.Created)
	b = binary.AppendVarint(b, s.KeepUntil-s.Created)
	if flags&keyedEnded != 0 {
		b = binary.AppendVarint(b, s.EndedAt-s.Created)
	}
	if flags&keyedGrantAt != 0 {
		b = binary.AppendVarint(b, s.GrantAt-s.Created)
	}
	b = append(b, s.Identity[:]...)
	b = append(b, s.Scope[:]...)
	b = binary.AppendUvarint(b, uint64(len(s.Subject)))
	b = append(b, s.Subject...)
	return append(b, s.Grant...), nil
}

// The flags of format 4.
const (
	keyedEnded     = 1 << iota // EndedAt follows
	keyedGrantAt               // GrantAt follows
	keyedUserScope             // Session.UserScope
	keyedFlags     = keyedEnded | keyedGrantAt | keyedUserScope
)

// UnmarshalKeyed decodes a session record of any format this binary reads,
// stored under the key of policy and id: a format 4 record takes its Policy
// and ID from them (without copying: the record shares their memory), older
// formats hold their own.
func (s *Session) UnmarshalKeyed(b []byte, policy, id string) error {
	return s.unmarshalKeyed(b, policy, id, false)
}

// UnmarshalKeyedOwned is UnmarshalKeyed for a record its reader hands over
// (see UnmarshalOwned).
func (s *Session) UnmarshalKeyedOwned(b []byte, policy, id string) error {
	return s.unmarshalKeyed(b, policy, id, true)
}

func (s *Session) unmarshalKeyed(b []byte, policy, id string, own bool) error {
	if len(b) == 0 || b[0] != formatSessionKeyed {
		return s.unmarshal(b, own)
	}
	*s = Session{}
	if len(b) < 3 || b[2]&^keyedFlags != 0 {
		return ErrCorruptRecord
	}
	s.Cause, s.Method = EndCause(b[1]&15), SignInMethod(b[1]>>4)
	if s.Cause >= causeCount || s.Method >= methodCount {
		return ErrCorruptRecord
	}
	flags, p := b[2], b[3:]
	varint := func() (int64, bool) {
		v, n := binary.Varint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	created, ok := varint()
	if !ok {
		return ErrCorruptRecord
	}
	s.Created = created
	for _, f := range [...]struct {
		v   *int64
		set bool
	}{{&s.SignIn, true}, {&s.LastActivity, true}, {&s.KeepUntil, true}, {&s.EndedAt, flags&keyedEnded != 0}, {&s.GrantAt, flags&keyedGrantAt != 0}} {
		if !f.set {
			continue
		}
		d, ok := varint()
		if !ok {
			return ErrCorruptRecord
		}
		*f.v = created + d
	}
	if len(p) < 2*len(Digest{}) {
		return ErrCorruptRecord
	}
	copy(s.Identity[:], p)
	copy(s.Scope[:], p[len(Digest{}):])
	p = p[2*len(Digest{}):]
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) || n >= maxRecordString || uint64(len(p)-w)-n >= maxGrant {
		return ErrCorruptRecord
	}
	if flags&keyedEnded != 0 && s.EndedAt == 0 || flags&keyedGrantAt != 0 && s.GrantAt == 0 {
		return ErrCorruptRecord // not what AppendKeyed writes
	}
	// The subject and the grant are the tail: one allocation for both.
	tail := str(p[w:], own)
	s.Subject, s.Grant = tail[:n], tail[n:]
	s.Policy, s.ID = policy, id
	s.UserScope = flags&keyedUserScope != 0
	return nil
}

// unmarshalV1 reads the first session format (frozen): tag, cause, ID,
// Policy, Subject, Identity, Scope, SignIn, Created, LastActivity, EndedAt,
// KeepUntil. Such sessions were signed in with tokens and hold no grant.
func (s *Session) unmarshalV1(b []byte, own bool) error {
	if len(b) < 2 {
		return ErrCorruptRecord
	}
	s.Cause = EndCause(b[1])
	var strs [3]string
	b, ok := readStrings(b[2:], strs[:], own)
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

// AppendBinary appends the encoding of st in the current format to b.
func (st *ScopeState) AppendBinary(b []byte) ([]byte, error) {
	if len(st.Current) >= maxRecordString {
		return b, fmt.Errorf("scope record: session id longer than %d bytes", maxRecordString-1)
	}
	b = append(b, formatScopeV1)
	b = appendString(b, st.Current)
	b = binary.BigEndian.AppendUint64(b, uint64(st.EndedAt))
	b = binary.BigEndian.AppendUint64(b, uint64(st.KeepUntil))
	return b, nil
}

// UnmarshalBinary decodes a scope record written by AppendBinary.
func (st *ScopeState) UnmarshalBinary(b []byte) error { return st.unmarshal(b, false) }

// UnmarshalOwned is UnmarshalBinary for a record its reader hands over
// (see Session.UnmarshalOwned).
func (st *ScopeState) UnmarshalOwned(b []byte) error { return st.unmarshal(b, true) }

func (st *ScopeState) unmarshal(b []byte, own bool) error {
	if len(b) < 1 || b[0] != formatScopeV1 {
		return ErrCorruptRecord
	}
	var cur [1]string
	b, ok := readStrings(b[1:], cur[:], own)
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
// returns the rest of b. They share one allocation (none where own, see
// str): stores decode a record on every request, and its strings live and
// die together.
func readStrings(b []byte, dst []string, own bool) ([]byte, bool) {
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
	all := str(b[:end], own) // length prefixes included: a few bytes, no second pass
	off := 0
	for i := range dst {
		n := int(binary.BigEndian.Uint16(b[off:]))
		dst[i] = all[off+2 : off+2+n]
		off += 2 + n
	}
	return b[end:], true
}
