package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"
)

// BackChannelEvent is the member of a logout token's events claim that
// makes it one (OpenID Connect Back-Channel Logout 1.0, §2.4).
const BackChannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutTyp is the explicit JWT type of logout tokens (§2.4). A token whose
// header has another typ (at+jwt: an access token) is refused; one without
// typ, or with the generic "JWT" that Keycloak sends (keycloak#28939, taken
// as untyped as the Nimbus SDK does), is accepted on its claims: events and
// no nonce tell it from an ID token.
const LogoutTyp = "logout+jwt"

// BackChannel says who may end a policy's sessions with a back-channel
// logout token (S18): tokens issued by Issuer for Audience (the policy's
// client), whose signature Verifier checks with the issuer's keys.
type BackChannel struct {
	Issuer   string
	Audience string
	Verifier LogoutVerifier
}

// LogoutVerifier checks a logout token's JWS signature with the issuer's
// keys and an allow-listed algorithm, then its claims (CheckLogoutToken).
type LogoutVerifier interface {
	VerifyLogout(ctx context.Context, raw string, now time.Time) (*LogoutToken, error)
}

// LogoutCapable is implemented by token verifiers that can also check the
// logout tokens of their issuer (token-mode policies that name an audience
// for them).
type LogoutCapable interface {
	LogoutVerifier(audience string) LogoutVerifier
}

// LogoutToken is what a valid logout token says. Times are Unix ms.
type LogoutToken struct {
	Issuer   string
	Audience []string
	Subject  string // "" when absent
	SID      string // "" when absent
	JTI      string
	IssuedAt int64
	Expiry   int64
	// At is when the token's end is recorded: its iat plus the clock skew
	// (a sign-in the provider made before it issued the token lies before
	// it even if the provider's clock runs behind ours), never after now.
	At int64
}

// LogoutError is why a logout token is refused. Reason is one of a closed
// set (metric labels, JSON error answers); Detail names the claim, never a
// value of the token.
type LogoutError struct {
	Reason string
	Detail string
}

func (e *LogoutError) Error() string { return "logout token: " + e.Detail }

// Logout token refusal reasons.
const (
	LogoutInvalidToken = "invalid_token" // malformed, signature, algorithm, typ
	LogoutInvalidClaim = "invalid_claim" // a claim the spec requires is wrong or missing
	LogoutExpired      = "expired"
	LogoutUnavailable  = "keys_unavailable" // the issuer's keys could not be had
)

func logoutErr(reason, detail string) error { return &LogoutError{Reason: reason, Detail: detail} }

// CheckLogoutToken applies §2.6 of Back-Channel Logout 1.0 to the payload
// of a logout token whose signature has been verified (steps 1–3 are the
// caller's): typ (the JWS header's, "" when absent), iss, aud, iat, exp,
// jti, events, sid and/or sub, no nonce. skew bounds clock differences on
// iat and exp.
func CheckLogoutToken(typ string, payload []byte, issuer, audience string, now time.Time, skew time.Duration) (*LogoutToken, error) {
	if t := strings.TrimPrefix(strings.ToLower(typ), "application/"); t != "" && t != LogoutTyp && t != "jwt" {
		return nil, logoutErr(LogoutInvalidToken, "typ is not logout+jwt")
	}
	var m map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(payload))
	if err := d.Decode(&m); err != nil || m == nil || d.More() {
		return nil, logoutErr(LogoutInvalidToken, "claims are not a JSON object")
	}
	var lt LogoutToken
	var ok bool
	if lt.Issuer, ok = logoutString(m, "iss"); !ok || lt.Issuer != issuer {
		return nil, logoutErr(LogoutInvalidClaim, "iss is not the issuer")
	}
	if lt.Audience, ok = logoutAudience(m["aud"]); !ok || !slices.Contains(lt.Audience, audience) {
		return nil, logoutErr(LogoutInvalidClaim, "aud does not include the client")
	}
	ms, sk := now.UnixMilli(), skew.Milliseconds()
	if lt.IssuedAt, ok = logoutTime(m, "iat"); !ok {
		return nil, logoutErr(LogoutInvalidClaim, "iat missing or not a number")
	}
	if lt.IssuedAt > ms+sk {
		return nil, logoutErr(LogoutInvalidClaim, "iat is in the future")
	}
	if lt.Expiry, ok = logoutTime(m, "exp"); !ok {
		return nil, logoutErr(LogoutInvalidClaim, "exp missing or not a number")
	}
	if lt.Expiry <= ms-sk {
		return nil, logoutErr(LogoutExpired, "expired")
	}
	if lt.JTI, ok = logoutString(m, "jti"); !ok || lt.JTI == "" {
		return nil, logoutErr(LogoutInvalidClaim, "jti missing")
	}
	var events map[string]json.RawMessage
	if raw, has := m["events"]; !has || json.Unmarshal(raw, &events) != nil || events == nil {
		return nil, logoutErr(LogoutInvalidClaim, "events missing or not an object")
	}
	var member map[string]json.RawMessage
	if raw, has := events[BackChannelEvent]; !has || json.Unmarshal(raw, &member) != nil || member == nil {
		return nil, logoutErr(LogoutInvalidClaim, "events has no back-channel logout member")
	}
	if _, has := m["nonce"]; has {
		return nil, logoutErr(LogoutInvalidClaim, "nonce present")
	}
	if _, has := m["sub"]; has {
		if lt.Subject, ok = logoutString(m, "sub"); !ok || lt.Subject == "" {
			return nil, logoutErr(LogoutInvalidClaim, "sub is not a string")
		}
	}
	if _, has := m["sid"]; has {
		if lt.SID, ok = logoutString(m, "sid"); !ok || lt.SID == "" {
			return nil, logoutErr(LogoutInvalidClaim, "sid is not a string")
		}
	}
	if lt.Subject == "" && lt.SID == "" {
		return nil, logoutErr(LogoutInvalidClaim, "neither sid nor sub")
	}
	lt.At = min(ms, lt.IssuedAt+sk)
	return &lt, nil
}

func logoutString(m map[string]json.RawMessage, name string) (string, bool) {
	var s string
	raw, has := m[name]
	if !has || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func logoutAudience(raw json.RawMessage) ([]string, bool) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, one != ""
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
		return list, true
	}
	return nil, false
}

// logoutTime reads a NumericDate in whole or fractional seconds as Unix ms.
func logoutTime(m map[string]json.RawMessage, name string) (int64, bool) {
	var f float64
	raw, has := m[name]
	if !has || json.Unmarshal(raw, &f) != nil || f < 0 || f > 253402300799 || math.IsNaN(f) {
		return 0, false
	}
	return int64(f * 1000), true
}
