package authz

import (
	"net/url"
	"strings"
	"testing"
)

// Seeds live in testdata/fuzz/<Target>; .ci/fuzz runs each target for a
// bounded time, and any input that fails is kept there as a regression test.

// FuzzCookieValue compares CookieValue with a plain reference parse of the
// same grammar: the first cookie called name wins, its value trimmed of
// trailing blanks and one pair of quotes.
func FuzzCookieValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, header, name string) {
		if !cookieToken(name) {
			return // names come from validated policies
		}
		got, ok := CookieValue(header, name)
		want, wantOK := referenceCookie(header, name)
		if got != want || ok != wantOK {
			t.Fatalf("CookieValue(%q, %q) = %q, %v; want %q, %v", header, name, got, ok, want, wantOK)
		}
		if ok && strings.IndexByte(got, ';') >= 0 {
			t.Fatalf("value %q spans a cookie separator", got)
		}
	})
}

func referenceCookie(header, name string) (string, bool) {
	for _, part := range strings.Split(header, ";") {
		k, v, found := strings.Cut(strings.TrimLeft(part, " \t"), "=")
		if !found || k != name {
			continue
		}
		v = strings.TrimRight(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// cookieToken reports whether name is an RFC 6265 cookie name (a token).
func cookieToken(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// FuzzBearer: a token is only ever taken from "Bearer <token>" (any case),
// trimmed, and is never empty or blank-edged.
func FuzzBearer(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string) {
		got := bearer(header)
		if got == "" {
			return
		}
		if len(header) < 7 || !strings.EqualFold(header[:7], "bearer ") {
			t.Fatalf("bearer(%q) = %q without the Bearer scheme", header, got)
		}
		if got != strings.TrimSpace(header[7:]) {
			t.Fatalf("bearer(%q) = %q, want the rest trimmed", header, got)
		}
	})
}

// FuzzReturnURL: for any host and path, the return URL is "" (host not a
// plain host[:port]) or starts with the request's own scheme://host and a
// path, holds no byte that could end a header or a URL (CR, LF, space,
// controls, non-ASCII), and never carries the value of a token parameter
// planted in the query; the login URL carries exactly that return URL.
func FuzzReturnURL(f *testing.F) {
	p := &Policy{Login: Login{URL: "https://login.example.com/start?client=app", ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"}}
	names := []string{"access_token", "ACCESS_TOKEN", "Access_Token", "access%5Ftoken", "%61ccess_token", "id_token", "refresh_token", "x=1;access_token"}
	f.Fuzz(func(t *testing.T, scheme, host, path, tail, secret string, variant uint8, reauth bool) {
		if len(secret) < 12 || strings.ContainsFunc(secret, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
		}) {
			secret = "s3cr3t-t0k3n-value"
		}
		sep := "?"
		if strings.IndexByte(path, '?') >= 0 {
			sep = "&"
		}
		planted := path + sep + names[int(variant)%len(names)] + "=" + secret + "&" + tail
		control := path + sep + "x=y&" + tail
		r := &Request{Scheme: scheme, Host: host, Path: planted}

		got := ReturnURL(r)
		if got == "" {
			if validHost(host) {
				t.Fatalf("no return URL for the valid host %q", host)
			}
		} else {
			s := "https"
			if scheme == "http" {
				s = "http"
			}
			prefix := s + "://" + strings.ToLower(host) + "/"
			if !strings.HasPrefix(got, prefix) || strings.HasPrefix(got[len(prefix):], "/") {
				t.Fatalf("ReturnURL = %q, not on %q", got, prefix)
			}
		}
		for _, c := range []byte(got) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("ReturnURL = %q holds byte %#x", got, c)
			}
		}

		login := LoginURL(p, r, reauth)
		rest, ok := strings.CutPrefix(login, p.Login.URL)
		if !ok {
			t.Fatalf("LoginURL = %q, not the policy's login URL", login)
		}
		for _, c := range []byte(login) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("LoginURL = %q holds byte %#x", login, c)
			}
		}
		q, err := url.ParseQuery(strings.TrimPrefix(rest, "&"))
		if err != nil {
			t.Fatalf("LoginURL = %q: %v", login, err)
		}
		if q.Get("rd") != got || (q.Get("prompt") == "login") != reauth {
			t.Fatalf("LoginURL = %q, want rd=%q and reauth %v", login, got, reauth)
		}

		// The secret may occur in the URL for reasons of its own (in the
		// path, the host…): only a secret that the same URL without the
		// token parameter lacks shows that the parameter leaked.
		if !strings.Contains(LoginURL(p, &Request{Scheme: scheme, Host: host, Path: control}, true), secret) &&
			strings.Contains(login, secret) {
			t.Fatalf("the value of a token parameter leaked into %q", login)
		}
	})
}

// FuzzParseAuthority: what ParseAuthority accepts, net/url reads as the same
// host (lower-cased, trailing dot dropped) with at most a numeric port and
// nothing else (no userinfo, path or query); the host it returns is lower
// case and holds no byte that could end an authority or split a header; and
// ReturnURL builds a return URL exactly for the authorities it accepts.
func FuzzParseAuthority(f *testing.F) {
	f.Fuzz(func(t *testing.T, a string) {
		host, ok := ParseAuthority(a)
		if got := ReturnURL(&Request{Host: a, Path: "/"}); (got != "") != ok {
			t.Fatalf("ParseAuthority(%q) ok=%v but ReturnURL = %q", a, ok, got)
		}
		if !ok {
			if host != "" {
				t.Fatalf("ParseAuthority(%q) refused but returned %q", a, host)
			}
			return
		}
		if host == "" || host != strings.ToLower(host) || strings.ContainsAny(host, "@/?#[], \t\r\n\x00%") {
			t.Fatalf("ParseAuthority(%q) = %q", a, host)
		}
		u, err := url.Parse("http://" + a + "/")
		if err != nil {
			t.Fatalf("ParseAuthority accepted %q, which net/url refuses: %v", a, err)
		}
		if u.User != nil || u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("ParseAuthority accepted %q, which net/url reads as more than an authority: %#v", a, u)
		}
		if want := strings.TrimSuffix(strings.ToLower(u.Hostname()), "."); want != host {
			t.Fatalf("ParseAuthority(%q) = %q, net/url says %q", a, host, want)
		}
		if p := u.Port(); p != "" && strings.Trim(p, "0123456789") != "" {
			t.Fatalf("ParseAuthority(%q) accepted port %q", a, p)
		}
	})
}

// FuzzNormalizePath: NormalizePath is idempotent and its result is one
// canonical spelling (a leading "/", no empty, "." or ".." segment, no
// trailing "/", no upper-case letter, no ";" or "\"); and the logout
// matches nest: what exact matches, normalized matches, and what
// normalized matches, prefix matches.
func FuzzNormalizePath(f *testing.F) {
	f.Fuzz(func(t *testing.T, path, logout string) {
		n := NormalizePath(path)
		if NormalizePath(n) != n {
			t.Fatalf("NormalizePath(%q) = %q, which normalises again to %q", path, n, NormalizePath(n))
		}
		if n[0] != '/' || n != "/" && n[len(n)-1] == '/' || strings.Contains(n, "//") || strings.ContainsAny(n, ";\\") ||
			n != strings.ToLower(n) {
			t.Fatalf("NormalizePath(%q) = %q", path, n)
		}
		for seg := range strings.SplitSeq(n[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q keeps a dot segment", path, n)
			}
		}
		if logout == "" || logout[0] != '/' {
			return // policies validate the logout path
		}
		exact, norm, prefix := Logout{Path: logout}, Logout{Path: logout, Match: LogoutNormalized}, Logout{Path: logout, Match: LogoutPrefix}
		if exact.Matches(path) && !norm.Matches(path) || norm.Matches(path) && !prefix.Matches(path) {
			t.Fatalf("path %q, logout %q: exact %v, normalized %v, prefix %v", path, logout,
				exact.Matches(path), norm.Matches(path), prefix.Matches(path))
		}
	})
}
