package test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// A real browser for the sign-in tests: Debian's chromium, headless, driven
// over the DevTools protocol (chromedp), with a fresh profile per test.
//
// The applications live on http://NAME.localhost:PORT. Chromium resolves
// every *.localhost name to loopback and treats such origins as potentially
// trustworthy, so it keeps Secure and __Host- cookies on them over plain
// HTTP, as it would on https (TestBrowserKeepsHostCookiesOnLocalhost).

// browserTimeout bounds each browser step (a navigation, a wait).
const browserTimeout = 45 * time.Second

// chromiumPath finds the browser, or skips (fails when CI requires it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return requireBinary(t, "chromium", "chromium")
}

// browser is one Chromium process with its own profile: tabs share its
// cookies, as tabs of one browser do.
type browser struct {
	ctx context.Context // the first tab
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,PasswordLeakDetection"),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("metrics-recording-only", true),
		// *.sessiongate.test names reach loopback too, as an origin the
		// browser does not trust (plain http, not localhost).
		chromedp.Flag("host-resolver-rules", "MAP *.sessiongate.test 127.0.0.1"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {}))
	// Start the browser now, bounded, so a broken install fails here.
	// The first call starts the browser and must not carry a timeout (it
	// would stop the browser); the process wait is bounded by the test.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return &browser{ctx: ctx}
}

// tab is one browser tab; it records the document responses it gets.
type tab struct {
	ctx context.Context

	mu        sync.Mutex
	responses []docResponse
	requests  []string // URLs of top-level navigations, redirects included
	paused    chan fetch.RequestID
}

// docResponse is one top-level document response the tab received.
type docResponse struct {
	URL    string
	Status int
}

// firstTab is the browser's first tab.
func (b *browser) firstTab(t *testing.T) *tab {
	t.Helper()
	return newTab(t, b.ctx)
}

// newTab opens another tab of the same browser.
func (b *browser) newTab(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	return newTab(t, ctx)
}

func newTab(t *testing.T, ctx context.Context) *tab {
	t.Helper()
	tb := &tab{ctx: ctx}
	tb.paused = make(chan fetch.RequestID, 16)
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *network.EventResponseReceived:
			if e.Type == network.ResourceTypeDocument {
				tb.mu.Lock()
				tb.responses = append(tb.responses, docResponse{URL: e.Response.URL, Status: int(e.Response.Status)})
				tb.mu.Unlock()
			}
		case *network.EventRequestWillBeSent:
			if e.Type == network.ResourceTypeDocument {
				tb.mu.Lock()
				tb.requests = append(tb.requests, e.Request.URL)
				tb.mu.Unlock()
			}
		case *fetch.EventRequestPaused:
			select {
			case tb.paused <- e.RequestID:
			default:
			}
		}
	})
	if err == nil {
		_, err = chromedp.Call(ctx, network.Enable, network.EnableParams{})
	}
	if err != nil {
		t.Fatalf("tab: %v", err)
	}
	return tb
}

// run runs actions with the step timeout.
func (tb *tab) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v (at %s)\n%s", what, err, tb.location(), tb.lastResponses())
	}
}

// navigate opens u as if typed into the address bar and waits for the page
// (after any redirects) to load.
func (tb *tab) navigate(t *testing.T, u string) {
	t.Helper()
	tb.run(t, "navigate to "+u, chromedp.Navigate(u))
}

// location is the current URL ("" when unknown).
func (tb *tab) location() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	u, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	return u
}

// text is the visible text of the page.
func (tb *tab) text(t *testing.T) string {
	t.Helper()
	return evaluate[string](t, tb, "read the page", `document.body ? document.body.innerText : ""`)
}

// waitText waits for the page to contain s and returns its text.
func waitText(t *testing.T, tb *tab, s string) string {
	t.Helper()
	var text string
	deadline := time.Now().Add(browserTimeout)
	for {
		text = tb.text(t)
		if strings.Contains(text, s) {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("page at %s does not say %q:\n%s\n%s", tb.location(), s, tr(text, 600), tb.lastResponses())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitURL waits until the location satisfies ok.
func (tb *tab) waitURL(t *testing.T, what string, ok func(*url.URL) bool) *url.URL {
	t.Helper()
	deadline := time.Now().Add(browserTimeout)
	for {
		loc := tb.location()
		if u, err := url.Parse(loc); err == nil && loc != "" && ok(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("browser: waiting for %s: still at %s\n%s", what, loc, tb.lastResponses())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitVisible waits for an element.
func (tb *tab) waitVisible(t *testing.T, sel string) {
	t.Helper()
	tb.run(t, "wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// has reports whether an element is on the page now.
func (tb *tab) has(t *testing.T, sel string) bool {
	t.Helper()
	return evaluate[bool](t, tb, "look for "+sel, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// status is the status of the last document response for a URL starting
// with prefix (0 if none).
func (tb *tab) status(prefix string) int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for i := len(tb.responses) - 1; i >= 0; i-- {
		if strings.HasPrefix(tb.responses[i].URL, prefix) {
			return tb.responses[i].Status
		}
	}
	return 0
}

// navigations returns the URLs of the top-level requests so far (redirect
// hops included) and forgets them.
func (tb *tab) navigations() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	out := tb.requests
	tb.requests = nil
	return out
}

// pauseRequests holds every request whose URL matches pattern ("*" is a
// wildcard) until resume; nextPaused waits for one.
func (tb *tab) pauseRequests(t *testing.T, pattern string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{
		Patterns: []*fetch.RequestPattern{{URLPattern: pattern, RequestStage: fetch.RequestStageRequest}}}); err != nil {
		t.Fatalf("browser: pause requests: %v", err)
	}
}

func (tb *tab) nextPaused(t *testing.T) fetch.RequestID {
	t.Helper()
	select {
	case id := <-tb.paused:
		return id
	case <-time.After(browserTimeout):
		t.Fatalf("browser: no request paused\n%s", tb.lastResponses())
		return ""
	}
}

// resume lets a paused request go on and stops pausing.
func (tb *tab) resume(t *testing.T, id fetch.RequestID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id}); err != nil {
		t.Fatalf("browser: resume: %v", err)
	}
	if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatalf("browser: stop pausing: %v", err)
	}
}

func (tb *tab) lastResponses() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b strings.Builder
	b.WriteString("document responses:")
	from := max(0, len(tb.responses)-12)
	for _, r := range tb.responses[from:] {
		fmt.Fprintf(&b, "\n  %d %s", r.Status, tr(r.URL, 160))
	}
	return b.String()
}

func tr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// cookies are the browser's cookies for u (name → value).
func (tb *tab) cookies(t *testing.T, u string) map[string]*network.Cookie {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
	if err != nil {
		t.Fatalf("browser: read cookies: %v", err)
	}
	out := map[string]*network.Cookie{}
	for _, c := range res.Cookies {
		out[c.Name] = c
	}
	return out
}

// setCookie puts a cookie back into the browser (an old cookie replayed).
func (tb *tab) setCookie(t *testing.T, u string, c *network.Cookie) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	secure, httpOnly := c.Secure, c.HTTPOnly
	if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: c.Name, Value: c.Value, URL: u,
		Path: c.Path, Secure: &secure, HTTPOnly: &httpOnly, SameSite: c.SameSite}); err != nil {
		t.Fatalf("browser: set cookie %s: %v", c.Name, err)
	}
}

// evaluate runs a JavaScript expression in the page.
func evaluate[T any](t *testing.T, tb *tab, what, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: %s: %v (at %s)", what, err, tb.location())
	}
	return v
}

// backTo is the back button, pressed until the tab shows u again: it goes
// to the latest history entry before the current one with that URL. It does
// not wait for a page to load (the caller waits for what must show): a
// history navigation that the gate redirects away does not always end with
// the load event chromedp's own history action waits for.
func (tb *tab) backTo(t *testing.T, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	h, err := chromedp.Run(ctx, chromedp.NavigationEntries())
	if err != nil {
		t.Fatalf("browser: history: %v", err)
	}
	for i := int(h.CurrentIndex) - 1; i >= 0; i-- {
		if h.Entries[i].URL == u {
			id := h.Entries[i].ID
			tb.run(t, "go back to "+u, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, page.NavigateToHistoryEntry, page.NavigateToHistoryEntryParams{EntryID: id})
				return err
			}))
			return
		}
	}
	t.Fatalf("browser: %s is not in the history", u)
}

// signIn types credentials into the provider's login form, which must be
// on the page now, and submits it.
func (tb *tab) signIn(t *testing.T, user, password string) {
	t.Helper()
	tb.waitVisible(t, "#username")
	// A person takes more than a second to type a password, and the
	// provider's auth_time has whole seconds: a sign-in typed within the
	// second of a session's end would not count as after it (S14).
	time.Sleep(1100 * time.Millisecond)
	evaluate[bool](t, tb, "clear the form", `(() => { for (const id of ["username", "password"]) document.getElementById(id).value = ""; return true })()`)
	tb.run(t, "sign in as "+user,
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#submit")),
	)
}

// TestBrowserKeepsHostCookiesOnLocalhost: the premise of the browser tests.
// A __Host- cookie (Secure) set over plain http on NAME.localhost is kept and
// sent back; the same cookie from an http origin that is not loopback is
// refused, so the check can fail.
func TestBrowserKeepsHostCookiesOnLocalhost(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/set" {
			w.Header().Add("Set-Cookie", "__Host-probe=v1; Path=/; Secure; HttpOnly; SameSite=Lax")
		}
		c, err := r.Cookie("__Host-probe")
		v := "none"
		if err == nil {
			v = c.Value
		}
		fmt.Fprintf(w, "<!doctype html><p id=v>%s</p>", v)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := strings.Cut(srv.Listener.Addr().String(), ":")
	b := newBrowser(t)
	tb := b.firstTab(t)
	for _, c := range []struct{ host, want string }{{"probe.localhost", "v1"}, {"probe.sessiongate.test", "none"}} {
		base := "http://" + c.host + ":" + port
		tb.navigate(t, base+"/set")
		tb.navigate(t, base+"/get")
		if got := strings.TrimSpace(tb.text(t)); got != c.want {
			t.Errorf("%s: cookie sent back = %q, want %q", c.host, got, c.want)
		}
	}
	if os.Getenv("SESSIONGATE_TEST_VERBOSE") != "" {
		t.Log(tb.lastResponses())
	}
}
