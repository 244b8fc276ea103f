package authz

import (
	"testing"
)

// Decoding a record handed over (UnmarshalOwned, UnmarshalKeyedOwned) reads
// what decoding a copy reads, for every format and every truncation of it,
// without allocating: the strings share the record's memory.
func TestOwnedDecodesAsCopied(t *testing.T) {
	keyed := keyedSamples()
	for _, name := range []string{"session-v1-ended.bin", "session-v1-live.bin", "session-v2-oidc.bin",
		"session-v4-keyed-ended.bin", "session-v4-keyed-oidc.bin", "session-v4-keyed-user-scope.bin"} {
		rec := mustRead(t, name)
		policy, id := keyed[name].Policy, keyed[name].ID
		for n := range len(rec) + 1 {
			var copied, owned Session
			errCopied := copied.UnmarshalKeyed(rec[:n], policy, id)
			b := append([]byte(nil), rec[:n]...)
			errOwned := owned.UnmarshalKeyedOwned(b, policy, id)
			if owned != copied || errOwned != errCopied {
				t.Fatalf("%s[:%d]: owned %+v, %v; copied %+v, %v", name, n, owned, errOwned, copied, errCopied)
			}
			if _, isKeyed := keyed[name]; isKeyed {
				continue
			}
			errCopied = copied.UnmarshalBinary(rec[:n])
			errOwned = owned.UnmarshalOwned(b)
			if owned != copied || errOwned != errCopied {
				t.Fatalf("%s[:%d] without a key: owned %+v, %v; copied %+v, %v", name, n, owned, errOwned, copied, errCopied)
			}
		}
		var s Session
		if n := testing.AllocsPerRun(100, func() { _ = s.UnmarshalKeyedOwned(rec, policy, id) }); n != 0 {
			t.Errorf("%s: %v allocations per owned decode", name, n)
		}
	}
	rec := mustRead(t, "scope-v1.bin")
	for n := range len(rec) + 1 {
		var copied, owned ScopeState
		errCopied := copied.UnmarshalBinary(rec[:n])
		errOwned := owned.UnmarshalOwned(append([]byte(nil), rec[:n]...))
		if owned != copied || errOwned != errCopied {
			t.Fatalf("scope-v1.bin[:%d]: owned %+v, %v; copied %+v, %v", n, owned, errOwned, copied, errCopied)
		}
	}
	var st ScopeState
	if n := testing.AllocsPerRun(100, func() { _ = st.UnmarshalOwned(rec) }); n != 0 {
		t.Errorf("scope-v1.bin: %v allocations per owned decode", n)
	}
}
