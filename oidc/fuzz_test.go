package oidc

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// fuzzKeys is a fixed ring, so that seeds sealed with it stay valid.
func fuzzKeys() *KeyRing {
	k, _ := NewKeyRing(bytes.Repeat([]byte{7}, KeySize))
	return k
}

// FuzzCallback feeds hostile callback targets and transaction cookies to
// what reads them before any code is exchanged: the query parser, the state
// and the cookie opener. Nothing panics; a refusal names no input; whatever
// opens is a transaction of the policy that round-trips.
func FuzzCallback(f *testing.F) {
	keys := fuzzKeys()
	good := &txn{State: newState(2), Nonce: "n", Verifier: "v", ReturnURL: "https://app.example.com/x",
		RedirectURI: "https://app.example.com/_sessiongate/callback", Policy: "app", EndedAt: 5, Created: 1_700_000_000_000}
	f.Add("/_sessiongate/callback?code=abc&state="+good.State, sealTxn(keys, good, 2))
	f.Add("/_sessiongate/callback?error=access_denied&state=0AAAAAAAAAAAAAAAAAAAAAA", "")
	f.Add("/cb?state=%zz&code=1", "x")
	f.Add("/cb?state=1&state=2#frag", strings.Repeat("A", 5000))
	f.Add("/cb?"+strings.Repeat("a=1&", 3000), "AQ")
	f.Fuzz(func(t *testing.T, target, cookie string) {
		cb, err := parseCallback(target)
		if err != nil {
			se, ok := errors.AsType[*authz.SignInError](err)
			if !ok || se.Reason != authz.ReasonSignInFailed {
				t.Fatalf("parse error %v is not a sign_in_failed", err)
			}
			if len(target) > 8 && strings.Contains(se.Detail, target) {
				t.Fatalf("error %q echoes the input", se.Detail)
			}
			return
		}
		slot, ok := stateSlot(cb.state)
		if !ok {
			return
		}
		if slot < 0 || slot >= LoginSlots {
			t.Fatalf("slot %d out of range", slot)
		}
		tx, ok := openTxn(keys, cookie, slot, "app")
		if !ok {
			return
		}
		if tx.Policy != "app" {
			t.Fatalf("opened a transaction of policy %q", tx.Policy)
		}
		again, ok := decodeTxn(tx.encode())
		if !ok || !reflect.DeepEqual(again, tx) {
			t.Fatalf("transaction does not round-trip: %+v vs %+v", again, tx)
		}
	})
}

// FuzzOpenGrant: Open takes any bytes without panicking, in either format,
// and a grant that decodes encodes back to the same bytes; its strings are
// linear in its bytes (a JWS rebuilt from n decoded bytes is at most 4/3 of
// them and its length prefixes, plus two dots).
func FuzzOpenGrant(f *testing.F) {
	g := &authz.Grant{AccessToken: "a", RefreshToken: "r", IDToken: "i", AccessExpiry: -1,
		Headers: []authz.Header{{Name: "x-a", Value: "b"}}}
	f.Add(encodeGrant(g, grantV1))
	f.Add(encodeGrant(g, grantV2))
	f.Add(encodeGrant(fixtureGrant(), grantV2))
	f.Add([]byte{0, 0, 0, 0, 0xff})
	f.Add([]byte{1, 1, 1, 2, 200})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, format := range []grantFormat{grantV1, grantV2} {
			g, err := decodeGrant(b, format)
			if err != nil {
				continue
			}
			n := len(g.AccessToken) + len(g.RefreshToken) + len(g.IDToken)
			for _, h := range g.Headers {
				n += len(h.Name) + len(h.Value)
			}
			if n > len(b)*4/3+6 {
				t.Fatalf("format %d: %d bytes decode to %d", format, len(b), n)
			}
			if got := encodeGrant(g, format); !bytes.Equal(got, b) {
				// Varints have one canonical form each but Go's decoder
				// accepts padded ones, and format 2 may hold as is a
				// token it would have stored decoded: such an input may
				// decode; it must still mean the same grant.
				g2, err := decodeGrant(got, format)
				if err != nil || !reflect.DeepEqual(g, g2) {
					t.Fatalf("format %d: grant does not round-trip", format)
				}
			}
		}
		keys := fuzzKeys()
		if _, err := keys.open(b, grantAD); err == nil && len(b) < sealOverhead {
			t.Fatal("a short value opened")
		}
	})
}

// FuzzGrantRoundTrip: any grant encodes and decodes to itself in format 2,
// every token byte for byte (they go to the application and the provider),
// and format 2 is larger than format 1 by at most the flag bit of each
// token's length (a byte for a token of 64 to 127 bytes kept as is).
func FuzzGrantRoundTrip(f *testing.F) {
	fg := fixtureGrant()
	f.Add(fg.AccessToken, fg.RefreshToken, fg.IDToken, fg.AccessExpiry, "x-a", "b", 1)
	f.Add("a.b.c", "", "AAAA.AA.AAA", int64(-1), "", "", 0)
	f.Add("AB.AA.AA", "AA==.AA.AA", "AA.A\nA.AA", int64(1)<<62, "x", "\x00", 3)
	f.Add("..", "...", ".", int64(0), "", "", 64)
	f.Fuzz(func(t *testing.T, access, refresh, id string, expiry int64, name, value string, headers int) {
		g := &authz.Grant{AccessToken: access, RefreshToken: refresh, IDToken: id, AccessExpiry: expiry}
		for i := range min(max(headers, 0), maxHeaders) {
			g.Headers = append(g.Headers, authz.Header{Name: name, Value: value + strings.Repeat("v", i)})
		}
		b := encodeGrant(g, grantV2)
		got, err := decodeGrant(b, grantV2)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, g) {
			t.Fatalf("grant does not round-trip:\n%+v\n%+v", got, g)
		}
		if v1 := encodeGrant(g, grantV1); len(b) > len(v1)+3 {
			t.Fatalf("format 2 is %d bytes, format 1 %d", len(b), len(v1))
		}
	})
}
