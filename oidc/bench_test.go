package oidc

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// benchGrant has the sizes of a real sign-in: compact JWS access and ID
// tokens of about a kilobyte (RS256 and ES256 signatures), an opaque refresh
// token, three identity headers.
func benchGrant() *authz.Grant {
	return &authz.Grant{AccessToken: benchJWT(`{"alg":"RS256","kid":"k1","typ":"at+jwt"}`, 256, 1203),
		RefreshToken: strings.Repeat("r", 400),
		IDToken:      benchJWT(`{"alg":"ES256","kid":"k2"}`, 64, 1003), AccessExpiry: 1_700_000_300_000,
		Headers: []authz.Header{{Name: "x-sessiongate-name", Value: "Alice Example"},
			{Name: "x-sessiongate-email", Value: "alice@example.com"}, {Name: "x-sessiongate-groups", Value: "admins,staff"}}}
}

// benchJWT returns a compact JWS of header, claims and a signature of sig
// bytes, its claims filled up until the token is at least n characters.
func benchJWT(header string, sig, n int) string {
	enc := base64.RawURLEncoding
	signature := make([]byte, sig)
	for i := range signature {
		signature[i] = byte(i * 7)
	}
	for fill := 0; ; fill++ {
		claims := `{"iss":"https://idp.example.com","sub":"248289761001","aud":"app","exp":1700000300,"x":"` + strings.Repeat("x", fill) + `"}`
		t := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)) + "." + enc.EncodeToString(signature)
		if len(t) >= n {
			return t
		}
	}
}

// BenchmarkOpen is the per-request cost of a sign-in session's grant (the
// engine opens it to send the access token upstream).
func BenchmarkOpen(b *testing.B) {
	rp, _ := New(Options{Keys: RandomKeyRing()})
	s, err := rp.SignIn("app", Config{Issuer: "https://idp.example.com", ClientID: "app", Scopes: []string{"openid"}, CallbackPath: "/cb"})
	if err != nil {
		b.Fatal(err)
	}
	sealed, _ := s.Seal(benchGrant())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeal is the cost of storing a grant (sign-in, refresh).
func BenchmarkSeal(b *testing.B) {
	rp, _ := New(Options{Keys: RandomKeyRing()})
	s, _ := rp.SignIn("app", Config{Issuer: "https://idp.example.com", ClientID: "app", Scopes: []string{"openid"}, CallbackPath: "/cb"})
	g := benchGrant()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStart is the cost of a redirect to the provider.
func BenchmarkStart(b *testing.B) {
	e := newEnv(b)
	s := e.signIn(e.config())
	r := newBrowser().request("/app")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Start(context.Background(), r, "https://app.example.com/app", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFinish is the whole callback against the in-process provider
// over loopback HTTP: transaction check, claim, code exchange (one round
// trip) and ID-token validation (one ES256 signature). A real provider adds
// its network and its own work.
func BenchmarkFinish(b *testing.B) {
	e := newEnv(b)
	s := e.signIn(e.config())
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		br := newBrowser()
		loc, sc, err := s.Start(context.Background(), br.request("/"), "", 0)
		if err != nil {
			b.Fatal(err)
		}
		br.set(sc)
		code, state, _ := e.fp.authorize(loc)
		r := br.request(callbackPath(code, state))
		b.StartTimer()
		if _, err := s.Finish(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
