package authz

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The records under testdata/records were written by released binaries
// (and, for the newest format, by this one). Every one of them must still
// load as the session it was: a store holds records across upgrades.
func TestStoredRecordsLoad(t *testing.T) {
	v1 := sampleSession()
	v1Live := v1
	v1Live.EndedAt, v1Live.Cause = 0, CauseNone
	v2 := sampleSession()
	v2.EndedAt, v2.Cause = 0, CauseNone
	v2.Method, v2.Grant, v2.GrantAt = MethodOIDC, "sealed\x00grant\xff", 1_700_000_050_000
	for name, want := range map[string]Session{
		"session-v1-ended.bin": v1,
		"session-v1-live.bin":  v1Live,
		"session-v2-oidc.bin":  v2,
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "records", name))
		if err != nil {
			t.Fatal(err)
		}
		if KindOf(b) != KindSession {
			t.Errorf("%s: kind %d", name, KindOf(b))
		}
		var got Session
		if err := got.UnmarshalBinary(b); err != nil || got != want {
			t.Errorf("%s: %v\n got %+v\nwant %+v", name, err, got, want)
		}
	}
	b, err := os.ReadFile(filepath.Join("testdata", "records", "scope-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var st ScopeState
	want := ScopeState{EndedAt: 1_700_000_200_789, Current: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", KeepUntil: 1_700_030_000_000}
	if err := st.UnmarshalBinary(b); err != nil || st != want || KindOf(b) != KindScope {
		t.Errorf("scope-v1.bin: %+v, %v", st, err)
	}
	// The newest format's fixture is what this binary writes.
	if again, _ := v2.AppendBinary(nil); !bytes.Equal(again, mustRead(t, "session-v2-oidc.bin")) {
		t.Error("the current format changed without a new format number (see DESIGN.md §5)")
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "records", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSessionLayoutConstants(t *testing.T) {
	s := Session{Cause: CauseAdmin, Method: MethodOIDC, SignIn: 1, Created: 2, LastActivity: 3, EndedAt: 4, KeepUntil: 5, GrantAt: 6,
		Identity: Digest{7}, Scope: Digest{8}, ID: "id", Policy: "p", Subject: "s", Grant: "g"}
	b, err := s.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(off int) int64 {
		var v int64
		for _, c := range b[off : off+8] {
			v = v<<8 | int64(c)
		}
		return v
	}
	if b[0] != SessionFormat || b[SessionOffCause] != byte(CauseAdmin) || b[SessionOffMethod] != byte(MethodOIDC) ||
		at(SessionOffSignIn) != 1 || at(SessionOffCreated) != 2 || at(SessionOffLastActivity) != 3 ||
		at(SessionOffEndedAt) != 4 || at(SessionOffKeepUntil) != 5 || at(SessionOffGrantAt) != 6 ||
		b[SessionOffIdentity] != 7 || b[SessionOffScope] != 8 || len(b) != SessionFixedLen+2+len("id")+2+1+2+1+4+1 {
		t.Errorf("layout constants do not describe the encoding: %x", b)
	}
}

func TestAdvance(t *testing.T) {
	s := Session{SignIn: 10, LastActivity: 20, KeepUntil: 30, Grant: "g1", GrantAt: 5}
	if s.Advance(Touch{LastActivity: 19, SignIn: 9, KeepUntil: 29, Grant: "old", GrantAt: 5}) {
		t.Errorf("older times or an equally old grant changed the session: %+v", s)
	}
	if !s.Advance(Touch{LastActivity: 21, Grant: "g2", GrantAt: 6}) || s.LastActivity != 21 || s.SignIn != 10 || s.Grant != "g2" || s.GrantAt != 6 {
		t.Errorf("advance: %+v", s)
	}
	s.EndWith(End{At: 40, Cause: CauseIdle, KeepUntil: 50})
	ended := s
	if s.Advance(Touch{LastActivity: 45, Grant: "g3", GrantAt: 44}) || s != ended {
		t.Errorf("an ended session advanced: %+v", s)
	}
}

func TestEndWith(t *testing.T) {
	s := Session{LastActivity: 20, KeepUntil: 100, Grant: "tokens", GrantAt: 1}
	if !s.EndWith(End{At: 30, Cause: CauseSignedOut, KeepUntil: 90}) {
		t.Fatal("a live session did not end")
	}
	if s.EndedAt != 30 || s.Cause != CauseSignedOut || s.KeepUntil != 100 || s.Grant != "" {
		t.Errorf("ended: %+v (KeepUntil only rises, the grant goes)", s)
	}
	if s.EndWith(End{At: 20, Cause: CauseIdle, KeepUntil: 200}) || s.EndedAt != 30 || s.Cause != CauseSignedOut {
		t.Errorf("a second end changed the first: %+v", s)
	}
}

// TestMergeSession: the one rule for two copies of a record, whichever the
// store reads first (the state file's restore, the near cache).
func TestMergeSession(t *testing.T) {
	const t0, hourMs = 1_700_000_000_000, 3_600_000
	live := Session{ID: "s1", Policy: "crm", SignIn: t0, Created: t0, LastActivity: t0, KeepUntil: t0 + 8*hourMs, Grant: "g1", GrantAt: t0}
	busier := live
	busier.LastActivity, busier.KeepUntil = t0+500, t0+9*hourMs
	refreshed := live
	refreshed.Grant, refreshed.GrantAt = "g2", t0+300
	ended := live
	ended.EndWith(End{At: t0 + 100, Cause: CauseIdle, KeepUntil: t0 + hourMs})
	later := live
	later.EndWith(End{At: t0 + 200, Cause: CauseSignedOut})
	same := live
	same.EndWith(End{At: t0 + 100, Cause: CauseAbsolute})
	for _, tc := range []struct {
		name string
		a, b Session
		want func(Session) bool
	}{
		{"live, busier", live, busier, func(s Session) bool { return s.LastActivity == t0+500 && !s.Ended() }},
		{"live, ended", busier, ended, func(s Session) bool { return s.EndedAt == t0+100 && s.KeepUntil == t0+9*hourMs && s.Grant == "" }},
		{"two ends: the earlier", later, ended, func(s Session) bool { return s.EndedAt == t0+100 && s.Cause == CauseIdle }},
		{"two ends at once: the lower cause", same, ended, func(s Session) bool { return s.Cause == CauseIdle }},
		{"grants: the newer", busier, refreshed, func(s Session) bool { return s.Grant == "g2" && s.LastActivity == t0+500 }},
	} {
		ab, ba := MergeSessions(tc.a, tc.b), MergeSessions(tc.b, tc.a)
		if !tc.want(ab) || ab != ba {
			t.Errorf("%s: merge = %+v, reversed %+v", tc.name, ab, ba)
		}
	}
	sc := MergeScopes(ScopeState{EndedAt: 9, Current: "a", KeepUntil: 5}, ScopeState{EndedAt: 3, KeepUntil: 7})
	if sc != (ScopeState{EndedAt: 9, Current: "a", KeepUntil: 7}) {
		t.Errorf("MergeScopes = %+v", sc)
	}
}

func TestKindOf(t *testing.T) {
	s, _ := (&Session{ID: "x"}).AppendBinary(nil)
	st, _ := (&ScopeState{Current: "x"}).AppendBinary(nil)
	for b, want := range map[string]RecordKind{string(s): KindSession, string(st): KindScope, "": KindUnknown, "\x09xyz": KindUnknown} {
		if got := KindOf([]byte(b)); got != want {
			t.Errorf("KindOf(%x) = %d, want %d", b, got, want)
		}
	}
	var got Session
	if err := got.UnmarshalBinary(st); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("scope decoded as a session: %v", err)
	}
}
