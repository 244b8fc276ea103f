package oidc

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// MaxHeaderValue bounds an identity header's value: a user in thousands of
// groups is better left without the header than the request refused by the
// proxy or the application.
const MaxHeaderValue = 4096

// headers renders the policy's identity headers from ID-token claims. A
// claim that is absent, null, too long, or whose value no header carries
// unchanged (authz.IsHeaderValue: a control byte such as CR, LF, NUL, TAB or
// DEL) gives no header: such values are dropped, never encoded, and the
// engine has adapters remove any client-sent copy, so that the application
// sees either the provider's value or nothing. Strings go as they are
// (UTF-8 included), arrays as their elements joined by ",", other values as
// compact JSON.
func (s *SignIn) headers(m map[string]json.RawMessage) []authz.Header {
	var out []authz.Header
	for _, hc := range s.cfg.Headers {
		v, ok := claimText(m[hc.Claim])
		if !ok || v == "" || len(v) > MaxHeaderValue || !authz.IsHeaderValue(v) {
			continue
		}
		out = append(out, authz.Header{Name: hc.Header, Value: v})
	}
	return out
}

// claimText renders one claim for a header.
func claimText(raw json.RawMessage) (string, bool) {
	if raw == nil || string(raw) == "null" {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s), true
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		parts := make([]string, 0, len(list))
		for _, e := range list {
			t, ok := claimText(e)
			if !ok {
				continue
			}
			parts = append(parts, t)
		}
		return strings.Join(parts, ","), true
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return "", false
	}
	return b.String(), true
}
