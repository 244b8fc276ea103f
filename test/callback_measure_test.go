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
	"testing"
	"time"
)

// TestMeasureCallbackLatency measures, against the local provider, how long
// the callback takes as a browser sees it (through the gRPC test proxy):
// the gate exchanges the code at the provider's token endpoint, validates
// the ID token and opens a session. It is a measurement for BENCHMARKS.md,
// not a test: it runs only with SESSIONGATE_MEASURE=1 (and
// SESSIONGATE_MEASURE_N sign-ins, default 200), and asserts nothing about
// time.
//
//	SESSIONGATE_MEASURE=1 go test ./test/ -run TestMeasureCallbackLatency -v
func TestMeasureCallbackLatency(t *testing.T) {
	if os.Getenv("SESSIONGATE_MEASURE") != "1" {
		t.Skip("a measurement: set SESSIONGATE_MEASURE=1")
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("SESSIONGATE_MEASURE_N")); err == nil && v > 0 {
		n = v
	}
	e := newSignInEnv(t, pathNamed("envoy"), signInOpts{})
	proxy := strings.TrimPrefix(e.base, "http://")
	_, port, _ := net.SplitHostPort(proxy)
	var took []time.Duration
	for i := 0; i < n; i++ {
		took = append(took, signInOnce(t, e, port))
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	t.Logf("callback latency over %d sign-ins, as the client sees it: p50 %s, p90 %s, p99 %s, max %s",
		n, q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond),
		q(0.99).Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond))
	m := e.gate.metrics(t)
	sum := metricValue(m, "sessiongate_sign_in_callback_duration_seconds_sum", map[string]string{})
	count := metricValue(m, "sessiongate_sign_in_callback_duration_seconds_count", map[string]string{})
	if count > 0 {
		t.Logf("inside the gate (sign_in_callback_duration_seconds): mean %s over %.0f callbacks",
			time.Duration(sum/count*float64(time.Second)).Round(10*time.Microsecond), count)
	}
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
