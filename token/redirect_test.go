package token

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sessiongate/sessiongate/internal/idp"
)

// redirectingIdP is a transport that answers every URL: with a redirect
// where the test says so, else with the key set. It records what was asked.
type redirectingIdP struct {
	jwks      []byte
	redirects map[string]string // URL → Location
	mu        sync.Mutex
	asked     []string
}

func (f *redirectingIdP) RoundTrip(r *http.Request) (*http.Response, error) {
	u := r.URL.String()
	f.mu.Lock()
	f.asked = append(f.asked, u)
	f.mu.Unlock()
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r,
		Body: io.NopCloser(strings.NewReader(string(f.jwks)))}
	if loc, ok := f.redirects[u]; ok {
		resp.StatusCode, resp.Body = http.StatusFound, io.NopCloser(strings.NewReader(""))
		resp.Header.Set("Location", loc)
	}
	return resp, nil
}

// TestJWKSRedirects: every hop of a key set fetch follows the jwks_uri rule
// (https, or http to a loopback host) and never leaves https; a redirect
// that breaks it is a failed fetch, and the target is never asked. (Before,
// any redirect was followed: the rule held for the first URL only.)
func TestJWKSRedirects(t *testing.T) {
	a := newIDP(t, idp.ES256)
	loop := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m["https://idp.example.com/"+string(rune('a'+i))] = "https://idp.example.com/" + string(rune('a'+i+1))
		}
		return m
	}
	for _, tt := range []struct {
		name      string
		start     string
		redirects map[string]string
		never     string // a URL that must not be asked for
		ok        bool
	}{
		{"loopback http to remote http", "http://127.0.0.1/jwks",
			map[string]string{"http://127.0.0.1/jwks": "http://keys.example.com/jwks"}, "http://keys.example.com/jwks", false},
		{"https to loopback http", "https://idp.example.com/jwks",
			map[string]string{"https://idp.example.com/jwks": "http://127.0.0.1/jwks"}, "http://127.0.0.1/jwks", false},
		{"https to remote http", "https://idp.example.com/jwks",
			map[string]string{"https://idp.example.com/jwks": "http://keys.example.com/jwks"}, "http://keys.example.com/jwks", false},
		{"https to another scheme", "https://idp.example.com/jwks",
			map[string]string{"https://idp.example.com/jwks": "ftp://keys.example.com/jwks"}, "ftp://keys.example.com/jwks", false},
		{"a second hop to http", "https://idp.example.com/jwks",
			map[string]string{"https://idp.example.com/jwks": "https://cdn.example.com/jwks", "https://cdn.example.com/jwks": "http://keys.example.com/jwks"},
			"http://keys.example.com/jwks", false},
		{"more than 5 redirects", "https://idp.example.com/a", loop(6), "https://idp.example.com/g", false},
		{"https to https", "https://idp.example.com/jwks",
			map[string]string{"https://idp.example.com/jwks": "https://keys.example.com/jwks"}, "", true},
		{"loopback to loopback", "http://localhost/jwks",
			map[string]string{"http://localhost/jwks": "http://[::1]:8080/jwks"}, "", true},
		{"5 redirects", "https://idp.example.com/a", loop(5), "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			f := &redirectingIdP{jwks: a.JWKS(), redirects: tt.redirects}
			// A client of the caller's own, as Options.HTTPClient allows:
			// the rule applies to it too.
			e.p = NewProvider(Options{Logger: slog.New(slog.NewTextHandler(e.logs, nil)), Clock: e.clock,
				Observer: e.obs, HTTPClient: &http.Client{Transport: f}})
			cfg := baseConfig("")
			cfg.JWKSURI = tt.start
			v := e.verifier(cfg)
			_, err := verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now())
			if tt.ok != (err == nil) {
				t.Fatalf("verify: %v (asked %q)", err, f.asked)
			}
			for _, u := range f.asked {
				if u == tt.never {
					t.Fatalf("asked for %s", u)
				}
			}
		})
	}
}

// TestJWKSURIRule: the token package holds jwks_uri to the same rule as the
// policy schema, so that no caller can hand it plain http to a remote host.
func TestJWKSURIRule(t *testing.T) {
	e := newEnv(t)
	for uri, ok := range map[string]bool{
		"https://idp.example.com/jwks": true, "http://127.0.0.1:8080/jwks": true, "http://localhost/jwks": true,
		"http://[::1]/jwks": true, "http://idp.example.com/jwks": false, "http://10.0.0.1/jwks": false,
	} {
		cfg := baseConfig("")
		cfg.JWKSURI = uri
		if _, err := e.p.Verifier(cfg); (err == nil) != ok {
			t.Errorf("%s: %v", uri, err)
		}
	}
}
