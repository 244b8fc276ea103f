package policy

import (
	"testing"

	"github.com/sessiongate/sessiongate/authz"
)

func TestMatch(t *testing.T) {
	set, err := LoadDir("testdata/valid", Options{})
	if err != nil {
		t.Fatal(err)
	}
	noDefault, err := LoadFiles([]string{"testdata/valid/app.yaml", "testdata/valid/wild.yaml"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host      string
		want      string // policy name in the full set
		noDefault string // in the set without a "*" policy
	}{
		{"app.example.com", "app", "app"},
		{"APP.Example.COM", "app", "app"},
		{"app.example.com:8443", "app", "app"},
		{"App.Example.Com:443", "app", "app"},
		{"app.example.com.", "app", "app"},
		{"app.example.com.:8080", "app", "app"},
		{"www.example.com", "app", "app"}, // written "www.example.com." in the policy
		{"localhost:3000", "app", "app"},
		{"127.0.0.1", "app", "app"},
		{"127.0.0.1:8080", "app", "app"},
		{"[::1]:8080", "app", "app"},
		{"[::1]", "app", "app"},
		{"a.example.com", "wild", "wild"},
		{"a.b.c.example.com", "wild", "wild"},
		{"b.example.com", "deep", "wild"},     // exact beats a wildcard
		{"x.b.example.com", "deep", "wild"},   // the longest wildcard wins
		{"x.y.b.example.com", "deep", "wild"}, // at any depth
		{"example.com", "default", ""},        // "*.example.com" excludes example.com
		{"notexample.com", "default", ""},
		{"example.org", "default", ""},
		{"[::2]:443", "default", ""},
		// Not a plain host[:port] (authz.ParseAuthority): no policy, not
		// even the default, where a lax parse picked a prefix's policy.
		{"", "", ""},
		{"::1", "", ""},
		{"app.example.com:80@evil.example.com", "", ""},
		{"app.example.com:abc", "", ""},
		{"app.example.com:", "", ""},
		{"app.example.com:65536", "", ""},
		{"app.example.com\r\nx: 1", "", ""},
		{"app.example.com evil", "", ""},
		{"app.example.com,evil.example.com", "", ""},
		{".example.com", "", ""},
		{"a..example.com", "", ""},
		{"[::1%25eth0]:80", "", ""},
		{"[app.example.com]", "", ""},
	}
	for _, tt := range tests {
		if got := name(set.Match(tt.host)); got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.host, got, tt.want)
		}
		if got := name(noDefault.Match(tt.host)); got != tt.noDefault {
			t.Errorf("without default: Match(%q) = %q, want %q", tt.host, got, tt.noDefault)
		}
	}
	var nilSet *Set
	if p := nilSet.Match("app.example.com"); p != nil {
		t.Errorf("nil Set matched %q", p.Name)
	}
}

func name(p *authz.Policy) string {
	if p == nil {
		return ""
	}
	return p.Name
}

func TestMatchDoesNotAllocate(t *testing.T) {
	set, err := LoadDir("testdata/valid", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"app.example.com", "app.example.com:8443", "[::1]:8080", "x.b.example.com", "unknown.test"} {
		if n := testing.AllocsPerRun(100, func() { set.Match(host) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times", host, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	set, err := LoadDir("testdata/valid", Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, host := range []string{"app.example.com", "app.example.com:8443", "x.y.b.example.com", "unknown.test", "App.Example.COM"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.Match(host)
			}
		})
	}
}
