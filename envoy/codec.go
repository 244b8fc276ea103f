package envoy

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// vtMessage is a message with the fast marshaller that go-control-plane
// generates with vtprotobuf, compiled in only with `-tags vtprotobuf`.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

// vtCodec marshals messages that have vtprotobuf's generated code with it
// and everything else, and all unmarshalling (go-control-plane generates no
// UnmarshalVT), with grpc-go's proto codec. It is set on the sessiongate
// server alone (grpc.ForceServerCodecV2), never registered globally.
type vtCodec struct{ proto encoding.CodecV2 }

func newVTCodec() vtCodec { return vtCodec{proto: encoding.GetCodecV2(protocodec.Name)} }

func (vtCodec) Name() string { return protocodec.Name }

func (c vtCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVTStrict(buf); err != nil {
			return nil, fmt.Errorf("vtproto: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVTStrict((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("vtproto: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c vtCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }
