package token

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/internal/idp"
)

func TestVerifyValid(t *testing.T) {
	for _, alg := range []string{idp.RS256, idp.ES256, idp.EdDSA} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t)
			d := newIDP(t, alg)
			v := e.verifier(baseConfig(e.writeJWKS(d)))
			now := e.clock.Now()
			c, err := verify(v, mint(t, d, claims(now, nil)), now)
			if err != nil {
				t.Fatal(err)
			}
			want := authz.Claims{
				Issuer: testIssuer, Subject: "alice", SID: "s-1", Audience: []string{"crm"},
				IssuedAt: now.UnixMilli(), NotBefore: now.UnixMilli(),
				AuthTime: now.Add(-time.Minute).UnixMilli(), Expiry: now.Add(time.Hour).UnixMilli(),
				Bind:     []string{"tenant-1"},
				Identity: authz.IdentityDigest(testIssuer, "alice", []string{"tenant-1"}),
				Scope:    authz.ScopeDigest(testIssuer, "alice", "s-1"),
			}
			if got, _ := json.Marshal(c); string(got) != string(must(json.Marshal(want))) {
				t.Fatalf("claims\n got %s\nwant %s", got, must(json.Marshal(want)))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestVerifyRejects(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	v := e.verifier(baseConfig(e.writeJWKS(d)))
	now := e.clock.Now()
	good := mint(t, d, claims(now, nil))
	mintOr := func(tok string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	deep := func(n int) string {
		return strings.Repeat("[", n) + strings.Repeat("]", n)
	}
	b64 := base64.RawURLEncoding.EncodeToString

	tests := []struct {
		name   string
		token  string
		reason authz.Reason
		detail string
	}{
		{"alg none", mintOr(d.MintNone(claims(now, nil))), authz.ReasonInvalidToken, "algorithm not allowed"},
		{"HS256 keyed with the public key", mintOr(d.MintHS256WithPublicKey(claims(now, nil))), authz.ReasonInvalidToken, "algorithm not allowed"},
		{"forged key with the same kid", mintOr(d.MintForged(claims(now, nil))), authz.ReasonInvalidToken, "bad signature"},
		{"tampered payload", mintOr(idp.Tamper(good, claims(now, map[string]any{"sub": "mallory"}))), authz.ReasonInvalidToken, "bad signature"},
		{"alg of another key type", mintOr(d.MintWith(map[string]any{"alg": "ES256"}, claims(now, nil))), authz.ReasonInvalidToken, "key does not match algorithm"},
		{"PS256 header over an RS256 key", mintOr(d.MintWith(map[string]any{"alg": "PS256"}, claims(now, nil))), authz.ReasonInvalidToken, "key does not match algorithm"},
		{"expired", mint(t, d, claims(now, map[string]any{"exp": now.Add(-31 * time.Second).Unix()})), authz.ReasonTokenExpired, "token expired"},
		{"not yet valid", mint(t, d, claims(now, map[string]any{"nbf": now.Add(time.Minute).Unix()})), authz.ReasonInvalidToken, "not yet valid"},
		{"iat in the future", mint(t, d, claims(now, map[string]any{"iat": now.Add(time.Minute).Unix()})), authz.ReasonInvalidToken, "iat in the future"},
		// auth_time after now: a sign-in that has not happened would beat
		// every session end (S3) and push the absolute lifetime (S1) out.
		{"auth_time in the future", mint(t, d, claims(now, map[string]any{"auth_time": now.Add(time.Hour).Unix()})), authz.ReasonInvalidToken, "auth_time in the future"},
		{"auth_time beyond the clock skew", mint(t, d, claims(now, map[string]any{"auth_time": now.Add(31 * time.Second).Unix()})), authz.ReasonInvalidToken, "auth_time in the future"},
		// S3: ends are kept for max_lifetime; no token may outlive them.
		{"lifetime over max_lifetime", mint(t, d, claims(now, map[string]any{"exp": now.Add(24*time.Hour + time.Second).Unix()})), authz.ReasonInvalidToken, "lifetime (exp - iat) over the policy's max_lifetime"},
		{"neither iat nor auth_time", mint(t, d, claims(now, map[string]any{"iat": nil, "auth_time": nil})), authz.ReasonInvalidToken, "missing iat"},
		{"wrong aud", mint(t, d, claims(now, map[string]any{"aud": "billing"})), authz.ReasonInvalidToken, "wrong aud"},
		{"wrong aud array", mint(t, d, claims(now, map[string]any{"aud": []string{"a", "b"}})), authz.ReasonInvalidToken, "wrong aud"},
		{"no aud", mint(t, d, claims(now, map[string]any{"aud": nil})), authz.ReasonInvalidToken, "missing aud"},
		{"aud not a string", mint(t, d, claims(now, map[string]any{"aud": 7})), authz.ReasonInvalidToken, ""},
		{"wrong iss", mint(t, d, claims(now, map[string]any{"iss": "https://evil.example.com"})), authz.ReasonInvalidToken, "wrong iss"},
		{"no exp", mint(t, d, claims(now, map[string]any{"exp": nil})), authz.ReasonInvalidToken, "missing exp"},
		{"exp a string", mint(t, d, claims(now, map[string]any{"exp": "tomorrow"})), authz.ReasonInvalidToken, "claim exp is not a number"},
		{"exp out of range", mint(t, d, claims(now, map[string]any{"exp": 1e300})), authz.ReasonInvalidToken, "claim exp out of range"},
		{"no sub", mint(t, d, claims(now, map[string]any{"sub": nil})), authz.ReasonInvalidToken, "missing sub"},
		{"sub a number", mint(t, d, claims(now, map[string]any{"sub": 42})), authz.ReasonInvalidToken, "claim sub is not a string"},
		{"unknown kid", mintOr(d.MintWith(map[string]any{"kid": "nope"}, claims(now, nil))), authz.ReasonInvalidToken, "unknown key id"},
		{"payload not an object", mintOr(d.MintRaw([]byte(`["x"]`))), authz.ReasonInvalidToken, "claims are not a JSON object"},
		{"payload not JSON", mintOr(d.MintRaw([]byte(`{"sub":`))), authz.ReasonInvalidToken, "claims are not a JSON object"},
		{"deeply nested payload", mintOr(d.MintRaw([]byte(deep(5000)))), authz.ReasonInvalidToken, "claims are not a JSON object"},
		{"100 KB token", good + strings.Repeat("A", 100<<10), authz.ReasonInvalidToken, "token too large"},
		{"empty", "", authz.ReasonInvalidToken, "not a compact JWS"},
		{"garbage", "not a token", authz.ReasonInvalidToken, "not a compact JWS"},
		{"two parts", "a.b", authz.ReasonInvalidToken, "not a compact JWS"},
		{"four parts", good + ".x", authz.ReasonInvalidToken, "not a compact JWS"},
		{"dots only", "..", authz.ReasonInvalidToken, "algorithm not allowed"},
		{"bad base64", "%%%.%%%.%%%", authz.ReasonInvalidToken, "malformed JWS"},
		{"header not JSON", b64([]byte("{")) + ".e30.AAAA", authz.ReasonInvalidToken, "malformed JWS"},
		{"JWS JSON serialization", `{"payload":"e30","signatures":[]}`, authz.ReasonInvalidToken, "not a compact JWS"},
		{"bad signature encoding", good[:strings.LastIndexByte(good, '.')] + ".!!", authz.ReasonInvalidToken, "malformed JWS"},
		{"empty signature", good[:strings.LastIndexByte(good, '.')+1], authz.ReasonInvalidToken, "bad signature"},
		// The same signed bytes spelled differently (unused low bits of a
		// segment's last character set): each spelling would miss the cache
		// and cost a signature check.
		{"non-canonical signature spelling", respell(good, 2), authz.ReasonInvalidToken, "non-canonical base64url"},
		{"line breaks inside a segment", good[:10] + "\n\r\n" + good[10:], authz.ReasonInvalidToken, "malformed JWS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := verify(v, tt.token, now)
			if c != nil {
				t.Fatalf("accepted: %+v", c)
			}
			wantErr(t, err, tt.reason, tt.detail)
			if strings.Contains(err.Error(), tt.token) && tt.token != "" {
				t.Fatal("error contains the token")
			}
		})
	}
	if n := e.obs.hits.Load(); n != 0 {
		t.Fatalf("a rejected token was served from the cache (%d hits)", n)
	}
}

func TestVerifyClaimShapes(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.ES256)
	cfg := baseConfig(e.writeJWKS(d))
	cfg.BindClaims = []string{"tid", "num", "obj", "flag", "absent", "null"}
	v := e.verifier(cfg)
	now := e.clock.Now()
	sec := float64(now.Unix())
	c, err := verify(v, mint(t, d, claims(now, map[string]any{
		"aud":       []string{"other", "crm-api"},
		"exp":       sec + 3600.25, // NumericDate may carry a fraction
		"iat":       1.8935534455e9,
		"nbf":       0, // some IdPs send 0
		"auth_time": nil,
		"sid":       nil,
		"num":       12.50,
		"obj":       map[string]any{"b": []int{1, 2}, "a": "x"},
		"flag":      true,
		"null":      nil,
	})), now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Expiry != now.UnixMilli()+3600250 || c.IssuedAt != 1893553445500 || c.NotBefore != 0 || c.AuthTime != 0 {
		t.Fatalf("times: exp %d iat %d nbf %d auth_time %d", c.Expiry, c.IssuedAt, c.NotBefore, c.AuthTime)
	}
	if c.SignIn() != c.IssuedAt {
		t.Fatalf("SignIn = %d, want iat", c.SignIn())
	}
	// Strings as they are; every other type, null and absence tagged with a
	// byte no JSON string holds.
	wantBind := []string{"tenant-1", "\xff12.5", "\xff" + `{"a":"x","b":[1,2]}`, "\xfftrue", "\xff", "\xff"}
	if strings.Join(c.Bind, "|") != strings.Join(wantBind, "|") {
		t.Fatalf("Bind = %q, want %q", c.Bind, wantBind)
	}
	if c.Scope != authz.ScopeDigest(testIssuer, "alice", "") {
		t.Fatal("without sid the scope is the user")
	}
	if len(c.Audience) != 2 {
		t.Fatalf("Audience = %q", c.Audience)
	}
}

func TestVerifyWithoutKid(t *testing.T) {
	e := newEnv(t)
	rsa, ec := newIDP(t, idp.RS256), newIDP(t, idp.ES256)
	v := e.verifier(baseConfig(e.writeJWKS(ec, rsa)))
	now := e.clock.Now()
	for _, d := range []*idp.IDP{rsa, ec} {
		tok, err := d.MintWith(map[string]any{"kid": nil}, claims(now, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify(v, tok, now); err != nil {
			t.Fatalf("%s without kid: %v", d.Alg(), err)
		}
	}
	tok, err := newIDP(t, idp.EdDSA).MintWith(map[string]any{"kid": nil}, claims(now, nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify(v, tok, now)
	wantErr(t, err, authz.ReasonInvalidToken, "no key for algorithm")
}

func TestAlgorithmAllowList(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	cfg := baseConfig(e.writeJWKS(d))
	cfg.Algorithms = []string{"ES256"}
	v := e.verifier(cfg)
	now := e.clock.Now()
	_, err := verify(v, mint(t, d, claims(now, nil)), now)
	wantErr(t, err, authz.ReasonInvalidToken, "algorithm not allowed")
}

// A JWK that names its algorithm restricts the key to it.
func TestKeyAlgRestricts(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.RS256)
	v := e.verifier(baseConfig(e.writeJWKS(d))) // the JWKS says "alg": "RS256"
	now := e.clock.Now()
	tok, err := d.MintWith(map[string]any{"alg": "RS512"}, claims(now, nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify(v, tok, now)
	wantErr(t, err, authz.ReasonInvalidToken, "key does not match algorithm")
}

func TestDeepNestingInsideClaims(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.EdDSA)
	cfg := baseConfig(e.writeJWKS(d))
	now := e.clock.Now()
	c, _ := json.Marshal(claims(now, nil))
	nest := func(n int) []byte {
		return []byte(`{"deep":` + strings.Repeat("[", n) + strings.Repeat("]", n) + "," + string(c[1:]))
	}
	// Within the size limit the nesting is harmless and the token is good.
	ok, err := d.MintRaw(nest(5000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(e.verifier(cfg), ok, now); err != nil {
		t.Fatal(err)
	}
	// Past the JSON decoder's depth limit it is refused, not a crash.
	cfg.MaxBytes = 1 << 20
	bad, err := d.MintRaw(nest(200_000))
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify(e.verifier(cfg), bad, now)
	wantErr(t, err, authz.ReasonInvalidToken, "claims are not a JSON object")
}

// respell sets the lowest unused bit of the last character of segment i of
// a compact token: the segment still decodes to the same bytes. It panics if
// the segment has no unused bits (its length is a multiple of 4).
func respell(tok string, i int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	segs := strings.Split(tok, ".")
	seg := segs[i]
	if r := len(seg) % 4; r != 2 && r != 3 {
		panic(fmt.Sprintf("segment %d of length %d has no unused bits", i, len(seg)))
	}
	v := strings.IndexByte(alphabet, seg[len(seg)-1])
	segs[i] = seg[:len(seg)-1] + string(alphabet[v|1])
	return strings.Join(segs, ".")
}

// TestBindClaimsCompareTypeAndValue: tokens whose bind claim differs only in
// its JSON type (1 and "1", true and "true"), or is absent, null or "",
// have different identities (S4); equal values of one type agree.
func TestBindClaimsCompareTypeAndValue(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.ES256)
	cfg := baseConfig(e.writeJWKS(d))
	cfg.BindClaims = []string{"tid"}
	v := e.verifier(cfg)
	now := e.clock.Now()
	identity := func(tid any) authz.Digest {
		t.Helper()
		c := claims(now, map[string]any{"tid": nil})
		if tid != "absent" {
			c["tid"] = tid
		}
		cl, err := verify(v, mint(t, d, c), now)
		if err != nil {
			t.Fatal(err)
		}
		return cl.Identity
	}
	groups := [][]any{{1, 1.0}, {"1"}, {true}, {"true"}, {nil}, {"null"}, {""}, {"absent"}, {[]any{"a"}}, {`["a"]`}}
	seen := map[authz.Digest]any{}
	for _, g := range groups {
		id := identity(g[0])
		for _, same := range g[1:] {
			if identity(same) != id {
				t.Errorf("tid %#v and %#v: different identities", g[0], same)
			}
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("tid %#v and %#v: the same identity", prev, g[0])
		}
		seen[id] = g[0]
	}
	// A string claim keeps the identity it had before types were compared,
	// so that sessions bound to string claims survive an upgrade.
	if identity("tenant-1") != authz.IdentityDigest(testIssuer, "alice", []string{"tenant-1"}) {
		t.Error("a string bind claim's identity changed")
	}
}

// TestSubjectMustBeAHeaderValue: a validly signed sub with a control byte
// or outer spaces would reach x-sessiongate-user raw (or, over HTTP, be
// dropped with the header): the token is refused. Inner spaces and
// non-ASCII are fine.
func TestSubjectMustBeAHeaderValue(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.EdDSA)
	v := e.verifier(baseConfig(e.writeJWKS(d)))
	now := e.clock.Now()
	for _, sub := range []string{"alice\r\nx-injected: 1", "alice\n", "al\x00ice", "\talice", "alice\x7f", "alice\x1b[31m", " alice", "alice "} {
		c, err := verify(v, mint(t, d, claims(now, map[string]any{"sub": sub})), now)
		if c != nil {
			t.Errorf("sub %q accepted", sub)
			continue
		}
		wantErr(t, err, authz.ReasonInvalidToken, "sub cannot be a header value")
	}
	for _, sub := range []string{"alice bob", "ålice", "用户", `a"b;c,d`} {
		if _, err := verify(v, mint(t, d, claims(now, map[string]any{"sub": sub})), now); err != nil {
			t.Errorf("sub %q refused: %v", sub, err)
		}
	}
}

// TestRequireAuthTime: with require_auth_time a token without auth_time is
// refused, and the same token is accepted by a policy without it (the two
// verifiers do not share a cache entry).
func TestRequireAuthTime(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.ES256)
	jwks := e.writeJWKS(d)
	cfg := baseConfig(jwks)
	cfg.RequireAuthTime = true
	strict, lax := e.verifier(cfg), e.verifier(baseConfig(jwks))
	now := e.clock.Now()
	tok := mint(t, d, claims(now, map[string]any{"auth_time": nil}))
	if _, err := verify(lax, tok, now); err != nil {
		t.Fatal(err)
	}
	_, err := verify(strict, tok, now)
	wantErr(t, err, authz.ReasonInvalidToken, "missing auth_time")
	if _, err := verify(strict, mint(t, d, claims(now, nil)), now); err != nil {
		t.Fatal(err)
	}
}

// TestMaxLifetime: exp − iat up to max_lifetime is accepted, and a token
// without iat but with auth_time (S1 bounds it) too.
func TestMaxLifetime(t *testing.T) {
	e := newEnv(t)
	d := newIDP(t, idp.ES256)
	cfg := baseConfig(e.writeJWKS(d))
	cfg.MaxLifetime = 2 * time.Hour
	v := e.verifier(cfg)
	now := e.clock.Now()
	for name, over := range map[string]map[string]any{
		"exactly max_lifetime": {"exp": now.Add(2 * time.Hour).Unix()},
		"auth_time, no iat":    {"iat": nil, "exp": now.Add(48 * time.Hour).Unix()},
		"an hour, iat in skew": {"iat": now.Add(20 * time.Second).Unix(), "exp": now.Add(time.Hour).Unix()},
	} {
		if _, err := verify(v, mint(t, d, claims(now, over)), now); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := verify(v, mint(t, d, claims(now, map[string]any{"exp": now.Add(2*time.Hour + time.Second).Unix()})), now)
	wantErr(t, err, authz.ReasonInvalidToken, "lifetime (exp - iat) over the policy's max_lifetime")
}
