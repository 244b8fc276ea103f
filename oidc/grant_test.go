package oidc

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// fixtureGrant is the grant sealed in testdata/grant-v1.sealed: JWS access
// and ID tokens, an opaque refresh token, identity headers.
func fixtureGrant() *authz.Grant {
	return &authz.Grant{
		AccessToken:  "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsInN1YiI6IjI0ODI4OTc2MTAwMSIsImF1ZCI6ImFwcCIsImV4cCI6MTcwMDAwMDMwMH0.c2lnbmF0dXJlLW9mLXRoZS1hY2Nlc3MtdG9rZW4",
		RefreshToken: "8xLOxBtZp8.opaque/refresh+token==",
		IDToken:      "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsyIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsInN1YiI6IjI0ODI4OTc2MTAwMSIsImF1ZCI6ImFwcCIsIm5vbmNlIjoibiJ9.c2lnbmF0dXJlLW9mLXRoZS1pZC10b2tlbg",
		AccessExpiry: 1_700_000_300_000,
		Headers: []authz.Header{{Name: "x-sessiongate-name", Value: "Alice Example"},
			{Name: "x-sessiongate-email", Value: "alice@example.com"}},
	}
}

func fixtureSignIn(t *testing.T) *SignIn {
	t.Helper()
	rp, err := New(Options{Keys: fuzzKeys()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := rp.SignIn("app", Config{Issuer: "https://idp.example.com", ClientID: "app", Scopes: []string{"openid"}, CallbackPath: "/cb"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOpenGrantV1: a grant sealed in format 1 (by earlier versions, kept in
// a state file or in Redis) still opens, to the grant it was.
func TestOpenGrantV1(t *testing.T) {
	sealed, err := os.ReadFile("testdata/grant-v1.sealed")
	if err != nil {
		t.Fatal(err)
	}
	s := fixtureSignIn(t)
	g, err := s.Open(sealed)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !reflect.DeepEqual(g, fixtureGrant()) {
		t.Fatalf("opened %+v\nwant %+v", g, fixtureGrant())
	}
	if _, err := s.rp.keys.open(sealed, s.grantAD); err == nil {
		t.Fatal("a format 1 grant opens as format 2")
	}
	other, _ := s.rp.SignIn("crm", s.cfg)
	if _, err := other.Open(sealed); err == nil {
		t.Fatal("a grant of policy app opens for policy crm")
	}
	// Sealed again, it is format 2: smaller, never format 1, the same grant.
	again, err := s.Seal(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) >= len(sealed) {
		t.Errorf("format 2: %d bytes, format 1: %d", len(again), len(sealed))
	}
	if _, err := s.rp.keys.open(again, s.grantADv1); err == nil {
		t.Fatal("a format 2 grant opens as format 1")
	}
	if g2, err := s.Open(again); err != nil || !reflect.DeepEqual(g2, g) {
		t.Fatalf("format 2: %+v, %v", g2, err)
	}
}

// TestGrantTokens: a compact JWS of canonical base64url is kept as its
// decoded segments; anything else as is; every token opens byte for byte.
func TestGrantTokens(t *testing.T) {
	jws := fixtureGrant().AccessToken
	for _, tc := range []struct {
		token   string
		decoded bool
	}{
		{jws, true},
		{fixtureGrant().IDToken, true},
		{"eyJhbGciOiJub25lIn0.e30.", true}, // unsigned: an empty signature
		{"..", true},
		{"AAAA.AA.AAA", true},
		{"8xLOxBtZp8.opaque/refresh+token==", false},
		{"opaque-refresh-token", false},
		{"", false},
		{"AB.AA.AA", false},         // stray bits: decodes as AA's byte
		{"AA==.AA.AA", false},       // padding
		{"A+/A.AA.AA", false},       // the standard alphabet
		{"AAAA\nAAAA.AA.AA", false}, // a line break, which decoders skip
		{"AAAA\r.AA.AA", false},     // a carriage return
		{"AAAAA.AA.AA", false},      // a length no encoding has
		{"AA.AA", false},            // two segments
		{"AA.AA.AA.AA.AA", false},   // five: a JWE
		{"AA.AA.AA.", false},        // four
		{jws + "\n", false},         // a trailing line break
		{"\xffAA.AA.AA", false},     // not even UTF-8
		{strings.Repeat("A", 5000) + ".AA.AA", true},
	} {
		g := &authz.Grant{AccessToken: tc.token, IDToken: tc.token}
		b := encodeGrant(g, grantV2)
		if decoded := !bytes.Contains(b, []byte(tc.token)); decoded != tc.decoded {
			t.Errorf("%q: kept decoded %v, want %v", tc.token, decoded, tc.decoded)
		}
		got, err := decodeGrant(b, grantV2)
		if err != nil || got.AccessToken != tc.token || got.IDToken != tc.token {
			t.Errorf("%q: opened %+v, %v", tc.token, got, err)
		}
	}
}

// TestGrantSize: format 2 of the benchmarks' grant saves a quarter of its
// JWS tokens.
func TestGrantSize(t *testing.T) {
	g := benchGrant()
	v1, v2 := len(encodeGrant(g, grantV1)), len(encodeGrant(g, grantV2))
	jws := len(g.AccessToken) + len(g.IDToken)
	if saved := v1 - v2; saved < jws/4-16 || saved > jws/4 {
		t.Errorf("format 1 %d bytes, format 2 %d: saved %d of %d bytes of JWS", v1, v2, saved, jws)
	}
	t.Logf("format 1 %d bytes, format 2 %d", v1, v2)
}
