package authz

import (
	"crypto/sha256"
	"encoding/binary"
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
