package authz

import "testing"

// BenchmarkSessionUnmarshal is the decoding a store does on every Load.
func BenchmarkSessionUnmarshal(b *testing.B) {
	s := Session{ID: "0123456789abcdefghijklmnopqrstuv", Policy: "app", Subject: "alice@example.com",
		SignIn: 1, Created: 2, LastActivity: 3, KeepUntil: 4}
	rec, err := s.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var got Session
		if err := got.UnmarshalBinary(rec); err != nil || got.Subject != s.Subject {
			b.Fatal(err)
		}
	}
}
