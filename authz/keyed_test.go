package authz

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
)

// keyedSamples are the sessions of the format 4 fixtures: an OIDC session
// with its grant, and an ended token session.
func keyedSamples() map[string]Session {
	oidc := sampleSession()
	oidc.EndedAt, oidc.Cause = 0, CauseNone
	oidc.Method, oidc.Grant, oidc.GrantAt = MethodOIDC, "sealed\x00grant\xff", 1_700_000_050_000
	user := sampleSession()
	user.EndedAt, user.Cause, user.UserScope = 0, CauseNone, true
	user.Scope = ScopeDigest(issuer, "alice", "")
	return map[string]Session{
		"session-v4-keyed-oidc.bin":       oidc,
		"session-v4-keyed-ended.bin":      sampleSession(),
		"session-v4-keyed-user-scope.bin": user,
	}
}

// TestStoredKeyedRecordsLoad: the format 4 fixtures load under their key,
// and are what this binary writes (a change is a new format, DESIGN.md §5).
func TestStoredKeyedRecordsLoad(t *testing.T) {
	for name, want := range keyedSamples() {
		b := mustRead(t, name)
		if KindOf(b) != KindSession {
			t.Errorf("%s: kind %d", name, KindOf(b))
		}
		var got Session
		if err := got.UnmarshalKeyed(b, want.Policy, want.ID); err != nil || got != want {
			t.Errorf("%s: %v\n got %+v\nwant %+v", name, err, got, want)
		}
		if again, _ := want.AppendKeyed(nil); !bytes.Equal(again, b) {
			t.Errorf("%s: the keyed format changed without a new format number", name)
		}
		if err := got.UnmarshalBinary(b); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: read without its key: %v", name, err)
		}
	}
	// The older formats load under a key too, as they were.
	for name, want := range map[string]Session{"session-v1-ended.bin": sampleSession()} {
		var got Session
		if err := got.UnmarshalKeyed(mustRead(t, name), "ignored", "ignored"); err != nil || got != want {
			t.Errorf("%s under a key: %v\n got %+v\nwant %+v", name, err, got, want)
		}
	}
}

func TestKeyedRoundTrip(t *testing.T) {
	live := sampleSession()
	live.EndedAt, live.Cause = 0, CauseNone
	tests := map[string]Session{
		"ended":           sampleSession(),
		"live":            live,
		"zero":            {},
		"extreme times":   {SignIn: math.MinInt64, Created: math.MaxInt64, LastActivity: -1, EndedAt: 1, KeepUntil: math.MaxInt64, GrantAt: math.MinInt64, Cause: CauseSignedOut},
		"longest subject": {Subject: strings.Repeat("s", maxRecordString-1)},
		"binary strings":  {Subject: "é\x00", Grant: "\x00"},
		"largest grant":   {Method: MethodOIDC, Grant: strings.Repeat("g", maxGrant-1), GrantAt: 7},
		"last cause":      {Cause: causeCount - 1, EndedAt: 5, Method: methodCount - 1},
		"user scope":      {UserScope: true, Subject: "u"},
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			s.Policy, s.ID = "crm", "id\x00x"
			prefix := []byte("prefix")
			b, err := s.AppendKeyed(append([]byte(nil), prefix...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("AppendKeyed overwrote its input")
			}
			var got Session
			if err := got.UnmarshalKeyed(b[len(prefix):], s.Policy, s.ID); err != nil {
				t.Fatalf("UnmarshalKeyed: %v", err)
			}
			if got != s {
				t.Errorf("round trip\n got %+v\nwant %+v", got, s)
			}
		})
	}
	for name, s := range map[string]Session{
		"subject": {Subject: strings.Repeat("s", maxRecordString)},
		"grant":   {Grant: strings.Repeat("g", maxGrant)},
	} {
		if _, err := s.AppendKeyed(nil); err == nil {
			t.Errorf("%s too long: encoded", name)
		}
	}
}

func TestKeyedRejectsBadInput(t *testing.T) {
	s := sampleSession()
	s.Grant, s.GrantAt = "", 1_700_000_050_000
	good, err := s.AppendKeyed(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every cut before the subject's last byte is refused (the grant is the
	// rest, so a cut after that is a shorter subject's grant, not damage the
	// format can see: the stores' checksums and the key do that).
	for n := range len(good) - len(s.Subject) {
		var got Session
		if err := got.UnmarshalKeyed(good[:n], "crm", "x"); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("truncated to %d of %d bytes: err %v", n, len(good), err)
		}
	}
	with := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	bad := map[string][]byte{
		"unknown cause":    with(1, byte(causeCount)),
		"unknown method":   with(1, byte(methodCount)<<4),
		"unknown flag":     with(2, 8),
		"overlong varint":  append([]byte{formatSessionKeyed, 0, 0}, bytes.Repeat([]byte{0xff}, 11)...),
		"flagged zero end": append([]byte{formatSessionKeyed, 0, keyedEnded, 0, 0, 0, 0, 0}, make([]byte, 33)...),
		"subject overruns": append(append([]byte{formatSessionKeyed, 0, 0, 0, 0, 0, 0}, make([]byte, 32)...), 5, 'a'),
	}
	for name, b := range bad {
		var got Session
		if err := got.UnmarshalKeyed(b, "crm", "x"); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func FuzzKeyedUnmarshal(f *testing.F) {
	for _, s := range keyedSamples() {
		b, _ := s.AppendKeyed(nil)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	empty, _ := (&Session{}).AppendKeyed(nil)
	f.Add(empty)
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Session
		if err := got.UnmarshalKeyed(b, "p", "id"); err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error %v is not ErrCorruptRecord", err)
			}
			return
		}
		if len(b) == 0 || b[0] != formatSessionKeyed {
			return // an older format: FuzzSessionUnmarshal
		}
		// Whatever decodes survives re-encoding (varints may be spelled
		// longer than AppendKeyed writes them, so not byte for byte).
		again, err := got.AppendKeyed(nil)
		var back Session
		if err != nil || back.UnmarshalKeyed(again, "p", "id") != nil || back != got {
			t.Fatalf("does not survive re-encoding: %+v vs %+v (%v)", back, got, err)
		}
	})
}
