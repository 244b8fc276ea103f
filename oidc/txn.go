package oidc

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Login transactions (S13). Each login attempt is a sealed cookie in one of
// LoginSlots slots, named authz.LoginCookiePrefix + slot: stateless for the
// store until the callback, bound to the browser that holds the cookie,
// several at once (tabs) without piling up cookies, since a new attempt
// takes a free slot or else the oldest one.
const (
	// LoginSlots is how many login attempts a browser may have in flight.
	LoginSlots = 4
	// LoginTTL is how long a login attempt may take (the cookie's Max-Age
	// and the transaction's expiry).
	LoginTTL = 600 // seconds
	// stateRandom is the random part of a state, in bytes (base64url: 22
	// characters). The state is the slot digit followed by it.
	stateRandom = 16
	stateLen    = 1 + 22
	// MaxReturnURL bounds the return URL a transaction keeps; a longer one
	// is replaced by the site root, so that the cookie stays under browsers'
	// 4 KiB limit.
	MaxReturnURL = 2048
	// maxCookieValue bounds the transaction cookie a request may present.
	maxCookieValue = 4096
)

// txn is one login attempt.
type txn struct {
	State       string // slot digit + random, the state parameter
	Nonce       string
	Verifier    string // PKCE code_verifier
	ReturnURL   string
	RedirectURI string
	Policy      string
	EndedAt     int64 // Unix ms; 0 when no session ended
	Created     int64 // Unix ms
}

// txnAD binds a sealed transaction to its slot and policy.
func txnAD(cookie, policy string) []byte {
	return []byte("sessiongate login v1\x00" + cookie + "\x00" + policy)
}

func cookieName(slot int) string { return authz.LoginCookiePrefix + strconv.Itoa(slot) }

func (t *txn) encode() []byte {
	b := make([]byte, 0, 64+len(t.State)+len(t.Nonce)+len(t.Verifier)+len(t.ReturnURL)+len(t.RedirectURI)+len(t.Policy))
	for _, s := range [...]string{t.State, t.Nonce, t.Verifier, t.ReturnURL, t.RedirectURI, t.Policy} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, t.EndedAt)
	return binary.AppendVarint(b, t.Created)
}

func decodeTxn(b []byte) (*txn, bool) {
	d := decoder{b: b}
	var w text // the fields share one string
	w.sb.Grow(len(b))
	str := func() string { return w.raw(d.bytes()) }
	t := &txn{State: str(), Nonce: str(), Verifier: str(), ReturnURL: str(), RedirectURI: str(), Policy: str()}
	t.EndedAt, t.Created = d.varint(), d.varint()
	return t, !d.bad && len(d.b) == 0
}

// sealTxn returns the cookie value of t in slot.
func sealTxn(keys *KeyRing, t *txn, slot int) string {
	return base64.RawURLEncoding.EncodeToString(keys.seal(t.encode(), txnAD(cookieName(slot), t.Policy)))
}

// openTxn opens the transaction cookie value of slot for policy.
func openTxn(keys *KeyRing, value string, slot int, policy string) (*txn, bool) {
	if len(value) > maxCookieValue {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(value)
	if err != nil {
		return nil, false
	}
	pt, err := keys.open(raw, txnAD(cookieName(slot), policy))
	if err != nil {
		return nil, false
	}
	t, ok := decodeTxn(pt)
	if !ok || t.Policy != policy {
		return nil, false
	}
	return t, true
}

// newState returns a fresh state for slot.
func newState(slot int) string {
	var b [stateRandom]byte
	rand.Read(b[:])
	return strconv.Itoa(slot) + base64.RawURLEncoding.EncodeToString(b[:])
}

// stateSlot returns the slot a state names, or false when it is not a
// state this package could have made.
func stateSlot(state string) (int, bool) {
	if len(state) != stateLen || state[0] < '0' || state[0] >= '0'+LoginSlots {
		return 0, false
	}
	for i := 1; i < len(state); i++ {
		c := state[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return 0, false
		}
	}
	return int(state[0] - '0'), true
}

// sameState compares states in constant time.
func sameState(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// claimKey is the one-time claim that uses up a transaction (S13): the
// same state never completes twice, on any replica.
func claimKey(policy, state string) authz.Digest {
	h := sha256.Sum256([]byte("sessiongate login claim\x00" + policy + "\x00" + state))
	var d authz.Digest
	copy(d[:], h[:])
	return d
}

// pickSlot chooses the slot of a new attempt from the request's cookies: the
// first free one, else the one holding the oldest (or an unreadable)
// attempt.
func pickSlot(keys *KeyRing, cookieHeader, policy string) int {
	best, bestCreated := 0, int64(1<<62)
	for slot := range LoginSlots {
		v, ok := authz.CookieValue(cookieHeader, cookieName(slot))
		if !ok {
			return slot
		}
		created := int64(0)
		if t, ok := openTxn(keys, v, slot, policy); ok {
			created = t.Created
		}
		if created < bestCreated {
			best, bestCreated = slot, created
		}
	}
	return best
}

// setCookie renders the transaction cookie. SameSite=Lax always: the
// callback is a cross-site top-level GET, which Strict would strip.
func setCookie(slot int, value string) string {
	var b strings.Builder
	name := cookieName(slot)
	b.Grow(len(name) + len(value) + 64)
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(value)
	b.WriteString("; Path=/; Max-Age=")
	b.WriteString(strconv.Itoa(LoginTTL))
	b.WriteString("; Secure; HttpOnly; SameSite=Lax")
	return b.String()
}
