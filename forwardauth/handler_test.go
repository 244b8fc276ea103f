package forwardauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

// fakeChecker records the requests it is asked about and answers d.
type fakeChecker struct {
	mu  sync.Mutex
	got []authz.Request
	d   authz.Decision
}

func (f *fakeChecker) Check(_ context.Context, r *authz.Request) authz.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *r
	c.Headers = nil
	f.got = append(f.got, c)
	return f.d
}

func mustPrefixes(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHandlerRoutesAndTrust(t *testing.T) {
	fc := &fakeChecker{d: allowSession}
	h := NewHandler(fc, Options{TrustedProxies: mustPrefixes(t, DefaultTrustedProxies+",10.0.0.0/8")})
	nginx := func(remote string) *http.Request {
		r := httptest.NewRequest("GET", "/auth/nginx", nil)
		r.Host, r.RemoteAddr = "sessiongate:9002", remote
		r.Header = header("X-Original-URI", "/public/x", "X-Original-Method", "GET",
			"X-Forwarded-Host", "app.example.com", "X-Forwarded-Proto", "https")
		return r
	}
	for _, tc := range []struct {
		name     string
		r        *http.Request
		status   int
		wantHost string // "" when the checker must not be asked
		wantPath string
	}{
		{"trusted loopback", nginx("127.0.0.1:4000"), 200, "app.example.com", "/public/x"},
		{"trusted IPv6 loopback", nginx("[::1]:4000"), 200, "app.example.com", "/public/x"},
		{"trusted configured CIDR", nginx("10.20.30.40:4000"), 200, "app.example.com", "/public/x"},
		{"trusted IPv4-mapped", nginx("[::ffff:10.1.1.1]:4000"), 200, "app.example.com", "/public/x"},
		{"untrusted peer cannot pick host or path", nginx("192.0.2.10:4000"), 200, "sessiongate:9002", "/auth/nginx"},
		{"unknown endpoint", httptest.NewRequest("GET", "/auth/other", nil), 404, "", ""},
		{"encoded endpoint", httptest.NewRequest("GET", "/auth/%6eginx", nil), 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc.got = nil
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tc.r)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d", rec.Code, tc.status)
			}
			if tc.wantHost == "" {
				if len(fc.got) != 0 {
					t.Fatalf("checker asked about %+v", fc.got)
				}
				return
			}
			if len(fc.got) != 1 {
				t.Fatalf("checker asked %d times, want 1", len(fc.got))
			}
			if g := fc.got[0]; g.Host != tc.wantHost || g.Path != tc.wantPath {
				t.Errorf("checked host %q path %q, want %q %q", g.Host, g.Path, tc.wantHost, tc.wantPath)
			}
		})
	}
}

func TestHandlerTrustsNobodyWhenEmpty(t *testing.T) {
	fc := &fakeChecker{d: denyAPI}
	h := NewHandler(fc, Options{})
	r := httptest.NewRequest("GET", "/auth/forward", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Forwarded-Uri", "/x")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 401 || len(fc.got) != 1 || fc.got[0].Path != "/auth/forward" {
		t.Errorf("status %d, checked %+v; want 401 and the request's own path", rec.Code, fc.got)
	}
}

func TestHandlerAnyMethod(t *testing.T) {
	fc := &fakeChecker{d: allowBypass}
	h := NewHandler(fc, Options{TrustedProxies: mustPrefixes(t, DefaultTrustedProxies)})
	for _, m := range []string{"GET", "HEAD", "POST", "DELETE", "OPTIONS", "PATCH"} {
		r := httptest.NewRequest(m, "/auth/envoy/api/items", nil)
		r.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Errorf("%s: status %d, want 200", m, rec.Code)
		}
		if g := fc.got[len(fc.got)-1]; g.Method != m || g.Path != "/api/items" {
			t.Errorf("%s: checked %+v", m, g)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // prefixes joined with ","
		wantErr []string
	}{
		{DefaultTrustedProxies, "127.0.0.0/8,::1/128", nil},
		{"", "", nil},
		{" 10.0.0.0/8 , 192.0.2.7,2001:db8::/32, ::ffff:192.0.2.8 ", "10.0.0.0/8,192.0.2.7/32,2001:db8::/32,192.0.2.8/32", nil},
		{"10.0.0.1/8", "", []string{`entry 1 "10.0.0.1/8": host bits set; did you mean 10.0.0.0/8?`}},
		{"10.0.0.0/33,nope,fe80::1%eth0", "", []string{
			`entry 1 "10.0.0.0/33": not a CIDR prefix`,
			`entry 2 "nope": not an IP address or CIDR prefix`,
			`entry 3 "fe80::1%eth0": not an IP address or CIDR prefix`}},
	} {
		got, err := ParsePrefixes(tc.in)
		if tc.wantErr != nil {
			if err == nil {
				t.Errorf("ParsePrefixes(%q): no error, want %q", tc.in, tc.wantErr)
				continue
			}
			if lines := strings.Split(err.Error(), "\n"); strings.Join(lines, "|") != strings.Join(tc.wantErr, "|") {
				t.Errorf("ParsePrefixes(%q) error =\n%v\nwant\n%s", tc.in, err, strings.Join(tc.wantErr, "\n"))
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePrefixes(%q): %v", tc.in, err)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if strings.Join(s, ",") != tc.want {
			t.Errorf("ParsePrefixes(%q) = %v, want %s", tc.in, s, tc.want)
		}
	}
}
