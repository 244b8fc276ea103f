package oidc

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a sealing key: AES-256.
const KeySize = 32

// sealVersion is the first byte of everything a KeyRing seals; a later
// format gets another.
const sealVersion = 1

// keyIDSize is the length of the key id a sealed value carries, so that
// Open tries the one key that sealed it rather than every key of the ring.
const keyIDSize = 4

// sealOverhead is what sealing adds to a plaintext: version, key id, GCM
// nonce and tag.
const sealOverhead = 1 + keyIDSize + 12 + 16

// KeyRing seals and opens values with AES-256-GCM (S15). The first key
// seals; every key opens, so that a new key is rolled out by putting it
// first while the old ones still open what they sealed, and an old key is
// retired once nothing it sealed is still needed (sessions and login
// transactions outlive no key by more than a session's absolute lifetime).
// Safe for concurrent use.
type KeyRing struct {
	keys []ringKey
}

type ringKey struct {
	id   [keyIDSize]byte
	aead cipher.AEAD
}

// NewKeyRing returns a ring of the given 32-byte keys, the first sealing.
func NewKeyRing(keys ...[]byte) (*KeyRing, error) {
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	r := &KeyRing{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("key %d: %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		// The id is a digest of the key, not its position: rotation moves
		// keys, and a value must still find the key that sealed it.
		sum := sha256.Sum256(append([]byte("sessiongate key id\x00"), k...))
		var id [keyIDSize]byte
		copy(id[:], sum[:])
		for j, o := range r.keys {
			if o.id == id {
				return nil, fmt.Errorf("key %d repeats key %d", i+1, j+1)
			}
		}
		r.keys = append(r.keys, ringKey{id: id, aead: aead})
	}
	return r, nil
}

// RandomKeyRing returns a ring with one fresh random key: what a single
// replica without --session-key-file uses, so that what it sealed does not
// survive a restart.
func RandomKeyRing() *KeyRing {
	k := make([]byte, KeySize)
	rand.Read(k)
	r, err := NewKeyRing(k)
	if err != nil {
		panic(err) // a fresh 32-byte key is always usable
	}
	return r
}

// ParseKeyFile reads a key file: one key per line, 32 bytes written as
// base64 (standard or URL alphabet, padded or not) or as 64 hex digits;
// blank lines and lines starting with "#" are ignored. The first key seals,
// all open. Errors name lines, never key material.
func ParseKeyFile(data []byte) (*KeyRing, error) {
	var keys [][]byte
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, ok := decodeKey(line)
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: not a 32-byte key in base64 or hex", n))
			continue
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in file")
	}
	return NewKeyRing(keys...)
}

func decodeKey(s string) ([]byte, bool) {
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, true
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.Strict().DecodeString(s); err == nil && len(k) == KeySize {
			return k, true
		}
	}
	return nil, false
}

// errOpen is the one error of Open: which check failed is nobody's business
// but an attacker's.
var errOpen = errors.New("sealed value is not valid")

// seal encrypts plaintext bound to ad (associated data naming what the value
// is for, so that a value sealed for one purpose never opens as another).
func (r *KeyRing) seal(plaintext, ad []byte) []byte {
	k := &r.keys[0]
	out := make([]byte, 1+keyIDSize+12, sealOverhead+len(plaintext))
	out[0] = sealVersion
	copy(out[1:], k.id[:])
	nonce := out[1+keyIDSize:]
	rand.Read(nonce)
	return k.aead.Seal(out, nonce, plaintext, ad)
}

// open decrypts what seal produced with any key of the ring.
func (r *KeyRing) open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < sealOverhead || sealed[0] != sealVersion {
		return nil, errOpen
	}
	id := sealed[1 : 1+keyIDSize]
	nonce := sealed[1+keyIDSize : 1+keyIDSize+12]
	for i := range r.keys {
		k := &r.keys[i]
		if string(k.id[:]) != string(id) {
			continue
		}
		pt, err := k.aead.Open(nil, nonce, sealed[1+keyIDSize+12:], ad)
		if err != nil {
			return nil, errOpen
		}
		return pt, nil
	}
	return nil, errOpen
}
