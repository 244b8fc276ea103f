package redis

import (
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestNearCacheKeepsGrantsApart: the live tier holds a sign-in session's
// record without its sealed grant, which is kept apart; Loads and Touches
// answered by the near cache return the record with its grant, a grant the
// near cache forgot is read from Redis again, a refreshed grant replaces the
// kept one, and an end drops it (S15).
func TestNearCacheKeepsGrantsApart(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), Options{})
	rc := srv.Client()
	defer rc.Close()
	r := newSession("grant")
	big := strings.Repeat("g", 2800)
	r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, big, r.Created
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}
	sk := s.sessionKey(r.Policy, r.ID)
	kept := func() (nearGrant, bool) {
		g := &s.near.grants[s.near.stripe(sk)]
		g.mu.Lock()
		defer g.mu.Unlock()
		ng, ok := g.m[sk]
		return ng, ok
	}
	if b, err := s.near.live.Get(sk); err != nil || len(b) >= len(big) {
		t.Fatalf("the live tier's record: %d bytes, %v", len(b), err)
	}
	if ng, ok := kept(); !ok || ng.grant != big || ng.at != r.GrantAt {
		t.Fatalf("grant kept apart: %v, %d bytes at %d", ok, len(ng.grant), ng.at)
	}

	if err := rc.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if lk := mustLoad(t, s, ctx, r); !lk.SessionFound || lk.Session.Grant != big || lk.Session.GrantAt != r.GrantAt {
		t.Fatalf("Load: found %v, %d bytes of grant at %d", lk.SessionFound, len(lk.Session.Grant), lk.Session.GrantAt)
	}
	got, found, err := s.Touch(ctx, r.Policy, r.ID, authz.Touch{LastActivity: r.Created + 5})
	if err != nil || !found || got.Grant != big || got.LastActivity != r.Created+5 {
		t.Fatalf("Touch: %v, %v, %d bytes of grant, activity %d", err, found, len(got.Grant), got.LastActivity)
	}
	if reads := commandCalls(t, rc, "get", "evalsha", "eval"); reads != 0 {
		t.Fatalf("%d commands reached Redis for a Load and a Touch of a cached sign-in session", reads)
	}

	// A grant the near cache forgot: the record is a miss, read from Redis.
	s.near.forgetGrants()
	if lk := mustLoad(t, s, ctx, r); lk.Session.Grant != big || lk.Session.LastActivity != r.Created+5 {
		t.Fatalf("Load after the grant was forgotten: %d bytes of grant, activity %d", len(lk.Session.Grant), lk.Session.LastActivity)
	}
	if ng, ok := kept(); !ok || ng.grant != big {
		t.Fatalf("the grant read from Redis is not kept again: %v", ok)
	}

	refreshed := strings.Repeat("h", 2900)
	if _, _, err := s.Touch(ctx, r.Policy, r.ID, authz.Touch{Grant: refreshed, GrantAt: r.GrantAt + 10}); err != nil {
		t.Fatal(err)
	}
	if lk := mustLoad(t, s, ctx, r); lk.Session.Grant != refreshed || lk.Session.GrantAt != r.GrantAt+10 {
		t.Fatalf("Load after a refresh: %d bytes of grant at %d", len(lk.Session.Grant), lk.Session.GrantAt)
	}
	if ng, ok := kept(); !ok || ng.grant != refreshed {
		t.Fatalf("the refreshed grant is not the one kept: %v", ok)
	}

	now := s.now()
	if _, ended, err := s.End(ctx, r.Policy, r.ID, r.Scope, authz.End{Cause: authz.CauseIdPRevoked, At: now, KeepUntil: now + 60_000}); err != nil || !ended {
		t.Fatalf("End: %v, %v", ended, err)
	}
	if ng, ok := kept(); ok {
		t.Fatalf("an ended session's grant is still kept (%d bytes)", len(ng.grant))
	}
	if lk := mustLoad(t, s, ctx, r); !lk.Session.Ended() || lk.Session.Grant != "" {
		t.Fatalf("Load after the end: ended %v, %d bytes of grant", lk.Session.Ended(), len(lk.Session.Grant))
	}
}
