package authz

import (
	"net/url"
	"strings"
	"testing"
)

func TestReturnURL(t *testing.T) {
	tests := []struct {
		name   string
		scheme string
		host   string
		path   string
		want   string
	}{
		{"root", "https", "app.example.com", "/", "https://app.example.com/"},
		{"empty path", "https", "app.example.com", "", "https://app.example.com/"},
		{"relative path", "https", "app.example.com", "x/y", "https://app.example.com/x/y"},
		{"asterisk", "https", "app.example.com", "*", "https://app.example.com/*"},
		{"query kept", "https", "app.example.com", "/a?b=1&c=2", "https://app.example.com/a?b=1&c=2"},
		{"empty query dropped", "https", "app.example.com", "/a?", "https://app.example.com/a"},
		{"http", "http", "app.example.com", "/a", "http://app.example.com/a"},
		{"odd scheme", "javascript", "app.example.com", "/a", "https://app.example.com/a"},
		{"port and case", "https", "App.Example.COM:8443", "/A", "https://app.example.com:8443/A"},
		{"ipv6", "http", "[::1]:8080", "/", "http://[::1]:8080/"},
		{"network path", "https", "app.example.com", "//evil.example", "https://app.example.com/evil.example"},
		{"triple slash", "https", "app.example.com", "///evil.example/a", "https://app.example.com/evil.example/a"},
		{"slash backslash", "https", "app.example.com", "/\\evil.example", "https://app.example.com/%5Cevil.example"},
		{"CR LF", "https", "app.example.com", "/a\r\nLocation: https://evil.example", "https://app.example.com/a%0D%0ALocation:%20https://evil.example"},
		{"controls", "https", "app.example.com", "/\x00\x1f\x7f", "https://app.example.com/%00%1F%7F"},
		{"non-UTF-8", "https", "app.example.com", "/\xc3\x28", "https://app.example.com/%C3("},
		{"quotes and brackets", "https", "app.example.com", `/"<>\^` + "`{|}", "https://app.example.com/%22%3C%3E%5C%5E%60%7B%7C%7D"},
		{"escapes kept", "https", "app.example.com", "/a%20b?q=%2F", "https://app.example.com/a%20b?q=%2F"},
		{"fragment", "https", "app.example.com", "/a?b=1#c?d", "https://app.example.com/a?b=1"},
		{"query with CR LF", "https", "app.example.com", "/a?x=\r\n", "https://app.example.com/a?x=%0D%0A"},
		{"token in query", "https", "app.example.com", "/cb?code=1&access_token=s3cr3t&state=2", "https://app.example.com/cb?code=1&state=2"},
		{"all token params", "https", "app.example.com", "/cb?id_token=a&refresh_token=b&access_token=c", "https://app.example.com/cb"},
		{"encoded token param", "https", "app.example.com", "/cb?%61ccess_token=s3cr3t&x=1", "https://app.example.com/cb?x=1"},
		{"token param without value", "https", "app.example.com", "/cb?access_token&x=1", "https://app.example.com/cb?x=1"},
		{"token-like value kept", "https", "app.example.com", "/cb?q=access_token", "https://app.example.com/cb?q=access_token"},
		{"bad host: userinfo", "https", "user@evil.example", "/", ""},
		{"bad host: slash", "https", "app.example.com/evil", "/", ""},
		{"bad host: CRLF", "https", "app.example.com\r\nx: y", "/", ""},
		{"bad host: empty", "https", "", "/", ""},
		{"bad host: too long", "https", strings.Repeat("a", 256), "/", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ReturnURL(&Request{Scheme: tc.scheme, Host: tc.host, Path: tc.path})
			if got != tc.want {
				t.Errorf("ReturnURL\n got %q\nwant %q", got, tc.want)
			}
			if got == "" {
				return
			}
			u, err := url.Parse(got)
			if err != nil {
				t.Fatalf("unparseable %q: %v", got, err)
			}
			if u.Host != strings.ToLower(tc.host) || u.User != nil || u.Opaque != "" {
				t.Errorf("%q points at host %q", got, u.Host)
			}
		})
	}
}

func TestReturnURLEscapesEveryUnsafeByte(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		if c != '?' && c != '#' {
			all = append(all, byte(c))
		}
	}
	got := ReturnURL(&Request{Host: "h", Path: "/" + string(all) + "?" + string(all)})
	for i := 0; i < len(got); i++ {
		c := got[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`"<>\^`+"`{|}", c) >= 0 {
			t.Fatalf("byte %#x left unescaped in %q", c, got)
		}
	}
}

func TestLoginURL(t *testing.T) {
	r := &Request{Scheme: "https", Host: "app.example.com", Path: "/a b?x=1&access_token=t"}
	ret := url.QueryEscape("https://app.example.com/a%20b?x=1")
	tests := []struct {
		name   string
		login  Login
		req    *Request
		reauth bool
		want   string
	}{
		{"plain", Login{URL: loginURL, ReturnParam: "rd"}, r, false, loginURL + "?rd=" + ret},
		{"reauth", Login{URL: loginURL, ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"}, r, true, loginURL + "?rd=" + ret + "&max_age=0&prompt=login"},
		{"reauth not asked", Login{URL: loginURL, ReturnParam: "rd", ReauthQuery: "max_age=0&prompt=login"}, r, false, loginURL + "?rd=" + ret},
		{"reauth without params", Login{URL: loginURL, ReturnParam: "rd"}, r, true, loginURL + "?rd=" + ret},
		{"login URL with query", Login{URL: loginURL + "?client=x", ReturnParam: "return_to"}, r, false, loginURL + "?client=x&return_to=" + ret},
		{"no return param", Login{URL: loginURL, ReauthQuery: "prompt=login"}, r, true, loginURL + "?prompt=login"},
		{"no return param, login query", Login{URL: loginURL + "?a=b", ReauthQuery: "prompt=login"}, r, true, loginURL + "?a=b&prompt=login"},
		{"odd return param name", Login{URL: loginURL, ReturnParam: "a b&c"}, r, false, loginURL + "?a+b%26c=" + ret},
		{"bad host: no return URL", Login{URL: loginURL, ReturnParam: "rd", ReauthQuery: "prompt=login"}, &Request{Host: "evil@x", Path: "/"}, true, loginURL + "?prompt=login"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := LoginURL(&Policy{Login: tc.login}, tc.req, tc.reauth)
			if got != tc.want {
				t.Errorf("LoginURL\n got %q\nwant %q", got, tc.want)
			}
			if strings.ContainsAny(got, "\r\n ") {
				t.Errorf("raw blanks or line breaks in %q", got)
			}
		})
	}
}

func TestStripTokenParams(t *testing.T) {
	for q, want := range map[string]string{
		"":                                    "",
		"a=1":                                 "a=1",
		"access_token=x":                      "",
		"a=1&access_token=x":                  "a=1",
		"access_token=x&a=1":                  "a=1",
		"a=1&ACCESS_TOKEN=x&b=2":              "a=1&b=2",
		"a=1&access%5Ftoken=x":                "a=1",
		"a=1&access%5ftoken=x":                "a=1",
		"a=1&%69d_token=x":                    "a=1",
		"a=1&refresh_token":                   "a=1",
		"a=1;access_token=x&b=2":              "b=2",
		"a=%zz&b=access_token":                "a=%zz&b=access_token",
		"my_access_token=1":                   "my_access_token=1",
		"access_tokens=1":                     "access_tokens=1",
		"a=1&&b=2":                            "a=1&&b=2",
		"a=%41":                               "a=%41",
		"id_token=1&id_token=2&refresh_token": "",
	} {
		if got := stripTokenParams(q); got != want {
			t.Errorf("stripTokenParams(%q) = %q, want %q", q, got, want)
		}
	}
}

func TestReturnURLDropsJWTValuesAndMalformedHosts(t *testing.T) {
	r := &Request{Host: "app.example.com", Scheme: "https", Path: "/x?a=1&jwt=eyJhbGciOi.eyJzdWIi.c2ln&b=2"}
	if got, want := ReturnURL(r), "https://app.example.com/x?a=1&b=2"; got != want {
		t.Errorf("ReturnURL = %q, want %q", got, want)
	}
	for _, h := range []string{"app.example.com:evil.example", "app:443x", "app:80:evil", "[::1]evil", ":80", "[::1", "app:"} {
		if got := ReturnURL(&Request{Host: h, Path: "/"}); got != "" {
			t.Errorf("host %q: ReturnURL = %q, want none", h, got)
		}
	}
	for _, h := range []string{"app.example.com", "app.example.com:8443", "[::1]:8080", "127.0.0.1"} {
		if got := ReturnURL(&Request{Host: h, Path: "/"}); got == "" {
			t.Errorf("host %q: no return URL", h)
		}
	}
}

// S7: no token in a Location, also when the client carried it in the path
// (";" path parameters, a route segment) rather than in the query.
func TestReturnURLDropsJWTsInThePath(t *testing.T) {
	const jwt = "eyJhbGciOi.eyJzdWIi.c2ln"
	for path, want := range map[string]string{
		"/x;access_token=" + jwt + "?a=1": "https://app.example.com/?a=1",
		"/callback/" + jwt:                "https://app.example.com/",
		"/a;jwt=" + jwt + ";b=1/c":        "https://app.example.com/",
		"/eyJ/not.a.token":                "https://app.example.com/eyJ/not.a.token",
		"/x/eyJhbGciOi":                   "https://app.example.com/x/eyJhbGciOi",
		"/api/access_token/help":          "https://app.example.com/api/access_token/help",
		"/x;id_token=opaque":              "https://app.example.com/",
	} {
		if got := ReturnURL(&Request{Host: "app.example.com", Scheme: "https", Path: path}); got != want {
			t.Errorf("ReturnURL(%q) = %q, want %q", path, got, want)
		}
	}
}
