package ends_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/ends"
)

// FuzzBackChannel: whatever arrives at the endpoint, it answers without
// panicking, never caches, and says 200 only for a form carrying one
// logout token that the policy's verifier accepts.
func FuzzBackChannel(f *testing.F) {
	fx := newFixture(f, newMemory(f))
	valid := fx.mint(nil, fx.claims())
	f.Add(form(valid), formType)
	f.Add(form(valid)+"&logout_token=x", formType)
	f.Add("logout_token=%zz", formType)
	f.Add(form(strings.Replace(valid, ".", "..", 1)), "application/x-www-form-urlencoded; charset=utf-8")
	f.Add("logout_token=e30.e30.", "multipart/form-data; boundary=x")
	f.Fuzz(func(t *testing.T, body, ctype string) {
		r := httptest.NewRequest(http.MethodPost, ends.BackChannelPath, strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Fatal("cacheable answer")
		}
		switch w.Code {
		case http.StatusOK:
			v, err := url.ParseQuery(body)
			if err != nil || len(v["logout_token"]) != 1 {
				t.Fatalf("200 for a body that is not one logout_token: %q", body)
			}
			if _, err := fx.policies[0].BackChannel.Verifier.VerifyLogout(ctx, v["logout_token"][0], time.Now()); err != nil {
				t.Fatalf("200 for a token the verifier refuses (%v)", err)
			}
		case http.StatusBadRequest:
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}
