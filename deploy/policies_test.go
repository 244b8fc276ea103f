package deploy

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// The example policies shipped for the proxies.
const (
	examplePolicies = "../envoy/examples/policies"
	k8sAppPolicy    = kubernetesDir + "/policies/app.yaml"
)

// appPolicySpec holds the fields of a policy file that sign-in wiring is
// made of; `sessiongate validate` checks the rest.
type appPolicySpec struct {
	Hosts []string `yaml:"hosts"`
	Token *struct {
		JWKSFile string `yaml:"jwks_file"`
	} `yaml:"token"`
	Login struct {
		URL  string `yaml:"url"`
		OIDC *struct {
			Issuer           string   `yaml:"issuer"`
			ClientID         string   `yaml:"client_id"`
			ClientSecretFile string   `yaml:"client_secret_file"`
			Scopes           []string `yaml:"scopes"`
			CallbackPath     string   `yaml:"callback_path"`
		} `yaml:"oidc"`
	} `yaml:"login"`
	Logout struct {
		Path        string `yaml:"path"`
		RedirectURL string `yaml:"redirect_url"`
	} `yaml:"logout"`
	Upstream struct {
		AccessToken string `yaml:"access_token"`
	} `yaml:"upstream"`
	Bypass []string `yaml:"bypass"`
}

func readPolicySpec(t *testing.T, path string) appPolicySpec {
	t.Helper()
	var p appPolicySpec
	if err := yamlDocs(t, path)[0].Decode(&p); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// checkAppPolicy fails unless the application policy at path signs its
// users in with login.oidc as the examples promise: a confidential client
// whose secret is a file, a refresh token (offline_access), the default
// callback path (what the proxies' configuration and the provider's
// redirect URI assume), sign-out to a page that needs no session, and the
// access token for the application. It returns the policy.
func checkAppPolicy(t *testing.T, path string) appPolicySpec {
	t.Helper()
	p := readPolicySpec(t, path)
	o := p.Login.OIDC
	if o == nil || p.Login.URL != "" {
		t.Fatalf("%s: login.oidc not set (or login.url too): the example application must sign users in itself", path)
	}
	if o.Issuer == "" || o.ClientID == "" || o.ClientSecretFile == "" {
		t.Errorf("%s: login.oidc wants issuer, client_id and client_secret_file", path)
	}
	for _, s := range []string{"openid", "offline_access"} {
		if !slices.Contains(o.Scopes, s) {
			t.Errorf("%s: login.oidc.scopes %v lacks %s", path, o.Scopes, s)
		}
	}
	if o.CallbackPath != "" {
		t.Errorf("%s: login.oidc.callback_path %q: the examples and their documentation use the default", path, o.CallbackPath)
	}
	if p.Logout.Path == "" {
		t.Errorf("%s: no logout.path: users could not sign out (S6, S17)", path)
	}
	u, err := url.Parse(p.Logout.RedirectURL)
	if err != nil || !slices.ContainsFunc(p.Bypass, func(b string) bool { return authz.MatchPath(u.Path, b) }) {
		t.Errorf("%s: logout.redirect_url %q is not on a bypassed path %v: the signed-out page would start a sign-in", path, p.Logout.RedirectURL, p.Bypass)
	}
	if a := strings.ToLower(p.Upstream.AccessToken); a == "" || a == "none" {
		t.Errorf("%s: upstream.access_token %q: the example sends the access token to the application", path, p.Upstream.AccessToken)
	}
	return p
}

// TestExampleApplicationPolicies: the browser application of every
// shipped example signs users in with login.oidc (the Compose example
// mounts envoy/examples/policies, the image copies them).
func TestExampleApplicationPolicies(t *testing.T) {
	p := checkAppPolicy(t, examplePolicies+"/app.yaml")
	// A relative secret file lies beside the policies, so that the
	// directory validates and the image (which copies it) starts.
	if f := p.Login.OIDC.ClientSecretFile; strings.HasPrefix(f, "/") {
		t.Errorf("%s/app.yaml: client_secret_file %q: keep it beside the policy in this directory", examplePolicies, f)
	}
	// Kubernetes: its secret file is a mounted Secret (TestKubernetesDeployment).
	checkAppPolicy(t, k8sAppPolicy)

}

// TestQuickstartTokenMode runs the README's first five minutes on the
// example policies next to the sign-in application: a token signed with
// the demo key opens a session on demo.localhost, the same cookie resumes
// it, and sign-out sticks.
func TestQuickstartTokenMode(t *testing.T) {
	demo := readPolicySpec(t, examplePolicies+"/demo.yaml")
	if demo.Login.URL == "" || demo.Login.OIDC != nil || demo.Token == nil || demo.Token.JWKSFile == "" || !slices.Equal(demo.Hosts, []string{"demo.localhost"}) {
		t.Fatalf("%s/demo.yaml: the quickstart's policy must stay token mode (login.url, the demo key's jwks_file) for demo.localhost", examplePolicies)
	}
	s := startServe(t, map[string]string{"SESSIONGATE_POLICIES": examplePolicies}, nil)
	tok, code := runBin(t, "mint", "--sub", "alice")
	if code != 0 {
		t.Fatalf("sessiongate mint: exit %d\n%s", code, tok)
	}
	tok = strings.TrimSpace(tok)
	check := func(args ...string) (string, int) {
		return runBin(t, append([]string{"check", "--addr", s.grpcAddr, "--host", "demo.localhost", "--token", tok}, args...)...)
	}
	out, code := check()
	m := regexp.MustCompile(`set-cookie: ([^;]*);`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("check with a minted token: exit %d, want 0 with a session cookie\n%s", code, out)
	}
	if out, code := check("--cookie", m[1]); code != 0 {
		t.Errorf("check with the session's cookie: exit %d\n%s", code, out)
	}
	if out, code := check("--path", "/logout", "--cookie", m[1]); code != 3 || !strings.Contains(out, "302") {
		t.Errorf("check /logout: exit %d, want 3 (denied) with a 302\n%s", code, out)
	}
	if out, code := check("--cookie", m[1]); code != 3 || !strings.Contains(out, "reauth_required") {
		t.Errorf("check after sign-out: exit %d, want 3 with reauth_required\n%s", code, out)
	}
}
