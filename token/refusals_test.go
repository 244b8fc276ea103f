package token

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

// TestRefusalsLoggedWithValues: a refused token is logged at the default
// level with what the policy expects and what the token carried, at most
// once per policy and kind of refusal per RefusalLogEvery (the next line
// counts those left out), and never with the token or its subject.
func TestRefusalsLoggedWithValues(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	cfg := baseConfig(e.writeJWKS(d))
	v, err := e.p.VerifierFor("crm", cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	longIss := strings.Repeat("i", 300)
	tests := []struct {
		name  string
		c     map[string]any
		level string
		want  []string
	}{
		{"wrong aud", claims(now, map[string]any{"aud": []string{"other", "more"}}), "WARN",
			[]string{`detail="wrong aud"`, `got_aud="[\"other\" \"more\"]"`, `want_aud="[crm crm-api]"`}},
		{"wrong iss", claims(now, map[string]any{"iss": longIss}), "WARN",
			[]string{`detail="wrong iss"`, `want_iss=` + testIssuer, strings.Repeat("i", maxLoggedValue) + `\"…`}},
		{"expired", claims(now, map[string]any{"exp": now.Add(-time.Hour).Unix()}), "INFO",
			[]string{`reason=token_expired`, `exp=` + now.Add(-time.Hour).UTC().Format(time.RFC3339), `now=` + now.UTC().Format(time.RFC3339), `clock_skew=30s`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := len(e.logs.String())
			tok := mint(t, d, tc.c)
			if _, err := verify(v, tok, now); err == nil {
				t.Fatal("verified")
			}
			line := e.logs.String()[mark:]
			for _, w := range append([]string{"level=" + tc.level, `msg="token refused"`, "policy=crm"}, tc.want...) {
				if !strings.Contains(line, w) {
					t.Errorf("log lacks %s:\n%s", w, line)
				}
			}
			if strings.Contains(line, tok[:20]) || strings.Contains(line, "alice") || strings.Contains(line, strings.Repeat("i", maxLoggedValue+1)) {
				t.Errorf("log repeats the token, its subject or an unbounded value:\n%s", line)
			}
			// The same refusal again at once is counted, not logged.
			if _, err := verify(v, mint(t, d, tc.c), now); err == nil {
				t.Fatal("verified")
			}
			if n := strings.Count(e.logs.String()[mark:], "token refused"); n != 1 {
				t.Errorf("%d lines for two refusals within %v, want 1", n, RefusalLogEvery)
			}
		})
	}
	// Past the interval: logged again, with the count of the ones left out.
	mark := len(e.logs.String())
	later := now.Add(RefusalLogEvery)
	if _, err := verify(v, mint(t, d, claims(later, map[string]any{"aud": "x"})), later); err == nil {
		t.Fatal("verified")
	}
	if line := e.logs.String()[mark:]; !strings.Contains(line, "not_logged_since_last=1") {
		t.Errorf("no count of the refusals left out:\n%s", line)
	}

	// An unknown key id names the key ids the set has.
	mark = len(e.logs.String())
	other := newIDP(t, idp.RS256)
	if _, err := verify(v, mint(t, other, claims(later, nil)), later); err == nil {
		t.Fatal("verified")
	}
	if line := e.logs.String()[mark:]; !strings.Contains(line, `detail="unknown key id"`) || !strings.Contains(line, "known_kids=["+d.KeyID()+"]") {
		t.Errorf("unknown kid log:\n%s", line)
	}
}

// TestNoKeysIsToldTruthfully: a jwks_uri that has never answered leaves the
// verifier with no keys (KeyCount 0, tokens refused "no keys loaded") and
// the log says so instead of keeping good keys it never had; once fetched,
// a later failure keeps the last good keys, and says that.
func TestNoKeysIsToldTruthfully(t *testing.T) {
	e := newEnv(t)
	a := newIDP(t, idp.RS256)
	srv := newJWKSServer(t, a.JWKS())
	srv.set(http.StatusServiceUnavailable, nil)
	v, err := e.p.VerifierFor("crm", urlConfig(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	kc := v.(KeyCounter)
	e.p.refreshDue(context.Background())
	if n := kc.KeyCount(); n != 0 {
		t.Fatalf("KeyCount = %d before any fetch succeeded", n)
	}
	_, err = verify(v, mint(t, a, claims(e.clock.Now(), nil)), e.clock.Now())
	wantErr(t, err, authz.ReasonInvalidToken, "no keys loaded")
	logs := e.logs.String()
	if strings.Contains(logs, "keeping the last good keys") || !strings.Contains(logs, "no keys were ever loaded from it") {
		t.Errorf("log does not say that there are no keys:\n%s", logs)
	}

	srv.set(http.StatusOK, a.JWKS())
	e.clock.Advance(time.Minute)
	e.p.refreshDue(context.Background())
	if n := kc.KeyCount(); n != 1 {
		t.Fatalf("KeyCount = %d after a successful fetch, want 1", n)
	}
	mark := len(e.logs.String())
	srv.set(http.StatusServiceUnavailable, nil)
	e.clock.Advance(10 * time.Minute)
	e.p.refreshDue(context.Background())
	if logs := e.logs.String()[mark:]; !strings.Contains(logs, "keeping the last good keys") {
		t.Errorf("refresh failure after a good fetch:\n%s", logs)
	}
	if n := kc.KeyCount(); n != 1 {
		t.Errorf("KeyCount = %d after a failed refresh, want the last good 1", n)
	}
}
