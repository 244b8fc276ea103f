package bench

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/envoy"
)

// BenchmarkCodecMarshal measures whether a vtprotobuf codec would make the
// server cheaper: grpc-go's proto codec against vtCodec on the responses the
// server sends. go-control-plane's generated marshallers are compiled in
// only with `-tags vtprotobuf`; without the tag vtCodec falls back to proto
// and both lines measure the same thing. The result (BENCHMARKS.md) is why
// the server does not use it.
func BenchmarkCodecMarshal(b *testing.B) {
	codecs := []struct {
		name string
		c    encoding.CodecV2
	}{{"proto", encoding.GetCodecV2(protocodec.Name)}, {"vt", vtCodec{encoding.GetCodecV2(protocodec.Name)}}}
	decisions := []struct {
		name string
		d    authz.Decision
	}{
		{"allow", authz.Decision{Allow: true, Policy: "app", User: "alice@example.com",
			SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600, ExpiresIn: -1}},
		{"allow-new-session", authz.Decision{Allow: true, Policy: "app", User: "alice@example.com",
			SessionExpiresAt: 1767225600, IdleExpiresAt: 1767198600, ExpiresIn: -1,
			SetCookie: []string{"__Host-sessiongate=0123456789abcdefghijklmnopqrstuv; Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Lax"}}},
		{"deny-302", authz.Decision{Reason: authz.ReasonNoToken, Policy: "app", Status: 302, ExpiresIn: -1,
			Location: "https://login.example.com/start?rd=https%3A%2F%2Fapp.example.com%2Fapp%2Forders%3Fpage%3D2"}},
	}
	for _, d := range decisions {
		resp := envoy.ToResponse(&d.d)
		for _, c := range codecs {
			b.Run(d.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					data, err := c.c.Marshal(resp)
					if err != nil {
						b.Fatal(err)
					}
					data.Free()
				}
			})
		}
	}
}

// vtCodec marshals messages that have vtprotobuf's generated code with it,
// and everything else with grpc-go's proto codec (go-control-plane
// generates no UnmarshalVT, so unmarshalling always is proto's).
type vtCodec struct{ proto encoding.CodecV2 }

type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

func (vtCodec) Name() string { return protocodec.Name }

func (c vtCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := m.SizeVT()
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVTStrict((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("vtproto: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c vtCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }
