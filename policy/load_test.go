package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

func TestLoadDirValid(t *testing.T) {
	set, err := LoadDir("testdata/valid", Options{})
	if err != nil {
		t.Fatal(err)
	}
	// README.md, sub/ and .hidden.yaml are not policies.
	if got, want := set.Names(), []string{"app", "deep", "default", "minimal", "public", "signin", "wild"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}

	app := set.Match("app.example.com")
	want := &authz.Policy{
		Name:                "app",
		Issuer:              "https://idp.example.com/realms/app",
		Hosts:               []string{"app.example.com", "localhost", "127.0.0.1", "::1", "www.example.com"},
		DryRun:              true,
		AbsoluteTimeout:     8 * time.Hour,
		IdleTimeout:         30 * time.Minute,
		WarnBefore:          20 * time.Minute,
		ActivityGranularity: 10 * time.Second,
		PassivePaths:        []string{"/api/poll"},
		Bypass:              []string{"/healthz", "/public/"},
		BindClaims:          []string{"tid"},
		TokenSources: []authz.TokenSource{
			{Kind: authz.FromHeader, Name: "authorization"},
			{Kind: authz.FromCookie, Name: "access_token"},
			{Kind: authz.FromHeader, Name: "x-token"},
		},
		MaxTokenBytes: 4096, MaxTokenLifetime: 24 * time.Hour,
		Login: authz.Login{
			URL:         "https://login.example.com/start?client=app",
			ReturnParam: "return_to",
			ReauthQuery: "max_age=0&prompt=login",
		},
		Logout:        authz.Logout{Path: "/logout", Match: authz.LogoutNormalized, RedirectURL: "https://login.example.com/signed-out"},
		Cookie:        authz.Cookie{Name: "app_session", SameSite: "Strict"},
		StoreFailOpen: true,
	}
	if !reflect.DeepEqual(app, want) {
		t.Errorf("app policy:\n got %+v\nwant %+v", app, want)
	}

	min := set.Match("min.example.org")
	wantMin := &authz.Policy{
		Name:                "minimal",
		Issuer:              "https://idp.example.org",
		Hosts:               []string{"min.example.org"},
		AbsoluteTimeout:     time.Hour,
		IdleTimeout:         10 * time.Minute,
		ActivityGranularity: 6 * time.Second, // idle_timeout/100
		TokenSources:        []authz.TokenSource{{Kind: authz.FromHeader, Name: "authorization"}},
		MaxTokenBytes:       16384, ClockSkew: 30 * time.Second, MaxTokenLifetime: 24 * time.Hour,
		Login:  authz.Login{URL: "http://login.example.org/", ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"},
		Cookie: authz.Cookie{Name: "__Host-sessiongate", SameSite: "Lax"},
	}
	if !reflect.DeepEqual(min, wantMin) {
		t.Errorf("minimal policy:\n got %+v\nwant %+v", min, wantMin)
	}

	if q := set.Match("anything.test").Login.ReauthQuery; q != "" {
		t.Errorf("reauth_params {} gave ReauthQuery %q, want none", q)
	}
}

func TestTokenConfig(t *testing.T) {
	got := map[string]TokenConfig{}
	_, err := LoadDir("testdata/valid", Options{NewVerifier: func(name string, cfg TokenConfig) (authz.Verifier, error) {
		got[name] = cfg
		return fakeVerifier{}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := filepath.Abs("testdata/valid/keys/jwks.json")
	want := map[string]TokenConfig{
		"app": {
			Issuer: "https://idp.example.com/realms/app", Audiences: []string{"app", "12345"},
			JWKSFile: jwks, Algorithms: []string{"RS256", "ES256"}, ClockSkew: 0, MaxBytes: 4096,
			BindClaims: []string{"tid"}, RefreshInterval: time.Minute, MinRefreshInterval: 5 * time.Second, MaxLifetime: 24 * time.Hour,
		},
		"minimal": {
			Issuer: "https://idp.example.org", Audiences: []string{"min"}, JWKSURI: "https://idp.example.org/jwks",
			Algorithms: defaultAlgorithms(), ClockSkew: 30 * time.Second, MaxBytes: 16384,
			RefreshInterval: 5 * time.Minute, MinRefreshInterval: 10 * time.Second, MaxLifetime: 24 * time.Hour,
		},
	}
	for name, w := range want {
		if !reflect.DeepEqual(got[name], w) {
			t.Errorf("%s: TokenConfig\n got %+v\nwant %+v", name, got[name], w)
		}
	}
	if len(got) != 5 {
		t.Errorf("NewVerifier called for %d policies, want 5", len(got))
	}
}

type fakeVerifier struct{}

func (fakeVerifier) Verify(context.Context, string, time.Time) (*authz.Claims, error) {
	return nil, errors.New("fake")
}

func TestVerifierFactoryError(t *testing.T) {
	_, err := LoadDir("testdata/valid", Options{NewVerifier: func(name string, cfg TokenConfig) (authz.Verifier, error) {
		if name == "wild" {
			return nil, errors.New("no usable key")
		}
		return fakeVerifier{}, nil
	}})
	assertErrors(t, err, []string{"testdata/valid/wild.yaml:3: token: no usable key"})
}

// TestLoadDirBad holds one directory per class of mistake; each entry is
// the exact "file:line: field: " prefix, plus the start of the message.
// TestWarnings: a policy without logout loads, with one warning that names
// the file and the field; the policies with a logout path have none.
func TestWarnings(t *testing.T) {
	set, err := LoadDir("testdata/valid", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range set.Warnings() {
		got = append(got, w.Error())
	}
	var want []string
	// wild.yaml says `logout: {}`: no sign-out, on purpose.
	for _, f := range []string{"deep.yaml", "default.yaml", "minimal.yml", "public.yaml"} {
		want = append(want, "testdata/valid/"+f+": logout: not set: users cannot sign out through sessiongate, "+
			"so a session ends only by its timeouts; set logout.path and logout.redirect_url, or `logout: {}` to say there is none (S6)")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Warnings():\n got %q\nwant %q", got, want)
	}
}

func TestLoadDirBad(t *testing.T) {
	tests := map[string][]string{
		"alg_none":                         {"p.yaml:8: token.algorithms[0]: \"none\" is never accepted"},
		"bad_cookie_name":                  {"p.yaml:6: session.cookie.name: \"my session\" is not a valid cookie name"},
		"bad_duration":                     {"p.yaml:4: session.idle_timeout: invalid duration \"30 minutes\""},
		"bad_host":                         {"p.yaml:2: hosts[0]: \"crm.example.com:8443\" must not carry a port", "p.yaml:3: hosts[1]: \"https://crm.example.com\" must be a host name, not a URL", "p.yaml:4: hosts[2]: \"a.*.example.com\" is not a valid host name", "p.yaml:5: hosts[3]: \"crm.example.com/app\" must be a host name without a path", "p.yaml:6: hosts[4]: \"-crm.example.com\" is not a valid host name"},
		"bad_mode":                         {"p.yaml:2: mode: must be enforce or dry-run"},
		"bad_path":                         {"p.yaml:11: bypass[0]: \"healthz\" must start with \"/\"", "p.yaml:11: bypass[1]: \"/public?x=1\" must not contain a query"},
		"bad_same_site":                    {"p.yaml:6: session.cookie.same_site: must be Lax, Strict or None, not \"Loose\""},
		"bad_store_failure":                {"p.yaml:5: session.store_failure: must be deny or continue"},
		"bad_token_source":                 {"p.yaml:8: token.from[1]: \"query:token\" must be header:NAME or cookie:NAME", "p.yaml:8: token.from[2]: \"cookie:a b\": \"a b\" is not a valid cookie name"},
		"bare_number_duration":             {"p.yaml:3: session.absolute_timeout: 28800 has no unit"},
		"clock_skew_range":                 {"p.yaml:8: token.clock_skew: must be between 0s and 5m0s"},
		"duplicate_default":                {"b.yaml:1: hosts[1]: a default policy (\"*\") is already defined by testdata/bad/duplicate_default/a.yaml"},
		"duplicate_host":                   {"b.yaml:1: hosts[1]: host \"shared.example.com\" is already claimed by testdata/bad/duplicate_host/a.yaml"},
		"duplicate_name":                   {"p.yml:1: policy: name \"p\" (the file stem) is also the name of testdata/bad/duplicate_name/p.yaml"},
		"empty_file":                       {"p.yaml:1: policy: empty file"},
		"empty_value":                      {"p.yaml:5: session.warn_before: empty value"},
		"granularity_too_coarse":           {"p.yaml:5: session.activity_granularity: must be at most a quarter of session.idle_timeout (7m30s)"},
		"hosts_not_a_list":                 {"p.yaml:1: hosts: must be a list"},
		"hs256_algorithm":                  {"p.yaml:8: token.algorithms[1]: \"HS256\" is not accepted"},
		"idle_not_below_absolute":          {"p.yaml:4: session.idle_timeout: must be less than session.absolute_timeout (8h0m0s)"},
		"jwks_both":                        {"p.yaml:9: token.jwks_uri: set only one of token.jwks_file and token.jwks_uri"},
		"jwks_file_missing":                {"p.yaml:8: token.jwks_file: cannot read testdata/bad/jwks_file_missing/keys/missing.json: no such file or directory"},
		"jwks_neither":                     {"p.yaml:5: token: one of jwks_file or jwks_uri is required"},
		"jwks_uri_http":                    {"p.yaml:8: token.jwks_uri: must use https"},
		"logout_bypassed":                  {"p.yaml:12: logout.path: \"/account/logout\" is under bypass[1] \"/account\""},
		"logout_passive":                   {"p.yaml:13: logout.path: \"/logout\" equals session.passive_paths[1]"},
		"logout_without_path":              {"p.yaml:12: logout.redirect_url: has no effect without logout.path"},
		"max_bytes_range":                  {"p.yaml:8: token.max_bytes: must be between 512 and 1048576"},
		"min_refresh_above_refresh":        {"p.yaml:9: token.jwks_min_refresh_interval: must not exceed token.jwks_refresh_interval (1m0s)"},
		"missing_required":                 {"p.yaml:5: token.issuer: required"},
		"missing_section":                  {"p.yaml:1: session: required"},
		"not_a_mapping":                    {"p.yaml:1: policy: must be a mapping"},
		"reauth_collides":                  {"p.yaml:11: login.reauth_params.rd: collides with login.return_param"},
		"relative_login_url":               {"p.yaml:10: login.url: must be an absolute http(s) URL"},
		"relative_redirect_url":            {"p.yaml:13: logout.redirect_url: must be an absolute http(s) URL"},
		"repeated_host":                    {"p.yaml:1: hosts[1]: \"BAD.example.com.\" repeats hosts[0]"},
		"repeated_key":                     {"p.yaml:5: session.idle_timeout: repeated (first at line 4)"},
		"syntax":                           {"p.yaml:7: yaml: did not find expected ',' or ']'"},
		"two_documents":                    {"p.yaml:11: yaml: only one document per file"},
		"url_credentials":                  {"p.yaml:8: token.jwks_uri: must not carry user credentials"},
		"oidc_and_url":                     {"p.yaml:6: login.url: set only one of login.url and login.oidc"},
		"oidc_return_param":                {"p.yaml:9: login.return_param: has no effect with login.oidc"},
		"oidc_issuer":                      {"p.yaml:7: login.oidc.issuer: must use https (http only for 127.0.0.1, localhost or [::1])"},
		"oidc_missing_client_id":           {"p.yaml:6: login.oidc.client_id: required"},
		"oidc_secret_missing":              {"p.yaml:9: login.oidc.client_secret_file: cannot read testdata/bad/oidc_secret_missing/secrets/missing: no such file or directory"},
		"oidc_client_auth":                 {"p.yaml:9: login.oidc.client_auth: must be basic, post, private_key_jwt or none, not \"tls_client_auth\""},
		"oidc_key_id_without_key":          {"p.yaml:9: login.oidc.client_key_id: has no effect without login.oidc.client_key_file"},
		"oidc_key_and_secret":              {"p.yaml:10: login.oidc.client_key_file: set only one of login.oidc.client_secret_file and login.oidc.client_key_file"},
		"oidc_private_key_jwt_without_key": {"p.yaml:9: login.oidc.client_auth: private_key_jwt needs login.oidc.client_key_file"},
		"oidc_client_auth_without_secret":  {"p.yaml:9: login.oidc.client_auth: basic needs login.oidc.client_secret_file"},
		"oidc_scopes":                      {"p.yaml:9: login.oidc.scopes[1]: \"two words\" is not a valid scope", "p.yaml:9: login.oidc.scopes[2]: \"profile\" repeats login.oidc.scopes[0]", "p.yaml:9: login.oidc.scopes: must include openid"},
		"oidc_callback":                    {"p.yaml:9: login.oidc.callback_path: \"/public/callback\" is under bypass[0] \"/public\""},
		"oidc_callback_is_logout":          {"p.yaml:9: login.oidc.callback_path: \"/logout\" equals logout.path"},
		"oidc_params_reserved":             {"p.yaml:9: login.oidc.params.state: is set by the sign-in itself", "p.yaml:10: login.reauth_params.nonce: is set by the sign-in itself"},
		"upstream_without_oidc":            {"p.yaml:11: upstream: only with login.oidc"},
		"logout_audience_empty":            {"p.yaml:9: token.logout_audience: must not be empty (omit it for no back-channel logout)"},
		"logout_audience_oidc":             {"p.yaml:6: token.logout_audience: under login.oidc logout tokens are for login.oidc.client_id: remove it"},
		"upstream_headers":                 {"p.yaml:10: upstream.access_token: \"cookie\" is a header the gate or HTTP itself owns", "p.yaml:13: upstream.headers.bad header: \"bad header\" is not a valid header name", "p.yaml:14: upstream.headers.Authorization: \"Authorization\" is a header the gate or HTTP itself owns", "p.yaml:15: upstream.headers.x-empty: claim must not be empty"},
		"require_auth_time_not_bool":       {"p.yaml:9: token.require_auth_time: must be true or false, not \"yes\""},
		"login_neither":                    {"p.yaml:9: login: one of url or oidc is required"},
		"wrong_types":                      {"p.yaml:2: mode: must be a string", "p.yaml:4: session.absolute_timeout: must be a duration", "p.yaml:7: token.issuer: must not be empty", "p.yaml:8: token.audiences: must be a list", "p.yaml:10: token.max_bytes: must be an integer, not \"16KiB\"", "p.yaml:11: login: must be a mapping"},
		"unknown_field":                    {"p.yaml:5: session.idle_timout: unknown field (want one of: absolute_timeout, idle_timeout,"},
		"warn_not_below_absolute":          {"p.yaml:5: session.warn_before: must be less than session.absolute_timeout"},
		"max_lifetime_range":               {"p.yaml:9: token.max_lifetime: must be between 1m0s and 720h0m0s"},
		"bad_logout_match":                 {"p.yaml:13: logout.match: must be exact, normalized or prefix, not \"Normalised\""},
	}
	entries, err := os.ReadDir("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := tests[e.Name()]; !ok {
			t.Errorf("testdata/bad/%s has no expectation", e.Name())
		}
	}
	for class, want := range tests {
		t.Run(class, func(t *testing.T) {
			dir := filepath.Join("testdata/bad", class)
			for i := range want {
				want[i] = dir + "/" + want[i]
			}
			set, err := LoadDir(dir, Options{})
			if set != nil {
				t.Error("got a Set despite problems")
			}
			assertErrors(t, err, want)
		})
	}
}

// assertErrors checks err is an Errors whose lines start with want, in order.
func assertErrors(t *testing.T, err error, want []string) {
	t.Helper()
	errs, ok := errors.AsType[Errors](err)
	if !ok {
		t.Fatalf("error %v (%T) is not an Errors", err, err)
	}
	lines := strings.Split(errs.Error(), "\n")
	if len(lines) != len(errs) {
		t.Fatalf("Errors text has %d lines for %d problems", len(lines), len(errs))
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), errs)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d:\n got %s\nwant %s…", i, lines[i], w)
		}
	}
}

func TestLoadDirReportsEveryProblem(t *testing.T) {
	_, err := LoadDir("testdata/many", Options{})
	assertErrors(t, err, []string{
		"testdata/many/a.yaml:1: hosts[0]: \"a.example.com:80\" must not carry a port",
		"testdata/many/a.yaml:4: session.idle_timeout: 20 has no unit",
		"testdata/many/a.yaml:5: token.issuer: required",
		"testdata/many/a.yaml:6: token.audiences: must not be empty",
		"testdata/many/a.yaml:8: login.url: must be an absolute http(s) URL",
		"testdata/many/b.yaml:1: hosts[0]: host \"shared.example.com\" is already claimed by testdata/many/a.yaml",
		"testdata/many/b.yaml:3: session.absolute_timeout: required",
		"testdata/many/b.yaml:5: token.issuer: required",
		"testdata/many/b.yaml:5: token.audiences: required",
		"testdata/many/b.yaml:6: token.algorithms[0]: \"HS512\" is not accepted",
		"testdata/many/c.yaml:3: yaml: a tab in the indentation: YAML indents with spaces only",
	})
}

func TestLoadDirNoPolicies(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755)
	_, err := LoadDir(dir, Options{})
	assertErrors(t, err, []string{dir + ": no policies in directory"})

	_, err = LoadDir(filepath.Join(dir, "missing"), Options{})
	assertErrors(t, err, []string{filepath.Join(dir, "missing") + ": cannot read policy directory: no such file or directory"})
}

func TestLoadFiles(t *testing.T) {
	// A directory and a file inside it: the file is not loaded twice.
	set, err := LoadFiles([]string{"testdata/valid", "testdata/valid/app.yaml"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(set.Policies()); n != 7 {
		t.Errorf("got %d policies, want 7", n)
	}

	// Hosts and names must be unique across every path given.
	_, err = LoadFiles([]string{"testdata/valid/minimal.yml", "testdata/bad/duplicate_name/p.yaml", "testdata/bad/duplicate_host/b.yaml", "testdata/bad/duplicate_host", "testdata/nowhere.yaml"}, Options{})
	assertErrors(t, err, []string{
		"testdata/bad/duplicate_host/a.yaml:1: hosts[0]: host \"shared.example.com\" is already claimed by testdata/bad/duplicate_host/b.yaml",
		"testdata/nowhere.yaml: cannot read: no such file or directory",
	})

	_, err = LoadFiles(nil, Options{})
	assertErrors(t, err, []string{"no policy files given"})
}

func TestErrorsDoNotEchoURLCredentials(t *testing.T) {
	_, err := LoadDir("testdata/bad/url_credentials", Options{})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %q leaks the URL's credentials", err)
	}
}
