package memory

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// TestStateCrashKeepsOutsideEnds (S20): ends decided outside a request (a
// back-channel logout, an administrator) go through the same fsynced
// journal as sign-outs: after a kill -9 they are all there, and the index
// still finds the user's sessions.
func TestStateCrashKeepsOutsideEnds(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock)
	laptop := newSession("laptop", authz.ScopeDigest("https://idp", "alice", "sid-laptop"))
	phone := newSession("phone", authz.ScopeDigest("https://idp", "alice", "sid-phone"))
	mustBegin(t, s, laptop)
	mustBegin(t, s, phone)
	if err := s.Close(); err != nil { // the snapshot holds both sessions and the index
		t.Fatal(err)
	}
	s = openState(t, path, clock)
	p := &authz.Policy{Name: "crm", AbsoluteTimeout: 8 * time.Hour}
	at := t0 + 10
	ended, err := authz.EndSessions(context.Background(), s, authz.NopEvents{}, p,
		authz.Selector{Issuer: "https://idp", Subject: "alice"}, authz.CauseAdmin, at)
	if err != nil || len(ended) != 2 {
		t.Fatalf("EndSessions = %d, %v", len(ended), err)
	}
	crash(s)

	s = openState(t, path, clock)
	defer s.Close()
	wantEnded(t, s, "laptop", laptop.Scope, authz.CauseAdmin, at)
	wantEnded(t, s, "phone", phone.Scope, authz.CauseAdmin, at)
	if l := mustLoad(t, s, "", alice); l.Scope.EndedAt != at {
		t.Errorf("the user's scope after the crash: %+v", l.Scope)
	}
	got, err := s.Indexed(context.Background(), "crm", authz.SubjectKey("alice"))
	if err != nil || len(got) != 2 {
		t.Errorf("index after the crash: %d, %v", len(got), err)
	}
}
