package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMeasureCallbackLatency measures, against the local provider, how long
// the callback takes as a browser sees it (through the gRPC test proxy):
// the gate exchanges the code at the provider's token endpoint, validates
// the ID token and opens a session. With SESSIONGATE_MEASURE_CONCURRENCY=K
// it is a sign-in storm: K browsers sign in at once, over and over, and it
// reports sign-ins and callbacks per second and where a callback's time
// goes (the provider's token endpoint against the rest, from the gate's own
// metrics). It is a measurement for BENCHMARKS.md, not a test: it runs only
// with SESSIONGATE_MEASURE=1 (and SESSIONGATE_MEASURE_N sign-ins, default
// 200), and asserts nothing about time.
//
//	SESSIONGATE_MEASURE=1 go test ./test/ -run TestMeasureCallbackLatency -v
//	SESSIONGATE_MEASURE=1 SESSIONGATE_MEASURE_CONCURRENCY=8 go test ./test/ -run TestMeasureCallbackLatency -v
func TestMeasureCallbackLatency(t *testing.T) {
	if os.Getenv("SESSIONGATE_MEASURE") != "1" {
		t.Skip("a measurement: set SESSIONGATE_MEASURE=1")
	}
	n, k := 200, 1
	if v, err := strconv.Atoi(os.Getenv("SESSIONGATE_MEASURE_N")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("SESSIONGATE_MEASURE_CONCURRENCY")); err == nil && v > 0 {
		k = v
	}
	e := newSignInEnv(t, pathNamed("envoy"), signInOpts{})
	proxy := strings.TrimPrefix(e.base, "http://")
	_, port, _ := net.SplitHostPort(proxy)
	signInOnce(t, e, port) // the provider's keys and the first client's setup, not measured
	before := e.gate.metrics(t)
	var (
		mu   sync.Mutex
		took []time.Duration
		wg   sync.WaitGroup
		next atomic.Int64
	)
	start := time.Now()
	for range k {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				d := signInOnce(t, e, port)
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if len(took) == 0 {
		t.Fatal("no sign-in completed")
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	t.Logf("%d sign-ins by %d browsers at once in %s: %.1f sign-ins/s (each: redirect, provider's form, callback)",
		len(took), k, wall.Round(time.Millisecond), float64(len(took))/wall.Seconds())
	t.Logf("callback latency as the client sees it: p50 %s, p90 %s, p99 %s, max %s",
		q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond),
		q(0.99).Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond))
	after := e.gate.metrics(t)
	delta := func(name string, labels map[string]string) float64 {
		return metricValue(after, name, labels) - metricValue(before, name, labels)
	}
	cbSum := delta("sessiongate_sign_in_callback_duration_seconds_sum", map[string]string{})
	cbCount := delta("sessiongate_sign_in_callback_duration_seconds_count", map[string]string{})
	code := map[string]string{"grant": "authorization_code", "result": "success"}
	tokSum := delta("sessiongate_oidc_token_request_duration_seconds_sum", code)
	tokCount := delta("sessiongate_oidc_token_request_duration_seconds_count", code)
	if cbCount > 0 && tokCount > 0 {
		ms := func(sec float64) string { return fmt.Sprintf("%.2f ms", sec*1000) }
		t.Logf("inside the gate, mean per callback over %.0f: %s in all, of which %s at the provider's token endpoint "+
			"(code exchange) and %s the gate's own (transaction, one-time claim, ID-token validation, session begun, sealing)",
			cbCount, ms(cbSum/cbCount), ms(tokSum/tokCount), ms(cbSum/cbCount-tokSum/tokCount))
	}
	t.Logf("sessions started: %.0f", delta("sessiongate_sessions_started_total", map[string]string{"policy": "app"}))
}

var formAction = regexp.MustCompile(`<form id="login" method="post" action="([^"]+)"`)

// signInOnce signs in as a new browser would, without one: a client with a
// cookie jar follows the redirects, posts the provider's login form, and
// times the callback request alone.
func signInOnce(t *testing.T, e *signInEnv, port string) time.Duration {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, p, _ := net.SplitHostPort(addr)
		if strings.HasSuffix(host, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", p)
		}
		return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, u string, form url.Values) (*http.Response, string) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/html")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}
	next := func(res *http.Response) string {
		loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
		if err != nil || res.Header.Get("Location") == "" {
			t.Fatalf("%s %s: %s without a Location", res.Request.Method, res.Request.URL, res.Status)
		}
		return loc.String()
	}
	u := e.url("/dashboard")
	for hop := 0; hop < 12; hop++ {
		if strings.HasPrefix(u, e.url(opCallbackPath)) {
			start := time.Now()
			res, _ := do("GET", u, nil)
			d := time.Since(start)
			if res.StatusCode != http.StatusFound && res.StatusCode != http.StatusOK {
				t.Fatalf("callback: %s", res.Status)
			}
			return d
		}
		res, body := do("GET", u, nil)
		switch {
		case res.StatusCode >= 300 && res.StatusCode < 400:
			u = next(res)
		case res.StatusCode == 200 && formAction.MatchString(body):
			action, _ := res.Request.URL.Parse(formAction.FindStringSubmatch(body)[1])
			res, _ = do("POST", action.String(), url.Values{"username": {"alice"}, "password": {opPassword}})
			u = next(res)
		default:
			t.Fatalf("GET %s: %s\n%.300s", u, res.Status, body)
		}
	}
	t.Fatal(fmt.Sprintf("no callback after 12 hops (last %s)", u))
	return 0
}
