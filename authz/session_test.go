package authz

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleSession() Session {
	return Session{
		ID: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", Policy: "crm", Subject: "alice@example.com",
		Identity: IdentityDigest(issuer, "alice", []string{"t1"}), Scope: ScopeDigest(issuer, "alice", "sid-1"),
		SignIn: 1_700_000_000_000, Created: 1_700_000_000_123, LastActivity: 1_700_000_100_456,
		EndedAt: 1_700_000_200_789, Cause: CauseIdentityMismatch, KeepUntil: 1_700_030_000_000,
	}
}

func TestSessionBinaryRoundTrip(t *testing.T) {
	live := sampleSession()
	live.EndedAt, live.Cause = 0, CauseNone
	tests := map[string]Session{
		"ended":            sampleSession(),
		"live":             live,
		"zero":             {},
		"extreme times":    {ID: "x", SignIn: math.MinInt64, Created: math.MaxInt64, LastActivity: -1, EndedAt: 1, KeepUntil: math.MaxInt64, Cause: CauseSignedOut},
		"longest strings":  {ID: strings.Repeat("i", maxRecordString-1), Policy: strings.Repeat("p", maxRecordString-1), Subject: strings.Repeat("s", maxRecordString-1)},
		"binary strings":   {ID: "\x00\xff", Policy: "\n", Subject: "é\x00"},
		"every end cause":  {Cause: CauseAbsolute, EndedAt: 5},
		"idle end cause":   {Cause: CauseIdle, EndedAt: 5},
		"signed out cause": {Cause: CauseSignedOut, EndedAt: 5},
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			prefix := []byte("prefix")
			b, err := s.AppendBinary(append([]byte(nil), prefix...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("AppendBinary overwrote its input")
			}
			var got Session
			if err := got.UnmarshalBinary(b[len(prefix):]); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if got != s {
				t.Errorf("round trip\n got %+v\nwant %+v", got, s)
			}
		})
	}
}

func TestSessionBinaryRejectsBadInput(t *testing.T) {
	s := sampleSession()
	good, err := s.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(good) {
		var got Session
		if err := got.UnmarshalBinary(good[:n]); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("truncated to %d of %d bytes: err %v", n, len(good), err)
		}
	}
	bad := map[string][]byte{
		"trailing byte":       append(append([]byte(nil), good...), 0),
		"wrong version":       append([]byte{9}, good[1:]...),
		"scope record":        append([]byte{formatScopeV1}, good[1:]...),
		"unknown cause":       append([]byte{formatSessionV2, byte(causeCount)}, good[2:]...),
		"string overruns":     {formatSessionV2, 0, 0xff, 0xff, 'a'},
		"garbage":             []byte("not a session record at all, just text of some length"),
		"only header":         {formatSessionV2, 0},
		"zero strings, short": {formatSessionV2, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, b := range bad {
		var got Session
		if err := got.UnmarshalBinary(b); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	for _, field := range []string{"ID", "Policy", "Subject"} {
		s := Session{}
		long := strings.Repeat("x", maxRecordString)
		switch field {
		case "ID":
			s.ID = long
		case "Policy":
			s.Policy = long
		case "Subject":
			s.Subject = long
		}
		if b, err := s.AppendBinary([]byte("keep")); err == nil || string(b) != "keep" {
			t.Errorf("%s of %d bytes: err %v, buffer %q", field, len(long), err, b[:min(len(b), 8)])
		}
	}
}

func TestScopeStateBinary(t *testing.T) {
	for _, st := range []ScopeState{
		{},
		{EndedAt: 1_700_000_000_000, Current: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", KeepUntil: 1_700_000_900_000},
		{EndedAt: math.MaxInt64, Current: strings.Repeat("c", maxRecordString-1), KeepUntil: math.MinInt64},
	} {
		b, err := st.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got ScopeState
		if err := got.UnmarshalBinary(b); err != nil || got != st {
			t.Errorf("round trip: %+v, %v; want %+v", got, err, st)
		}
		for n := range len(b) {
			if err := got.UnmarshalBinary(b[:n]); !errors.Is(err, ErrCorruptRecord) {
				t.Errorf("truncated to %d: %v", n, err)
			}
		}
		if err := got.UnmarshalBinary(append(b, 0)); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("trailing byte: %v", err)
		}
	}
	s := sampleSession()
	sb, _ := s.AppendBinary(nil)
	var st ScopeState
	if err := st.UnmarshalBinary(sb); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("session record read as a scope: %v", err)
	}
	if _, err := (&ScopeState{Current: strings.Repeat("c", maxRecordString)}).AppendBinary(nil); err == nil {
		t.Error("overlong Current accepted")
	}
}

func TestDigests(t *testing.T) {
	distinct := []Digest{
		IdentityDigest("iss", "sub", nil),
		IdentityDigest("iss", "sub", []string{""}),
		IdentityDigest("iss", "sub", []string{"t1"}),
		IdentityDigest("iss", "sub", []string{"t2"}),
		IdentityDigest("iss", "sub", []string{"t1", ""}),
		IdentityDigest("is", "ssub", nil),
		IdentityDigest("iss", "subt1", nil),
		IdentityDigest("other", "sub", nil),
		ScopeDigest("iss", "sub", ""),
		ScopeDigest("iss", "sub", "sid"),
		ScopeDigest("iss", "other", "sid2"),
		ScopeDigest("other", "sub", "sid"),
		ScopeDigest("iss", "sid", ""),
		{},
	}
	seen := map[Digest]int{}
	for i, d := range distinct {
		if j, dup := seen[d]; dup {
			t.Errorf("digest %d equals digest %d", i, j)
		}
		seen[d] = i
	}
	// Deterministic; the scope of a token with a sid ignores the subject.
	if IdentityDigest("iss", "sub", []string{"t1"}) != IdentityDigest("iss", "sub", []string{"t1"}) {
		t.Error("IdentityDigest not deterministic")
	}
	if ScopeDigest("iss", "alice", "sid") != ScopeDigest("iss", "bob", "sid") {
		t.Error("sid scope depends on the subject")
	}
}

func FuzzSessionUnmarshal(f *testing.F) {
	s := sampleSession()
	good, _ := s.AppendBinary(nil)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	f.Add([]byte{formatSessionV2, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{formatSessionV1, 0, 0, 0, 0, 0, 0, 0})
	for _, name := range []string{"session-v1-live.bin", "session-v1-ended.bin"} {
		if b, err := os.ReadFile(filepath.Join("testdata", "records", name)); err == nil {
			f.Add(b)
		}
	}
	empty, _ := (&Session{}).AppendBinary(nil)
	f.Add(empty)
	scope, _ := (&ScopeState{Current: "x", EndedAt: 1}).AppendBinary(nil)
	f.Add(scope)
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Session
		if err := got.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error %v is not ErrCorruptRecord", err)
			}
		} else if b[0] == formatSessionV2 {
			// Whatever decodes re-encodes to the same bytes.
			again, err := got.AppendBinary(nil)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
			}
		} else {
			// An older format is rewritten in the current one, which
			// decodes to the same session.
			again, err := got.AppendBinary(nil)
			var back Session
			if err != nil || back.UnmarshalBinary(again) != nil || back != got {
				t.Fatalf("older format %d does not survive re-encoding: %+v vs %+v (%v)", b[0], back, got, err)
			}
		}
		var st ScopeState
		if err := st.UnmarshalBinary(b); err == nil {
			again, err := st.AppendBinary(nil)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("scope re-encoding differs: %x vs %x (%v)", again, b, err)
			}
		} else if !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("scope error %v", err)
		}
	})
}
