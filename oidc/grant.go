package oidc

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// grantFormat is how a sealed grant's plaintext is laid out. The format is
// bound to the seal by its associated data, not written in the plaintext: a
// grant opens as the format it was sealed as, or not at all.
type grantFormat int

const (
	// grantV1 holds every token as it came. Seal no longer writes it; Open
	// still reads it, for the grants sealed before format 2.
	grantV1 grantFormat = 1
	// grantV2 holds a token that is a compact JWS as its three decoded
	// segments (a quarter smaller than their base64url) and any other
	// token as it came.
	grantV2 grantFormat = 2
)

// grantAD (format 2) and grantADv1 bind sealed grants to their purpose and
// format: a login transaction cookie never opens as a grant, nor the other
// way round, and a grant of one format never opens as the other.
var (
	grantAD   = []byte("sessiongate grant v2")
	grantADv1 = []byte("sessiongate grant v1")
)

// maxHeaders bounds the identity headers a decoded grant may carry.
const maxHeaders = 64

// b64 is the encoding of a compact JWS's segments (RFC 7515 §2).
var b64 = base64.RawURLEncoding

// encodeGrant writes g in a compact binary form: Open runs on every request
// of a sign-in session, where JSON would cost more than the decryption.
//
// Format 2, field by field: each token (access, refresh, ID) either as
// uvarint(length<<1) and its bytes, or, for a compact JWS whose segments are
// canonical unpadded base64url, as uvarint(len0<<1|1) segment0
// uvarint(len1) segment1 uvarint(len2) segment2 with the segments decoded;
// then varint(AccessExpiry), uvarint(number of headers) and each header's
// name and value as uvarint(length) and bytes. Format 1 is the same with
// every token as uvarint(length) and its bytes.
func encodeGrant(g *authz.Grant, f grantFormat) []byte {
	n := 16 + len(g.AccessToken) + len(g.RefreshToken) + len(g.IDToken)
	for _, h := range g.Headers {
		n += 8 + len(h.Name) + len(h.Value)
	}
	// Room for a decoded segment's check (appendJWS) besides the grant.
	b := make([]byte, 0, n+max(len(g.AccessToken), len(g.IDToken)))
	b = appendToken(b, g.AccessToken, f)
	b = appendToken(b, g.RefreshToken, f)
	b = appendToken(b, g.IDToken, f)
	b = binary.AppendVarint(b, g.AccessExpiry)
	b = binary.AppendUvarint(b, uint64(len(g.Headers)))
	for _, h := range g.Headers {
		b = appendString(b, h.Name)
		b = appendString(b, h.Value)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendToken(b []byte, t string, f grantFormat) []byte {
	if f == grantV1 {
		return appendString(b, t)
	}
	if jws, ok := appendJWS(b, t); ok {
		return jws
	}
	b = binary.AppendUvarint(b, uint64(len(t))<<1)
	return append(b, t...)
}

// appendJWS appends t as a compact JWS's decoded segments, each after its
// length, the first length flagged (shifted left, low bit set). It reports
// false, b's content unchanged, unless t is three segments of canonical
// unpadded base64url: re-encoding each decoded segment must give it back
// exactly, so that the token Open rebuilds is t, byte for byte (padding,
// the standard alphabet, stray bits, line breaks: all stored as is).
func appendJWS(b []byte, t string) ([]byte, bool) {
	if strings.Count(t, ".") != 2 {
		return b, false
	}
	start := len(b)
	rest := []byte(t)
	for i := range 3 {
		seg, after, found := bytes.Cut(rest, []byte{'.'})
		if found != (i < 2) {
			return b[:start], false
		}
		rest = after
		h := uint64(b64.DecodedLen(len(seg)))
		if i == 0 {
			h = h<<1 | 1
		}
		b = binary.AppendUvarint(b, h)
		d := len(b)
		var err error
		if b, err = b64.AppendDecode(b, seg); err != nil || len(b)-d != b64.DecodedLen(len(seg)) {
			return b[:start], false
		}
		e := len(b)
		if b = b64.AppendEncode(b, b[d:e]); !bytes.Equal(b[e:], seg) {
			return b[:start], false
		}
		b = b[:e]
	}
	return b, true
}

var errGrantFormat = errors.New("sealed grant is malformed")

// decodeGrant reads what encodeGrant wrote in format f; anything else is an
// error. The grant's strings share one allocation, measured by a first walk
// and written by a second: Open runs on every request of a sign-in session,
// and the engine keeps what it opened.
func decodeGrant(b []byte, f grantFormat) (*authz.Grant, error) {
	size := text{measure: true}
	if !walkGrant(b, f, &size, nil) {
		return nil, errGrantFormat
	}
	var w text
	w.sb.Grow(size.n)
	g := &authz.Grant{}
	walkGrant(b, f, &w, g)
	return g, nil
}

// walkGrant reads an encoded grant into w and, unless g is nil, g; false if
// b is not a grant of format f.
func walkGrant(b []byte, f grantFormat, w *text, g *authz.Grant) bool {
	d := decoder{b: b}
	access := d.token(w, f)
	refresh := d.token(w, f)
	id := d.token(w, f)
	expiry := d.varint()
	n := d.uvarint()
	if n > maxHeaders {
		return false
	}
	var headers []authz.Header
	if n > 0 && g != nil {
		headers = make([]authz.Header, n)
	}
	for i := range n {
		name := w.raw(d.bytes())
		value := w.raw(d.bytes())
		if headers != nil {
			headers[i] = authz.Header{Name: name, Value: value}
		}
	}
	if d.bad || len(d.b) != 0 {
		return false
	}
	if g != nil {
		*g = authz.Grant{AccessToken: access, RefreshToken: refresh, IDToken: id, AccessExpiry: expiry, Headers: headers}
	}
	return true
}

// text builds a decoded grant's strings in one buffer; measuring, it only
// counts their bytes.
type text struct {
	measure bool
	n       int
	sb      strings.Builder
}

// raw returns p as a string of the buffer. A strings.Builder never changes
// what it has written, so the strings stay valid as it grows.
func (w *text) raw(p []byte) string {
	if w.measure {
		w.n += len(p)
		return ""
	}
	start := w.sb.Len()
	w.sb.Write(p)
	return w.sb.String()[start:]
}

// jws returns the compact JWS of the decoded segments.
func (w *text) jws(segs *[3][]byte) string {
	if w.measure {
		w.n += 2
		for _, s := range segs {
			w.n += b64.EncodedLen(len(s))
		}
		return ""
	}
	start := w.sb.Len()
	var buf [1024]byte
	for i, s := range segs {
		if i > 0 {
			w.sb.WriteByte('.')
		}
		for len(s) > 0 {
			c := min(len(s), len(buf)/4*3) // whole groups until the last
			b64.Encode(buf[:], s[:c])
			w.sb.Write(buf[:b64.EncodedLen(c)])
			s = s[c:]
		}
	}
	return w.sb.String()[start:]
}

// decoder reads length-prefixed fields; the first short read marks it bad
// and every later read returns zero values.
type decoder struct {
	b   []byte
	bad bool
}

// uvarint and varint read what binary.AppendUvarint and AppendVarint wrote.
func (d *decoder) uvarint() uint64 {
	var v uint64
	for i := 0; i < len(d.b) && i < binary.MaxVarintLen64; i++ {
		c := d.b[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.b = d.b[i+1:]
			return v
		}
	}
	d.bad = true
	return 0
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// next returns the next n bytes.
func (d *decoder) next(n uint64) []byte {
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes reads a uvarint length and that many bytes.
func (d *decoder) bytes() []byte {
	return d.next(d.uvarint())
}

// token reads a token of format f, rebuilding a compact JWS from its
// decoded segments.
func (d *decoder) token(w *text, f grantFormat) string {
	h := d.uvarint()
	switch {
	case f == grantV1:
		return w.raw(d.next(h))
	case h&1 == 0:
		return w.raw(d.next(h >> 1))
	}
	segs := [3][]byte{d.next(h >> 1), d.bytes(), d.bytes()}
	return w.jws(&segs)
}
