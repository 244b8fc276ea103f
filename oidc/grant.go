package oidc

import (
	"encoding/binary"
	"errors"

	"github.com/sessiongate/sessiongate/authz"
)

// grantAD binds sealed grants to their purpose: a login transaction cookie
// never opens as a grant, nor the other way round.
var grantAD = []byte("sessiongate grant v1")

// maxHeaders bounds the identity headers a decoded grant may carry.
const maxHeaders = 64

// encodeGrant writes g in a compact binary form: Open runs on every request
// of a sign-in session, where JSON would cost more than the decryption.
func encodeGrant(g *authz.Grant) []byte {
	n := 16 + len(g.AccessToken) + len(g.RefreshToken) + len(g.IDToken)
	for _, h := range g.Headers {
		n += 8 + len(h.Name) + len(h.Value)
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(g.AccessToken)))
	b = append(b, g.AccessToken...)
	b = binary.AppendUvarint(b, uint64(len(g.RefreshToken)))
	b = append(b, g.RefreshToken...)
	b = binary.AppendUvarint(b, uint64(len(g.IDToken)))
	b = append(b, g.IDToken...)
	b = binary.AppendVarint(b, g.AccessExpiry)
	b = binary.AppendUvarint(b, uint64(len(g.Headers)))
	for _, h := range g.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Name)))
		b = append(b, h.Name...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

var errGrantFormat = errors.New("sealed grant is malformed")

// decodeGrant reads what encodeGrant wrote; anything else is an error. The
// fields share one string: Open runs on every request of a sign-in session.
func decodeGrant(b []byte) (*authz.Grant, error) {
	d := decoder{s: string(b)}
	g := &authz.Grant{AccessToken: d.str(), RefreshToken: d.str(), IDToken: d.str(), AccessExpiry: d.varint()}
	n := d.uvarint()
	if n > maxHeaders {
		return nil, errGrantFormat
	}
	if n > 0 {
		g.Headers = make([]authz.Header, n)
		for i := range g.Headers {
			g.Headers[i] = authz.Header{Name: d.str(), Value: d.str()}
		}
	}
	if d.bad || d.s != "" {
		return nil, errGrantFormat
	}
	return g, nil
}

// decoder reads length-prefixed fields; the first short read marks it bad
// and every later read returns zero values.
type decoder struct {
	s   string
	bad bool
}

// uvarint and varint read what binary.AppendUvarint and AppendVarint wrote.
func (d *decoder) uvarint() uint64 {
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
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

func (d *decoder) str() string {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.s)) {
		d.bad = true
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}
