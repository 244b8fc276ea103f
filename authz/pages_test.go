package authz

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestErrorPage(t *testing.T) {
	browser := &Request{Headers: HeaderMap{"sec-fetch-mode": "navigate", "accept": "text/html"}}
	api := &Request{Headers: HeaderMap{"accept": "application/json"}}
	for _, reason := range []Reason{ReasonSignInFailed, ReasonSignInDenied, ReasonReauthNotPerformed,
		ReasonProviderUnavailable, ReasonStoreUnavailable, ReasonNoToken} {
		t.Run(reason.String(), func(t *testing.T) {
			body, ct := ErrorPage(browser, reason, "state unknown", "https://app.example.com/x?a=1&b=2")
			if ct != ContentTypeHTML {
				t.Errorf("browser content type %q", ct)
			}
			for _, want := range []string{"<title>", "Try again", `href="https://app.example.com/x?a=1&amp;b=2"`,
				"state unknown", reason.String()} {
				if !strings.Contains(body, want) {
					t.Errorf("HTML page lacks %q:\n%s", want, body)
				}
			}
			if strings.ContainsAny(body, "\r\n") {
				t.Errorf("HTML page is not one line")
			}

			body, ct = ErrorPage(api, reason, "state unknown", "/x")
			if ct != ContentTypeJSON {
				t.Errorf("API content type %q", ct)
			}
			var m map[string]string
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatalf("JSON page %q: %v", body, err)
			}
			if m["error"] != reason.String() || m["message"] == "" || m["detail"] != "state unknown" || m["retry"] != "/x" {
				t.Errorf("JSON page = %v", m)
			}
		})
	}
}

func TestErrorPageEscapes(t *testing.T) {
	browser := &Request{Headers: HeaderMap{"accept": "text/html"}}
	body, _ := ErrorPage(browser, ReasonSignInDenied, `<script>alert(1)</script>"'&`+"\r\nSet-Cookie: x=y", `/a"><script>`)
	for _, bad := range []string{"<script>", `"><script`, "\r", "\n"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q unescaped:\n%s", bad, body)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("detail not shown escaped:\n%s", body)
	}
}

func TestErrorPageRetryLink(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "/",
		"/":                         "/",
		"/dashboard?tab=1":          "/dashboard?tab=1",
		"https://app.example.com/x": "https://app.example.com/x",
		"http://app.localhost:8000": "http://app.localhost:8000",
		"javascript:alert(1)":       "/",
		"//evil.example.com/":       "/",
		"/\\evil.example.com":       "/",
		"https://u:p@evil.example/": "/",
		"ftp://files.example.com/":  "/",
		"/x\r\nLocation: y":         "/",
		"https:///nohost":           "/",
	} {
		body, _ := ErrorPage(nil, ReasonSignInFailed, "", in)
		var m map[string]string
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
		if m["retry"] != want {
			t.Errorf("retry %q → %q, want %q", in, m["retry"], want)
		}
	}
}

func TestErrorPageDetailBounded(t *testing.T) {
	body, _ := ErrorPage(nil, ReasonSignInFailed, strings.Repeat("é", 1000), "/")
	var m map[string]string
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if len(m["detail"]) > 310 || !strings.HasSuffix(m["detail"], "…") {
		t.Errorf("detail of %d bytes not bounded: %q", len(m["detail"]), m["detail"])
	}
}
