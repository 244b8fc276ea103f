package redis

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestScriptsFollowTheRules round-trips records between authz's codec and
// the Lua scripts on a real Redis: every script must do to a record exactly
// what authz's rules (Session.Advance, Session.EndWith) do to the session,
// and refuse what authz cannot decode. The scripts' offsets are generated
// from authz's layout constants; this is the proof that they are right.
func TestScriptsFollowTheRules(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	s := &Store{c: c, o: Options{Prefix: "t"}, channel: "t:changes"}
	s.setErr("test")

	base := authz.Session{
		ID: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", Policy: "crm", Subject: "alice@example.com",
		Identity: authz.IdentityDigest("iss", "alice", nil), Scope: authz.ScopeDigest("iss", "alice", "sid"),
		SignIn: 1_000, Created: 1_000, LastActivity: 2_000, KeepUntil: 4_102_444_800_000,
	}
	oidc := base
	oidc.Method, oidc.Grant, oidc.GrantAt = authz.MethodOIDC, "sealed grant \x00\xff with some length", 1_500
	touches := []authz.Touch{
		{},
		{LastActivity: 3_000},
		{LastActivity: 1_500, SignIn: 900, KeepUntil: 5},
		{SignIn: 2_500, KeepUntil: 4_102_444_900_000},
		{Grant: "a newer grant", GrantAt: 1_600},
		{Grant: "an older grant", GrantAt: 1_400, LastActivity: 3_100},
		{Grant: string(make([]byte, 70_000)), GrantAt: 9_000},
	}
	ends := []authz.End{{At: 2_500, Cause: authz.CauseIdle, KeepUntil: 4_102_444_900_000}, {At: 2_600, Cause: authz.CauseIdPRevoked, KeepUntil: 1}}

	put := func(t *testing.T, k string, b []byte) {
		t.Helper()
		if err := c.Set(ctx, k, b, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	get := func(t *testing.T, k string) authz.Session {
		t.Helper()
		b, err := c.Get(ctx, k).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		var r authz.Session
		if err := r.UnmarshalBinary(b); err != nil {
			t.Fatalf("the script wrote a record authz cannot read: %v", err)
		}
		return r
	}
	for _, start := range []authz.Session{base, oidc} {
		for _, ended := range []bool{false, true} {
			start := start
			if ended {
				start.EndWith(authz.End{At: 1_800, Cause: authz.CauseSignedOut, KeepUntil: 4_102_444_800_000})
			}
			b, err := start.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, tc := range touches {
				k := "t:s:touch"
				put(t, k, b)
				want := start
				want.Advance(tc)
				if _, err := s.runSession(ctx, touchScript, k, tc.LastActivity, tc.SignIn, tc.KeepUntil, tc.GrantAt, tc.Grant, s.channel).Text(); err != nil {
					t.Fatalf("touch %d: %v", i, err)
				}
				if got := get(t, k); got != want {
					t.Errorf("touch %d of %+v:\n got %+v\nwant %+v", i, start, got, want)
				}
			}
			for i, e := range ends {
				k := "t:s:end"
				put(t, k, b)
				want := start
				first := want.EndWith(e)
				vals, err := s.runSession(ctx, endScript, k, e.At, int64(e.Cause), e.KeepUntil, s.channel).Slice()
				if err != nil {
					t.Fatalf("end %d: %v", i, err)
				}
				if got := get(t, k); got != want || (vals[0].(int64) == 1) != first {
					t.Errorf("end %d of %+v:\n got %+v (%v)\nwant %+v (%v)", i, start, got, vals[0], want, first)
				}
			}
		}
	}

	// A record written by an older binary is upgraded, then touched.
	old, err := os.ReadFile(filepath.Join("..", "..", "authz", "testdata", "records", "session-v1-live.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var want authz.Session
	if err := want.UnmarshalBinary(old); err != nil {
		t.Fatal(err)
	}
	want.KeepUntil = 4_102_444_800_000 // the fixture's has passed; Redis would expire it
	old, _ = reencodeV1(t, old, want.KeepUntil)
	put(t, "t:s:old", old)
	tc := authz.Touch{LastActivity: want.LastActivity + 1}
	want.Advance(tc)
	if _, err := s.runSession(ctx, touchScript, "t:s:old", tc.LastActivity, 0, 0, 0, "", s.channel).Text(); err != nil {
		t.Fatalf("touch of an older format: %v", err)
	}
	if got := get(t, "t:s:old"); got != want {
		t.Errorf("older format touched:\n got %+v\nwant %+v", got, want)
	}

	// Anything authz refuses, the scripts refuse as corrupt.
	good, _ := oidc.AppendBinary(nil)
	for name, b := range map[string][]byte{
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte(nil), good...), 0),
		"short":          good[:authz.SessionFixedLen],
		"unknown format": append([]byte{99}, good[1:]...),
		"scope":          {authz.ScopeFormat, 0, 0},
	} {
		put(t, "t:s:bad", b)
		err := touchScript.Run(ctx, c, []string{"t:s:bad"}, 1, 0, 0, 0, "", s.channel).Err()
		if !isCorrupt(err) {
			t.Errorf("%s: touch = %v, want a corrupt record", name, err)
		}
		var r authz.Session
		if r.UnmarshalBinary(b) == nil {
			t.Errorf("%s: authz decodes it", name)
		}
	}
}

// reencodeV1 sets the KeepUntil of a first-format record (its last 8 bytes).
func reencodeV1(t *testing.T, b []byte, keep int64) ([]byte, error) {
	t.Helper()
	out := append([]byte(nil), b...)
	for i := range 8 {
		out[len(out)-1-i] = byte(keep >> (8 * i))
	}
	return out, nil
}
