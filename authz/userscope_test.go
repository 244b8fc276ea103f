package authz

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// TestUserScope: a session begun from a token without sid is marked as
// filed under the user's scope alone; one with a sid, or from claims whose
// scope is not the user's own (no issuer to check it by), is not.
func TestUserScope(t *testing.T) {
	const now = int64(1_800_000_000_000)
	p := testPolicy("app", []string{"app.example.com"}, nil)
	for _, tc := range []struct {
		name string
		cl   Claims
		want bool
	}{
		{"no sid", Claims{Issuer: "iss", Subject: "alice", Scope: ScopeDigest("iss", "alice", "")}, true},
		{"a sid", Claims{Issuer: "iss", Subject: "alice", SID: "s1", Scope: ScopeDigest("iss", "alice", "s1")}, false},
		{"a sid's scope, sid not given", Claims{Issuer: "iss", Subject: "alice", Scope: ScopeDigest("iss", "alice", "s1")}, false},
		{"no issuer", Claims{Subject: "alice", Scope: ScopeDigest("", "alice", "")}, false},
	} {
		cl := tc.cl
		cl.Identity, cl.IssuedAt, cl.Expiry = IdentityDigest(cl.Issuer, cl.Subject, nil), now-1, now+60_000
		o := Decide(p, &cl, &Facts{}, now, false)
		if o.Verdict != VerdictBegin || o.New.UserScope != tc.want {
			t.Errorf("%s: %+v", tc.name, o)
			continue
		}
		if k := IndexKeys(o.New); tc.want != (k == [2]Digest{cl.Scope, cl.Scope}) || k[1] != cl.Scope {
			t.Errorf("%s: IndexKeys = %x", tc.name, k)
		}
	}
}

// TestSelectByUserFindsUserScope: Select by user looks under the user's
// scope too, where sessions without sid are filed alone.
func TestSelectByUserFindsUserScope(t *testing.T) {
	st := newMemStore(testutil.NewClock(time.UnixMilli(1_800_000_000_000)))
	own := Session{ID: "own", Policy: "app", Subject: "alice", Scope: ScopeDigest("iss", "alice", ""), UserScope: true, KeepUntil: 1 << 60}
	withSID := Session{ID: "sid", Policy: "app", Subject: "alice", Scope: ScopeDigest("iss", "alice", "s1"), KeepUntil: 1 << 60}
	for _, s := range []Session{own, withSID} {
		if err := st.Begin(context.Background(), &s); err != nil {
			t.Fatal(err)
		}
	}
	p := &Policy{Name: "app", AbsoluteTimeout: time.Hour}
	list, err := Select(context.Background(), st, p, Selector{Issuer: "iss", Subject: "alice"})
	var got []string
	for _, s := range list {
		got = append(got, s.ID)
	}
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"own", "sid"}) {
		t.Errorf("Select by user = %v, %v", got, err)
	}
}
