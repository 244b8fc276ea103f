package envoy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/sessiongate/sessiongate/authz"
)

// responseDecisions are decisions of every shape an answer takes.
func responseDecisions() map[string]authz.Decision {
	ds := map[string]authz.Decision{
		"allow without user":  {Allow: true},
		"allow, warn":         {Allow: true, User: "alice", SessionExpiresAt: 1, IdleExpiresAt: -5, Warn: true, ExpiresIn: 1 << 40},
		"dry run":             {Allow: true, DryRun: true, Reason: authz.ReasonIdleTimeout},
		"allow, sign-in":      {Allow: true, User: "alice", SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600, StripCookies: true, UpstreamCookie: "a=1; b=2", Upstream: []authz.Header{{Name: "authorization", Value: "Bearer " + strings.Repeat("t", 1200)}, {Name: "x-sessiongate-email", Value: "é@example.com"}, {Name: "x-sessiongate-groups"}}},
		"allow, no cookie":    {Allow: true, User: "bob", StripCookies: true},
		"unknown host":        {Reason: authz.ReasonUnknownHost, Status: 403},
		"401":                 {Reason: authz.ReasonNoToken, Status: 401, Authenticate: `Bearer realm="app"`},
		"page":                {Reason: authz.ReasonReauthNotPerformed, Status: 403, Body: "<!doctype html><p>Sign in again</p>", ContentType: "text/html; charset=utf-8", SetCookie: []string{"a=; Max-Age=0", "b=; Max-Age=0"}},
		"page, default type":  {Reason: authz.ReasonSignInFailed, Status: 400, Body: "failed"},
		"deny, many cookies":  {Reason: authz.ReasonNoToken, Status: 302, Location: "https://l/", SetCookie: []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		"bad UTF-8 in a user": {Allow: true, User: "\xff"},
	}
	// Past the room each of an answer's lists has in place.
	past := authz.Decision{Allow: true, User: "carol", Warn: true, StripCookies: true}
	for i := range 20 {
		past.Upstream = append(past.Upstream, authz.Header{Name: fmt.Sprintf("x-h%d", i), Value: strings.Repeat("v", i)})
		past.SetCookie = append(past.SetCookie, fmt.Sprintf("c%d=1", i))
	}
	ds["allow, past the lists' room"] = past
	for _, b := range benchDecisions() {
		ds[b.name] = b.d
	}
	return ds
}

// aliases are header names of a request: two aliases of the gate's
// headers, one of them repeated, and a name that is none.
var aliases = []field{{k: "x_sessiongate_user"}, {k: "X_SessionGate_Session_Expires_At"}, {k: "x_sessiongate_user"}, {k: "x-other"}}

// sameAnswerBytes checks that appendTo writes what proto.Marshal writes for
// a.proto(), and that the server's codec sends it as encodeAnswer encodes
// it; an answer that is not valid is refused by both.
func sameAnswerBytes(t *testing.T, d *authz.Decision, fields []field) {
	t.Helper()
	var a answer
	a.build(d)
	for _, f := range fields {
		a.removeAlias(f.k)
	}
	want, werr := proto.MarshalOptions{Deterministic: true}.Marshal(a.proto())
	data, cerr := newWireCodec().Marshal(encodeAnswer(d, fields))
	if !a.valid() {
		if werr == nil || cerr == nil {
			t.Fatalf("an answer that is not UTF-8 was encoded: proto %v, the server's codec %v", werr, cerr)
		}
		return
	}
	if werr != nil || cerr != nil {
		t.Fatalf("proto %v, the server's codec %v", werr, cerr)
	}
	status, body, n := a.sizes()
	got := a.appendTo(make([]byte, 0, n), status, body)
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes differ:\nproto %x\nhere  %x", want, got)
	}
	if cap(got) != len(got) {
		t.Fatalf("sized %d for %d bytes", cap(got), len(got))
	}
	if sent := data.Materialize(); !bytes.Equal(sent, want) {
		t.Fatalf("the server's codec sends\n%x\nproto %x", sent, want)
	}
	data.Free()
}

func TestAnswerMatchesProto(t *testing.T) {
	for name, d := range responseDecisions() {
		t.Run(name, func(t *testing.T) {
			sameAnswerBytes(t, &d, nil)
			sameAnswerBytes(t, &d, aliases)
			var a answer
			a.build(&d)
			if a.valid() != (name != "bad UTF-8 in a user") {
				t.Fatalf("valid: %v", a.valid())
			}
			for _, f := range aliases {
				a.removeAlias(f.k)
			}
			removed := strings.Join(a.proto().GetOkResponse().GetHeadersToRemove(), " ")
			switch {
			case !d.Allow && removed != "":
				t.Fatalf("a denial removes %q", removed)
			case d.Allow && (strings.Count(removed, "x_sessiongate_user") != 1 ||
				!strings.HasSuffix(removed, "x_sessiongate_user X_SessionGate_Session_Expires_At")):
				t.Fatalf("aliases removed: %q", removed)
			}
		})
	}
}

func FuzzAnswer(f *testing.F) {
	f.Add(true, "alice", int64(1), int64(2), "authorization", "Bearer t", "a=1", "c=1; Path=/", 302, "https://l/", "", "x_sessiongate_user")
	f.Add(false, "", int64(0), int64(-1), "", "", "", "", 401, "", "<p>", "")
	f.Fuzz(func(t *testing.T, allow bool, user string, exp, idle int64, name, value, upCookie, setCookie string, status int, location, body, header string) {
		d := authz.Decision{Allow: allow, User: user, SessionExpiresAt: exp, IdleExpiresAt: idle, Status: status, Location: location,
			Body: body, Reason: authz.ReasonNoToken, StripCookies: upCookie != "", UpstreamCookie: upCookie, Warn: idle < 0, ExpiresIn: idle}
		if name != "" {
			d.Upstream = []authz.Header{{Name: name, Value: value}}
		}
		if setCookie != "" {
			d.SetCookie = []string{setCookie}
		}
		sameAnswerBytes(t, &d, []field{{k: header}, {k: header}})
	})
}

// BenchmarkEncodeAnswer is what the gRPC server's codec did to answer
// (ToResponse, then writing the CheckResponse: "proto" with the generic
// encoder) against what it does (encodeAnswer, the buffer freed as gRPC
// frees it once sent).
func BenchmarkEncodeAnswer(b *testing.B) {
	for name, d := range responseDecisions() {
		if name != "allow, sign-in" && name != "allow" && name != "deny-302" {
			continue
		}
		b.Run(name+"/proto", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(ToResponse(&d)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/here", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				encodeAnswer(&d, nil).(mem.Buffer).Free()
			}
		})
	}
}
