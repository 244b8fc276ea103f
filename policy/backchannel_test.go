package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

type logoutCapable struct {
	fakeVerifier
	audience *string
}

func (v logoutCapable) LogoutVerifier(audience string) authz.LogoutVerifier {
	*v.audience = audience
	return fakeLogout{}
}

type fakeLogout struct{}

func (fakeLogout) VerifyLogout(context.Context, string, time.Time) (*authz.LogoutToken, error) {
	return nil, nil
}

type logoutSignIn struct {
	fakeSignIn
	fakeLogout
}

// TestBackChannelConfig: token.logout_audience makes a token-mode policy
// take logout tokens of its issuer for that audience; a login.oidc policy
// takes those for its client; without either, none.
func TestBackChannelConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("jwks.json", `{"keys":[]}`)
	const session = "session:\n  absolute_timeout: 8h\n  idle_timeout: 30m\n"
	write("tokens.yaml", "hosts: [t.example.com]\n"+session+
		"token:\n  issuer: https://idp.example.com\n  audiences: [api]\n  jwks_file: jwks.json\n  logout_audience: web-client\n"+
		"login:\n  url: https://login.example.com/\n")
	write("plain.yaml", "hosts: [p.example.com]\n"+session+
		"token:\n  issuer: https://idp.example.com\n  audiences: [api]\n  jwks_file: jwks.json\n"+
		"login:\n  url: https://login.example.com/\n")
	write("oidc.yaml", "hosts: [o.example.com]\n"+session+
		"login:\n  oidc:\n    issuer: https://op.example.com\n    client_id: op-client\n")
	var audience string
	set, err := LoadDir(dir, Options{
		NewVerifier: func(string, TokenConfig) (authz.Verifier, error) { return logoutCapable{audience: &audience}, nil },
		NewSignIn: func(name string, _ OIDCConfig) (authz.SignIn, authz.Verifier, error) {
			return logoutSignIn{fakeSignIn: fakeSignIn{name: name}}, fakeVerifier{}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*authz.Policy{}
	for _, p := range set.Policies() {
		byName[p.Name] = p
	}
	if bc := byName["tokens"].BackChannel; bc == nil || bc.Issuer != "https://idp.example.com" || bc.Audience != "web-client" || audience != "web-client" {
		t.Errorf("token mode: %+v (verifier audience %q)", bc, audience)
	}
	if bc := byName["oidc"].BackChannel; bc == nil || bc.Issuer != "https://op.example.com" || bc.Audience != "op-client" {
		t.Errorf("login.oidc: %+v", bc)
	}
	if byName["oidc"].Issuer != "https://op.example.com" || byName["plain"].Issuer != "https://idp.example.com" {
		t.Errorf("issuers: %q, %q", byName["oidc"].Issuer, byName["plain"].Issuer)
	}
	if bc := byName["plain"].BackChannel; bc != nil {
		t.Errorf("a policy without logout_audience takes logout tokens: %+v", bc)
	}
}
