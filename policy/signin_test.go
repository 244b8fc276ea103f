package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

type fakeSignIn struct {
	authz.SignIn
	name string
}

func TestOIDCConfig(t *testing.T) {
	got := map[string]OIDCConfig{}
	verifierCalls := map[string]bool{}
	set, err := LoadDir("testdata/valid", Options{
		NewVerifier: func(name string, _ TokenConfig) (authz.Verifier, error) {
			verifierCalls[name] = true
			return fakeVerifier{}, nil
		},
		NewSignIn: func(name string, cfg OIDCConfig) (authz.SignIn, authz.Verifier, error) {
			got[name] = cfg
			return fakeSignIn{name: name}, fakeVerifier{}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]OIDCConfig{
		"signin": {
			Issuer: "https://idp.example.com/realms/app", ClientID: "app", ClientSecret: "s3cr3t-value", ClientAuth: "post",
			Scopes: []string{"openid", "email", "offline_access"}, CallbackPath: "/auth/callback",
			Params:                map[string]string{"acr_values": "mfa", "domain_hint": "example.com"},
			ReauthParams:          map[string]string{"prompt": "login"},
			PostLogoutRedirectURL: "https://signin.example.com/bye",
			MaxAge:                8 * time.Hour, // session.absolute_timeout
			Headers:               []HeaderClaim{{Header: "x-user-email", Claim: "email"}, {Header: "x-user-groups", Claim: "groups"}},
			Token: TokenConfig{Issuer: "https://idp.example.com/realms/app", Audiences: []string{"app-api"},
				Algorithms: defaultAlgorithms(), ClockSkew: 30 * time.Second, MaxBytes: 16384, BindClaims: []string{"tid"},
				RefreshInterval: 5 * time.Minute, MinRefreshInterval: 10 * time.Second, RequireAuthTime: true, MaxLifetime: 24 * time.Hour},
		},
		"public": {
			Issuer: "http://127.0.0.1:9000", ClientID: "public-app", Scopes: []string{"openid", "profile", "email"},
			CallbackPath: "/_sessiongate/callback", ReauthParams: map[string]string{"prompt": "login", "max_age": "0"},
			MaxAge: time.Hour,
			Headers: []HeaderClaim{{Header: "x-sessiongate-email", Claim: "email"}, {Header: "x-sessiongate-groups", Claim: "groups"},
				{Header: "x-sessiongate-name", Claim: "name"}},
			Token: TokenConfig{Issuer: "http://127.0.0.1:9000", Audiences: []string{"public-app"},
				Algorithms: defaultAlgorithms(), ClockSkew: 30 * time.Second, MaxBytes: 16384,
				RefreshInterval: 5 * time.Minute, MinRefreshInterval: 10 * time.Second, MaxLifetime: 24 * time.Hour},
		},
	}
	if len(got) != len(want) {
		t.Errorf("NewSignIn called for %d policies, want %d", len(got), len(want))
	}
	for name, w := range want {
		if !reflect.DeepEqual(got[name], w) {
			t.Errorf("%s: OIDCConfig\n got %+v\nwant %+v", name, got[name], w)
		}
		if verifierCalls[name] {
			t.Errorf("%s: NewVerifier called for a sign-in policy", name)
		}
	}

	p := set.Match("signin.example.com")
	if si, ok := p.Login.SignIn.(fakeSignIn); !ok || si.name != "signin" || p.Verifier == nil {
		t.Errorf("signin policy: SignIn %v, Verifier %v", p.Login.SignIn, p.Verifier)
	}
	if want := (authz.Upstream{AccessToken: "x-access-token", IdentityHeaders: []string{"x-user-email", "x-user-groups"}}); !reflect.DeepEqual(p.Upstream, want) {
		t.Errorf("signin upstream %+v, want %+v", p.Upstream, want)
	}
	if p.Login.URL != "" || p.Login.ReturnParam != "" || p.Login.ReauthQuery != "prompt=login" {
		t.Errorf("signin login %+v", p.Login)
	}
	pub := set.Match("public.example.com")
	if want := (authz.Upstream{AccessToken: "authorization", IdentityHeaders: []string{"x-sessiongate-email", "x-sessiongate-groups", "x-sessiongate-name"}}); !reflect.DeepEqual(pub.Upstream, want) {
		t.Errorf("public upstream %+v, want %+v", pub.Upstream, want)
	}
	if want := []authz.TokenSource{{Kind: authz.FromHeader, Name: "authorization"}}; !reflect.DeepEqual(pub.TokenSources, want) || pub.MaxTokenBytes != 16384 {
		t.Errorf("public token sources %+v, max %d", pub.TokenSources, pub.MaxTokenBytes)
	}
	if up := set.Match("min.example.org").Upstream; !reflect.DeepEqual(up, authz.Upstream{}) {
		t.Errorf("a login.url policy has upstream %+v", up)
	}
}

func TestSignInFactoryError(t *testing.T) {
	_, err := LoadDir("testdata/valid", Options{NewSignIn: func(name string, _ OIDCConfig) (authz.SignIn, authz.Verifier, error) {
		if name == "public" {
			return nil, nil, errors.New("a shared store needs --session-key-file")
		}
		return fakeSignIn{}, fakeVerifier{}, nil
	}})
	assertErrors(t, err, []string{filepath.Join("testdata/valid", "public.yaml") + ":7: login.oidc: a shared store needs --session-key-file"})
}

func TestOIDCClientKey(t *testing.T) {
	var got OIDCConfig
	if _, err := LoadDir("testdata/signin-key", Options{NewSignIn: func(_ string, cfg OIDCConfig) (authz.SignIn, authz.Verifier, error) {
		got = cfg
		return fakeSignIn{}, fakeVerifier{}, nil
	}}); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/signin-key/keys/app.pem")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.ClientKey) != strings.TrimSpace(string(want)) || got.ClientKeyID != "keyed-2026" || got.ClientSecret != "" || got.ClientAuth != "" {
		t.Errorf("client key %d bytes, secret %q, auth %q", len(got.ClientKey), got.ClientSecret, got.ClientAuth)
	}
}
