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

// FuzzOpenGrant: Open takes any bytes without panicking, and a grant that
// decodes encodes back to the same bytes.
func FuzzOpenGrant(f *testing.F) {
	f.Add(encodeGrant(&authz.Grant{AccessToken: "a", RefreshToken: "r", IDToken: "i", AccessExpiry: -1,
		Headers: []authz.Header{{Name: "x-a", Value: "b"}}}))
	f.Add([]byte{0, 0, 0, 0, 0xff})
	f.Add([]byte{1, 1, 1, 2, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := decodeGrant(b)
		if err != nil {
			return
		}
		if got := encodeGrant(g); !bytes.Equal(got, b) {
			// Varints have one canonical form each but Go's decoder
			// accepts padded ones: a padded input may decode; it must
			// still mean the same grant.
			g2, err := decodeGrant(got)
			if err != nil || !reflect.DeepEqual(g, g2) {
				t.Fatalf("grant does not round-trip")
			}
		}
		keys := fuzzKeys()
		if _, err := keys.open(b, grantAD); err == nil && len(b) < sealOverhead {
			t.Fatal("a short value opened")
		}
	})
}
