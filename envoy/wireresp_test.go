package envoy

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sessiongate/sessiongate/authz"
)

// responseDecisions are decisions of every shape ToResponse answers.
func responseDecisions() map[string]authz.Decision {
	ds := map[string]authz.Decision{
		"allow without user":  {Allow: true},
		"allow, warn":         {Allow: true, User: "alice", SessionExpiresAt: 1, IdleExpiresAt: -5, Warn: true, ExpiresIn: 1 << 40},
		"dry run":             {Allow: true, DryRun: true, Reason: authz.ReasonIdleTimeout},
		"allow, sign-in":      {Allow: true, User: "alice", SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600, StripCookies: true, UpstreamCookie: "a=1; b=2", Upstream: []authz.Header{{Name: "authorization", Value: "Bearer " + string(bytes.Repeat([]byte("t"), 1200))}, {Name: "x-sessiongate-email", Value: "é@example.com"}, {Name: "x-sessiongate-groups"}}},
		"allow, no cookie":    {Allow: true, User: "bob", StripCookies: true},
		"unknown host":        {Reason: authz.ReasonUnknownHost, Status: 403},
		"401":                 {Reason: authz.ReasonNoToken, Status: 401, Authenticate: `Bearer realm="app"`},
		"page":                {Reason: authz.ReasonReauthNotPerformed, Status: 403, Body: "<!doctype html><p>Sign in again</p>", ContentType: "text/html; charset=utf-8", SetCookie: []string{"a=; Max-Age=0", "b=; Max-Age=0"}},
		"page, default type":  {Reason: authz.ReasonSignInFailed, Status: 400, Body: "failed"},
		"deny, many cookies":  {Reason: authz.ReasonNoToken, Status: 302, Location: "https://l/", SetCookie: []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		"bad UTF-8 in a user": {Allow: true, User: "\xff"},
	}
	for _, b := range benchDecisions() {
		ds[b.name] = b.d
	}
	return ds
}

// sameResponseBytes checks that marshalResponse writes what proto.Marshal
// writes, or leaves r to it.
func sameResponseBytes(t *testing.T, r *authv3.CheckResponse) {
	t.Helper()
	want, werr := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	got, ok := marshalResponse(r)
	if !ok {
		return
	}
	if werr != nil {
		t.Fatalf("encoded a response proto.Marshal refuses (%v)", werr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes differ:\nproto %x\nhere  %x", want, got)
	}
	if cap(got) != len(got) {
		t.Fatalf("sized %d for %d bytes", cap(got), len(got))
	}
}

func TestMarshalResponseMatchesProto(t *testing.T) {
	codec := newWireCodec()
	for name, d := range responseDecisions() {
		t.Run(name, func(t *testing.T) {
			r := ToResponse(&d)
			RemoveAliases(r, func(fn func(string)) { fn("x_sessiongate_user") })
			sameResponseBytes(t, r)
			b, ok := marshalResponse(r)
			if ok != (name != "bad UTF-8 in a user") {
				t.Fatalf("encoded here: %v", ok)
			}
			// The server's codec writes it so.
			data, err := codec.Marshal(r)
			if (err == nil) != ok || (ok && !bytes.Equal(data.Materialize(), b)) {
				t.Fatalf("the server's codec: %v, %x", err, data.Materialize())
			}
		})
	}
	// Fields ToResponse never sets are left to the generic encoder.
	others := map[string]*authv3.CheckResponse{
		"dynamic metadata": {DynamicMetadata: &structpb.Struct{}},
		"append":           okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "k"}, Append: wrapperspb.Bool(true)}}}),
		"raw value":        okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "k", RawValue: []byte("v")}}}}),
		"query":            okResp(&authv3.OkHttpResponse{QueryParametersToRemove: []string{"q"}}),
	}
	for name, r := range others {
		if _, ok := marshalResponse(r); ok {
			t.Errorf("%s: encoded here", name)
		}
	}
}

func FuzzMarshalResponse(f *testing.F) {
	f.Add(true, "alice", int64(1), int64(2), "authorization", "Bearer t", "a=1", "c=1; Path=/", 302, "https://l/", "")
	f.Add(false, "", int64(0), int64(-1), "", "", "", "", 401, "", "<p>")
	f.Fuzz(func(t *testing.T, allow bool, user string, exp, idle int64, name, value, upCookie, setCookie string, status int, location, body string) {
		d := authz.Decision{Allow: allow, User: user, SessionExpiresAt: exp, IdleExpiresAt: idle, Status: status, Location: location,
			Body: body, Reason: authz.ReasonNoToken, StripCookies: upCookie != "", UpstreamCookie: upCookie, Warn: idle < 0, ExpiresIn: idle}
		if name != "" {
			d.Upstream = []authz.Header{{Name: name, Value: value}}
		}
		if setCookie != "" {
			d.SetCookie = []string{setCookie}
		}
		sameResponseBytes(t, ToResponse(&d))
	})
}

func BenchmarkMarshalResponse(b *testing.B) {
	for name, d := range responseDecisions() {
		if name != "allow, sign-in" && name != "allow" && name != "deny-302" {
			continue
		}
		r := ToResponse(&d)
		b.Run(name+"/proto", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/here", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := marshalResponse(r); !ok {
					b.Fatal("not encoded")
				}
			}
		})
		codec := newWireCodec()
		b.Run(name+"/server-codec", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := codec.Marshal(r)
				if err != nil {
					b.Fatal(err)
				}
				data.Free() // as gRPC does once it has sent it
			}
		})
	}
}
