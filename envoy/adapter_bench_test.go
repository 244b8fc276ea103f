package envoy

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
)

func BenchmarkToRequest(b *testing.B) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Host: "app.example.com", Path: "/app/orders?page=2", Method: "GET", Scheme: "https",
			Headers: map[string]string{":authority": "app.example.com", "x-request-id": "rid",
				"authorization": "Bearer t", "cookie": "__Host-sessiongate=abc", "accept": "application/json"},
		}},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if r := ToRequest(req); r.RequestID != "rid" {
			b.Fatal(r)
		}
	}
}

func BenchmarkToResponse(b *testing.B) {
	for _, d := range benchDecisions() {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ToResponse(&d.d)
			}
		})
	}
}

func benchDecisions() []struct {
	name string
	d    authz.Decision
} {
	return []struct {
		name string
		d    authz.Decision
	}{
		{"allow", authz.Decision{Allow: true, Policy: "app", User: "alice@example.com",
			SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600}},
		{"allow-new-session", authz.Decision{Allow: true, Policy: "app", User: "alice@example.com",
			SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600,
			SetCookie: []string{"__Host-sessiongate=0123456789abcdefghijklmnopqrstuv; Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Lax"}}},
		{"deny-302", authz.Decision{Reason: authz.ReasonNoToken, Policy: "app", Status: 302,
			Location: "https://login.example.com/start?rd=https%3A%2F%2Fapp.example.com%2Fapp%2Forders%3Fpage%3D2"}},
	}
}
