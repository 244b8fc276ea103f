package oidc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestVerifyLogout: logout tokens of the discovered provider for the
// policy's client verify with the discovered keys (S18); those signed by
// another key, with an algorithm outside the policy's list, or before
// discovery, do not.
func TestVerifyLogout(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	before, err := e.rp.SignIn("early", Config{Issuer: "http://127.0.0.1:1", ClientID: "app", Scopes: []string{"openid"}, CallbackPath: "/cb"})
	if err != nil {
		t.Fatal(err)
	}
	s := e.signIn(cfg)
	now := e.clock.Now()
	claims := map[string]any{"iss": e.fp.issuer(), "aud": "app", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": "j-1", "sid": "sid-1", "events": map[string]any{authz.BackChannelEvent: map[string]any{}}}
	tok, err := e.fp.key.MintWith(map[string]any{"typ": "logout+jwt"}, claims)
	if err != nil {
		t.Fatal(err)
	}
	lt, err := s.VerifyLogout(context.Background(), tok, now)
	if err != nil || lt.SID != "sid-1" || lt.Issuer != e.fp.issuer() || lt.JTI != "j-1" {
		t.Fatalf("VerifyLogout = %+v, %v", lt, err)
	}
	stranger, err := idp.New("ES256")
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := stranger.MintWith(map[string]any{"typ": "logout+jwt", "kid": e.fp.key.KeyID()}, claims)
	if _, err := s.VerifyLogout(context.Background(), forged, now); !isLogoutError(err, authz.LogoutInvalidToken) {
		t.Errorf("a token signed by another key: %v", err)
	}
	narrow := cfg
	narrow.Algorithms = []string{"RS256"}
	s2, err := e.rp.SignIn("narrow", narrow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.VerifyLogout(context.Background(), tok, now); !isLogoutError(err, authz.LogoutInvalidToken) {
		t.Errorf("an ES256 token for a policy that allows RS256 only: %v", err)
	}
	other := cfg
	other.ClientID = "someone-else"
	s3, err := e.rp.SignIn("other", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.VerifyLogout(context.Background(), tok, now); !isLogoutError(err, authz.LogoutInvalidClaim) {
		t.Errorf("a token for another client: %v", err)
	}
	if _, err := before.VerifyLogout(context.Background(), tok, now); !isLogoutError(err, authz.LogoutUnavailable) {
		t.Errorf("before discovery: %v", err)
	}
}

func isLogoutError(err error, reason string) bool {
	var le *authz.LogoutError
	return errors.As(err, &le) && le.Reason == reason
}
