package authz

import (
	"encoding/json"
	"html"
	"net/url"
	"strconv"
	"strings"
)

// Content types of the pages ErrorPage builds.
const (
	ContentTypeHTML = "text/html; charset=utf-8"
	ContentTypeJSON = "application/json"
)

// pageText is what a person is told about a denial that has a page.
type pageText struct{ title, message string }

var pageTexts = map[Reason]pageText{
	ReasonSignInFailed: {"Sign-in could not be completed",
		"The answer from your identity provider could not be used: the sign-in link may have been opened twice, in another browser, or more than ten minutes after it was started."},
	ReasonSignInDenied: {"Sign-in was refused",
		"Your identity provider did not sign you in."},
	ReasonReauthNotPerformed: {"Please sign in with your credentials",
		"Your session had ended, but your identity provider signed you in again without asking for your credentials. Sign in again; if this page comes back, your identity provider ignores requests to re-authenticate: tell your administrator."},
	ReasonProviderUnavailable: {"Sign-in is unavailable",
		"Your identity provider cannot be reached right now. Try again in a moment."},
	ReasonStoreUnavailable: {"Service unavailable",
		"Your session cannot be checked right now. Try again in a moment."},
}

// ErrorPage builds the page of a denial that is not a redirect (a refused
// sign-in callback, the provider's error=…, re-authentication not performed,
// the provider unreachable): a small HTML page for a browser (r.IsBrowser)
// saying what happened, with a link to try again, or a JSON object for other
// clients. It returns the body and its content type, for Decision.Body and
// Decision.ContentType; adapters add Cache-Control: no-store.
//
// detail is shown as it is, escaped: it must be safe to show (a
// SignInError's Detail never holds a code, token, state or cookie value).
// retryURL is where "try again" leads; anything but a path on the request's
// own host or an http(s) URL is replaced by "/". The page is one line, with
// no control characters, so that an adapter may carry it in a header (nginx).
func ErrorPage(r *Request, reason Reason, detail, retryURL string) (body, contentType string) {
	text, ok := pageTexts[reason]
	if !ok {
		text = pageText{"Access denied", "You cannot reach this page."}
	}
	detail = oneLine(detail)
	retryURL = safeRetry(retryURL)
	if r == nil || !r.IsBrowser() {
		b, _ := json.Marshal(struct {
			Error   string `json:"error"`
			Message string `json:"message"`
			Detail  string `json:"detail,omitempty"`
			Retry   string `json:"retry"`
		}{reason.String(), text.message, detail, retryURL})
		return string(b), ContentTypeJSON
	}
	var b strings.Builder
	b.Grow(1024)
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8">` +
		`<meta name="viewport" content="width=device-width, initial-scale=1">` +
		`<meta name="referrer" content="no-referrer"><title>`)
	b.WriteString(html.EscapeString(text.title))
	b.WriteString(`</title><style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;line-height:1.5}` +
		`a.retry{display:inline-block;margin-top:1em;padding:.5em 1em;border:1px solid;border-radius:4px;text-decoration:none}` +
		`small{color:#666}</style></head><body><h1>`)
	b.WriteString(html.EscapeString(text.title))
	b.WriteString(`</h1><p>`)
	b.WriteString(html.EscapeString(text.message))
	b.WriteString(`</p>`)
	if detail != "" {
		b.WriteString(`<p><small>`)
		b.WriteString(html.EscapeString(detail))
		b.WriteString(`</small></p>`)
	}
	b.WriteString(`<p><a class="retry" href="`)
	b.WriteString(html.EscapeString(retryURL))
	b.WriteString(`">Try again</a></p><p><small>Reason: `)
	b.WriteString(html.EscapeString(reason.String()))
	b.WriteString(` (HTTP `)
	b.WriteString(strconv.Itoa(reason.HTTPStatus()))
	b.WriteString(`)</small></p></body></html>`)
	return b.String(), ContentTypeHTML
}

// safeRetry keeps a retry link that is a path ("/x?y") or an absolute
// http(s) URL; anything else (javascript:, a network-path reference
// "//evil", control characters) becomes "/".
func safeRetry(u string) string {
	if u == "" || strings.ContainsFunc(u, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return "/"
	}
	if strings.HasPrefix(u, "/") {
		if strings.HasPrefix(u, "//") {
			return "/"
		}
		return u
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil {
		return "/"
	}
	return u
}

// oneLine replaces control characters with spaces and bounds the length.
func oneLine(s string) string {
	const max = 300
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, strings.ToValidUTF8(s, "�"))
}
