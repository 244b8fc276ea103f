package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
)

// maxUnixSeconds (year 9999) bounds time claims so that ms never overflow.
const maxUnixSeconds = 253402300799

// verifier is the authz.Verifier of one policy.
type verifier struct {
	p      *Provider
	ks     *keySet
	policy string // for the refusal log; "" when built without a name
	cfg    Config
	algs   []jose.SignatureAlgorithm
	fp     string // Config.fingerprint, part of every cache entry
	fpHash uint64
}

func invalid(detail string) error {
	return &authz.TokenError{Reason: authz.ReasonInvalidToken, Detail: detail}
}

func expired() error {
	return &authz.TokenError{Reason: authz.ReasonTokenExpired, Detail: "token expired"}
}

// refusal is a verification failure with what the operator needs to fix a
// configuration: what the policy expects and what the token carried. The
// values are the token's claims and header fields (issuer, audiences, key
// id, times), never the token, its signature or its subject. Only the
// refusal log reads them; the TokenError inside is what callers see.
type refusal struct {
	te    *authz.TokenError
	attrs []any // slog key-value pairs
}

func (r *refusal) Error() string { return r.te.Error() }
func (r *refusal) Unwrap() error { return r.te }

// explain adds expected and actual values to a verification error.
func explain(err error, attrs ...any) error {
	te, ok := err.(*authz.TokenError)
	if !ok {
		return err
	}
	return &refusal{te: te, attrs: attrs}
}

// Bounds on what a refusal log line repeats of a token: its values are
// chosen by whoever sent it.
const (
	maxLoggedValue  = 100
	maxLoggedValues = 5
)

// logValue quotes a value taken from a token, cut to maxLoggedValue bytes.
func logValue(s string) string {
	if len(s) > maxLoggedValue {
		return strconv.Quote(s[:maxLoggedValue]) + "…"
	}
	return strconv.Quote(s)
}

// logValues is logValue for a list, cut to maxLoggedValues items.
func logValues(ss []string) []string {
	out := make([]string, 0, min(len(ss), maxLoggedValues+1))
	for i, s := range ss {
		if i == maxLoggedValues {
			out = append(out, fmt.Sprintf("… %d more", len(ss)-i))
			break
		}
		out = append(out, logValue(s))
	}
	return out
}

// logTime renders a Unix-millisecond claim for the refusal log.
func logTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// Verify implements authz.Verifier. Details of errors name claims, never
// their values or the token.
func (v *verifier) Verify(ctx context.Context, raw string, now time.Time) (*authz.Claims, error) {
	if len(raw) > v.cfg.MaxBytes {
		return nil, invalid("token too large")
	}
	ms := now.UnixMilli()
	h := v.p.cache.hash(raw) ^ v.fpHash
	gen := v.ks.cur.Load().gen
	if c, notBefore, notAfter, ok := v.p.cache.get(h, v.fp, raw, gen); ok {
		v.p.obs.CacheHit()
		switch {
		case ms >= notAfter:
			return nil, expired()
		case ms < notBefore:
			return nil, invalid("not yet valid")
		}
		return c, nil
	}
	v.p.obs.CacheMiss()
	c, gen, err := v.verify(ctx, raw, ms)
	if err != nil {
		v.p.refusals.log(v, err, now) // failures are never cached
		return nil, err
	}
	skew := v.cfg.ClockSkew.Milliseconds()
	v.p.cache.put(entry{hash: h, token: raw, fp: v.fp, gen: gen, claims: c,
		notBefore: max(c.NotBefore, c.IssuedAt, c.AuthTime) - skew, notAfter: c.Expiry + skew})
	return c, nil
}

// verify does the full check of a token not in the cache and returns its
// claims with the generation of the keys that verified it.
func (v *verifier) verify(ctx context.Context, raw string, now int64) (*authz.Claims, uint64, error) {
	if strings.Count(raw, ".") != 2 {
		return nil, 0, invalid("not a compact JWS")
	}
	if !base64urlOnly(raw) {
		return nil, 0, invalid("malformed JWS")
	}
	if !canonicalSegments(raw) {
		return nil, 0, invalid("non-canonical base64url")
	}
	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		if e, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, 0, explain(invalid("algorithm not allowed"), "got_alg", logValue(string(e.Got)), "want_alg", v.cfg.Algorithms)
		}
		return nil, 0, invalid("malformed JWS")
	}
	hdr := jws.Signatures[0].Header
	payload, gen, err := v.checkSignature(ctx, jws, hdr.KeyID, hdr.Algorithm)
	if err != nil {
		return nil, 0, err
	}
	c, err := v.claims(payload, now)
	return c, gen, err
}

// checkSignature verifies jws with the keys that kid and alg select. An
// unknown kid, or an empty key set, refetches once (rate-limited) first: that
// is how a rotation at the IdP is picked up before the next refresh.
func (v *verifier) checkSignature(ctx context.Context, jws *jose.JSONWebSignature, kid, alg string) ([]byte, uint64, error) {
	for refetched := false; ; refetched = true {
		k := v.ks.cur.Load()
		cands, kidKnown := k.candidates(kid, alg)
		for _, pk := range cands {
			if payload, err := jws.Verify(pk.pub); err == nil {
				return payload, k.gen, nil
			}
		}
		switch {
		case len(cands) > 0:
			return nil, 0, explain(invalid("bad signature"), "kid", logValue(kid), "alg", alg, "jwks", v.ks.name)
		case !refetched && (len(k.list) == 0 || (kid != "" && !kidKnown)):
			v.ks.maybeRefresh(ctx, v.p, v.cfg.MinRefreshInterval)
		case len(k.list) == 0:
			return nil, 0, explain(invalid("no keys loaded"), "jwks", v.ks.name)
		case kidKnown:
			return nil, 0, explain(invalid("key does not match algorithm"), "kid", logValue(kid), "alg", alg, "jwks", v.ks.name)
		case kid != "":
			return nil, 0, explain(invalid("unknown key id"), "kid", logValue(kid), "known_kids", k.kids(), "jwks", v.ks.name)
		default:
			return nil, 0, explain(invalid("no key for algorithm"), "alg", alg, "jwks", v.ks.name)
		}
	}
}

// claims checks the verified payload and extracts what the engine needs.
func (v *verifier) claims(payload []byte, now int64) (*authz.Claims, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil || m == nil {
		return nil, invalid("claims are not a JSON object")
	}
	c, err := ReadClaims(m, v.cfg.BindClaims)
	if err != nil {
		return nil, err
	}
	if c.Issuer != v.cfg.Issuer {
		return nil, explain(invalid("wrong iss"), "got_iss", logValue(c.Issuer), "want_iss", v.cfg.Issuer)
	}
	if !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return nil, explain(invalid("wrong aud"), "got_aud", logValues(c.Audience), "want_aud", v.cfg.Audiences)
	}
	skew := v.cfg.ClockSkew.Milliseconds()
	switch {
	case m["exp"] == nil || string(m["exp"]) == "null":
		return nil, invalid("missing exp")
	case now >= c.Expiry+skew:
		return nil, explain(expired(), "exp", logTime(c.Expiry), "now", logTime(now), "clock_skew", v.cfg.ClockSkew.String())
	case c.NotBefore != 0 && now < c.NotBefore-skew:
		return nil, explain(invalid("not yet valid"), "nbf", logTime(c.NotBefore), "now", logTime(now), "clock_skew", v.cfg.ClockSkew.String())
	case c.IssuedAt > now+skew:
		return nil, explain(invalid("iat in the future"), "iat", logTime(c.IssuedAt), "now", logTime(now), "clock_skew", v.cfg.ClockSkew.String())
	case c.AuthTime == 0 && v.cfg.RequireAuthTime:
		return nil, invalid("missing auth_time")
	case c.AuthTime > now+skew:
		// A sign-in that has not happened yet would count as one after
		// every session end (S3) and restart the absolute lifetime (S1).
		return nil, explain(invalid("auth_time in the future"), "auth_time", logTime(c.AuthTime), "now", logTime(now), "clock_skew", v.cfg.ClockSkew.String())
	}
	switch {
	case c.IssuedAt == 0 && c.AuthTime == 0:
		// Nothing says when it was issued: no session end could be kept
		// long enough to cover it (S3).
		return nil, invalid("missing iat")
	case c.IssuedAt != 0 && c.Expiry-c.IssuedAt > v.cfg.MaxLifetime.Milliseconds():
		return nil, invalid("lifetime (exp - iat) over the policy's max_lifetime")
	}
	return c, nil
}

// ReadClaims reads what the engine uses of a verified JWT's claims: iss,
// aud, the times (exp, nbf, iat, auth_time as Unix ms, 0 when absent), sub
// (required, and usable as a header value: it goes upstream as
// x-sessiongate-user), sid, the values of the bind claims in order, and the
// Identity and Scope digests. Whether iss, aud and the times are acceptable
// is the caller's to decide. Every maker of authz.Claims (access tokens
// here, ID tokens in package oidc) reads them with it, so that a session is
// bound to the same identity whichever opened it. Errors are
// *authz.TokenError naming the claim, never a value.
func ReadClaims(m map[string]json.RawMessage, bind []string) (*authz.Claims, error) {
	c := &authz.Claims{}
	var err error
	if c.Issuer, err = str(m, "iss"); err != nil {
		return nil, err
	}
	if c.Audience, err = audience(m["aud"]); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		name string
		dst  *int64
	}{{"exp", &c.Expiry}, {"nbf", &c.NotBefore}, {"iat", &c.IssuedAt}, {"auth_time", &c.AuthTime}} {
		if *t.dst, err = unixMilli(m, t.name); err != nil {
			return nil, err
		}
	}
	if c.Subject, err = str(m, "sub"); err != nil {
		return nil, err
	}
	if c.Subject == "" {
		return nil, invalid("missing sub")
	}
	if !authz.IsHeaderValue(c.Subject) {
		// It goes upstream as x-sessiongate-user: refused, not encoded, so
		// that an upstream never sees a subject other than the IdP's.
		return nil, invalid("sub cannot be a header value")
	}
	if c.SID, err = str(m, "sid"); err != nil {
		return nil, err
	}
	if len(bind) > 0 {
		c.Bind = make([]string, len(bind))
		for i, name := range bind {
			c.Bind[i] = bindValue(m[name])
		}
	}
	c.Identity = authz.IdentityDigest(c.Issuer, c.Subject, c.Bind)
	c.Scope = authz.ScopeDigest(c.Issuer, c.Subject, c.SID)
	return c, nil
}

// str reads an optional string claim ("" when absent or null).
func str(m map[string]json.RawMessage, name string) (string, error) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", invalid("claim " + name + " is not a string")
	}
	return s, nil
}

// audience reads aud, which RFC 7519 allows as a string or an array.
func audience(raw json.RawMessage) ([]string, error) {
	if raw == nil {
		return nil, invalid("missing aud")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) != nil {
		return nil, invalid("claim aud is not a string or an array of strings")
	}
	return many, nil
}

// unixMilli reads an optional NumericDate claim (seconds, possibly with a
// fraction) as Unix milliseconds; 0 when absent.
func unixMilli(m map[string]json.RawMessage, name string) (int64, error) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return 0, nil
	}
	if s, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		if s < 0 || s > maxUnixSeconds {
			return 0, invalid("claim " + name + " out of range")
		}
		return s * 1000, nil
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil {
		return 0, invalid("claim " + name + " is not a number")
	}
	if !(f >= 0 && f <= maxUnixSeconds) {
		return 0, invalid("claim " + name + " out of range")
	}
	return int64(math.Floor(f * 1000)), nil
}

// notString starts the rendering of every bind claim value that is not a
// string. A decoded JSON string is always valid UTF-8 and 0xFF never is, so
// no string renders like another type: 1 and "1", true and "true", null,
// "" and an absent claim all differ (S4 compares type and value).
const notString = "\xff"

// bindValue renders a bind claim: a string as it is (so that sessions bound
// before types were told apart keep their identity), anything else as
// notString followed by its compact JSON, an absent claim as notString alone.
func bindValue(raw json.RawMessage) string {
	if raw == nil {
		return notString
	}
	var s string
	if string(raw) != "null" && json.Unmarshal(raw, &s) == nil { // null decodes into a string as a no-op
		return s
	}
	var b bytes.Buffer
	b.WriteString(notString)
	if json.Compact(&b, raw) != nil {
		return notString + string(raw)
	}
	return b.String()
}

// base64urlOnly reports whether raw holds nothing but base64url characters
// and the two dots. Go's decoder skips CR and LF, so without this a token
// with line breaks inside a segment would verify as another spelling of
// the same token (see canonicalSegments).
func base64urlOnly(raw string) bool {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// canonicalSegments reports whether every segment of a compact JWS is
// canonical unpadded base64url. Lenient decoding would let one signed token
// take many spellings (the unused bits of a segment's last character), each
// a miss in the verified-token cache: an attacker holding one valid token
// could force a signature check per request. One token, one spelling.
func canonicalSegments(raw string) bool {
	for seg := range strings.SplitSeq(raw, ".") {
		// The last character's unused low bits must be zero: 4 of them after
		// 2 characters in the final group, 2 after 3. (Other damage, such as
		// a foreign character, is left to the JWS parser to report.)
		switch r := len(seg) % 4; r {
		case 2, 3:
			v := strings.IndexByte(b64url, seg[len(seg)-1])
			if v >= 0 && (r == 2 && v&0xf != 0 || r == 3 && v&0x3 != 0) {
				return false
			}
		}
	}
	return true
}

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
