package memory

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/allegro/bigcache/v3"

	"github.com/sessiongate/sessiongate/authz"
)

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func signedIn(id string, grant string, at int64) *authz.Session {
	r := newSession(id, alice)
	r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, grant, at
	return r
}

// TestGrantKeptApart: the session record holds no tokens, activity does not
// rewrite them, a refresh does, and an end deletes them from both tiers
// (S15).
func TestGrantKeptApart(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	r := signedIn("s1", "sealed-grant-1", t0)
	mustBegin(t, s, r)
	sk := sessionKey("crm", "s1")
	rec, _ := get(s.hot, sk)
	if bytes.Contains(rec, []byte("sealed-grant")) {
		t.Errorf("the session record holds the grant: %q", rec)
	}
	grantRec := func() []byte {
		b, _ := get(s.hot, grantKeyOf(sk))
		if b == nil {
			b, _ = get(s.cold, grantKeyOf(sk))
		}
		return b
	}
	first := grantRec()
	if !bytes.HasSuffix(first, []byte("sealed-grant-1")) {
		t.Fatalf("grant record %q", first)
	}
	for i := range int64(5) {
		got, found, err := s.Touch(ctx, "crm", "s1", authz.Touch{LastActivity: t0 + 10 + i})
		if err != nil || !found || got.Grant != "sealed-grant-1" {
			t.Fatalf("Touch = %+v, %v, %v", got, found, err)
		}
	}
	// The grant record is still the one Begin wrote.
	if !bytes.Equal(grantRec(), first) {
		t.Error("activity rewrote the grant record")
	}
	if l := mustLoad(t, s, "s1", alice); l.Session.Grant != "sealed-grant-1" || l.Session.LastActivity != t0+14 {
		t.Errorf("Load after activity: %+v", l.Session)
	}
	if got, _, err := s.Touch(ctx, "crm", "s1", authz.Touch{Grant: "sealed-grant-2", GrantAt: t0 + 20}); err != nil || got.Grant != "sealed-grant-2" {
		t.Fatalf("refresh: %+v, %v", got, err)
	}
	if l := mustLoad(t, s, "s1", alice); l.Session.Grant != "sealed-grant-2" || l.Session.GrantAt != t0+20 {
		t.Errorf("Load after a refresh: %+v", l.Session)
	}
	mustEnd(t, s, "s1", alice, signOut)
	if b := grantRec(); b != nil {
		t.Errorf("the grant outlived its session: %q", b)
	}
	if l := mustLoad(t, s, "s1", alice); !l.Session.Ended() || l.Session.Grant != "" {
		t.Errorf("ended: %+v", l.Session)
	}
}

// TestGrantsInUseAreNotCopied: a sign-in session's Loads hand out the grant
// they cached instead of copying it out of bigcache each time, a refresh's
// grant replaces it, and an end leaves no grant in the cache (S15), even
// when it races a Load that is caching it.
func TestGrantsInUseAreNotCopied(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	mustBegin(t, s, signedIn("s1", "sealed-grant-1", t0))
	gk := grantKeyOf(sessionKey("crm", "s1"))
	first, second := mustLoad(t, s, "s1", alice).Session.Grant, mustLoad(t, s, "s1", alice).Session.Grant
	if first != "sealed-grant-1" || unsafe.StringData(first) != unsafe.StringData(second) {
		t.Fatalf("two Loads copied the grant: %q at %p, %q at %p", first, unsafe.StringData(first), second, unsafe.StringData(second))
	}
	if _, _, err := s.Touch(ctx, "crm", "s1", authz.Touch{Grant: "sealed-grant-2", GrantAt: t0 + 20}); err != nil {
		t.Fatal(err)
	}
	if g := mustLoad(t, s, "s1", alice).Session.Grant; g != "sealed-grant-2" {
		t.Fatalf("Load after a refresh: %q", g)
	}
	if g, ok := s.grants.get(gk); !ok || g.grant != "sealed-grant-2" {
		t.Fatalf("cached after a refresh: %+v, %v", g, ok)
	}
	mustEnd(t, s, "s1", alice, signOut)
	if g, ok := s.grants.get(gk); ok {
		t.Fatalf("an ended session's grant is cached: %+v", g)
	}
	for i := range 300 {
		id := fmt.Sprint("race-", i)
		mustBegin(t, s, signedIn(id, "sealed-"+id, t0))
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, _, err := s.End(ctx, "crm", id, alice, signOut); err != nil {
				t.Error(err)
			}
		})
		for range 3 {
			if _, err := s.Load(ctx, "crm", id, alice); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		if g, ok := s.grants.get(grantKeyOf(sessionKey("crm", id))); ok {
			t.Fatalf("%s: an ended session's grant is cached: %+v", id, g)
		}
	}
}

// TestGrantLoadIsConsistent: a Load racing refreshes sees each grant with
// its own grant-at, never another's.
func TestGrantLoadIsConsistent(t *testing.T) {
	s := newStore(t, Options{Clock: newClock()})
	mustBegin(t, s, signedIn("s1", fmt.Sprint("grant-", t0), t0))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := int64(1); i <= 500; i++ {
			at := t0 + i
			if _, _, err := s.Touch(ctx, "crm", "s1", authz.Touch{Grant: fmt.Sprint("grant-", at), GrantAt: at, LastActivity: at}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 2000 {
		l := mustLoad(t, s, "s1", alice)
		if l.Session.Grant != fmt.Sprint("grant-", l.Session.GrantAt) {
			t.Fatalf("grant %q with grant-at %d", l.Session.Grant, l.Session.GrantAt)
		}
	}
	wg.Wait()
}

// TestStateSplitsEmbeddedGrants: a state file written before grants were
// kept apart (records holding their grant) loads with its grants, which
// the store then keeps apart.
func TestStateSplitsEmbeddedGrants(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	r := signedIn("s1", "sealed-old", t0)
	v, err := r.AppendBinary(nil) // format 3: the grant inside
	if err != nil {
		t.Fatal(err)
	}
	b, start := reserveFrame([]byte(snapshotMagicV1))
	mustWrite(t, path, closeFrame(appendPair(b, sessionKey("crm", "s1"), v), start))
	s := openState(t, path, clock)
	defer s.Close()
	if l := mustLoad(t, s, "s1", alice); l.Session.Grant != "sealed-old" || l.Session.GrantAt != t0 {
		t.Errorf("loaded: %+v", l.Session)
	}
	if rec, _ := get(s.hot, sessionKey("crm", "s1")); bytes.Contains(rec, []byte("sealed-old")) {
		t.Error("the loaded record still holds its grant")
	}
}

// TestStateGrantAndRecordOfTwoInstants: a snapshot is not taken at one
// instant: it may hold a session record of one grant-at and the grant
// record of the next (a refresh in between). The session loads with the
// grant record's grant, not as damage; and an ended session's grant record
// is dropped, whichever comes first in the file.
func TestStateGrantAndRecordOfTwoInstants(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	live := signedIn("live", "", t0)
	ended := signedIn("gone", "", t0)
	ended.EndWith(signOut)
	grantOf := func(at int64, grant string) []byte {
		g := binary.BigEndian.AppendUint64(nil, uint64(t0+8*hourMs))
		g = binary.BigEndian.AppendUint64(g, uint64(at))
		return append(g, grant...)
	}
	b, start := reserveFrame([]byte(snapshotMagicV1))
	for _, p := range []struct {
		k string
		r *authz.Session
		g []byte
	}{
		{k: grantKeyOf(sessionKey("crm", "gone")), g: grantOf(t0, "sealed-gone")},
		{k: sessionKey("crm", "live"), r: live},
		{k: grantKeyOf(sessionKey("crm", "live")), g: grantOf(t0+5, "sealed-newer")},
		{k: sessionKey("crm", "gone"), r: ended},
	} {
		v := p.g
		if p.r != nil {
			var err error
			if v, err = p.r.AppendKeyed(nil); err != nil {
				t.Fatal(err)
			}
		}
		b = appendPair(b, p.k, v)
	}
	mustWrite(t, path, closeFrame(b, start))
	s := openState(t, path, clock)
	defer s.Close()
	if l := mustLoad(t, s, "live", alice); l.Session.Grant != "sealed-newer" || l.Session.GrantAt != t0+5 {
		t.Errorf("live: %+v", l.Session)
	}
	for tier, c := range map[string]*bigcache.BigCache{"hot": s.hot, "cold": s.cold} {
		if v, _ := get(c, grantKeyOf(sessionKey("crm", "gone"))); v != nil {
			t.Errorf("an ended session's grant in %s: %q", tier, v)
		}
	}
}

// TestStateCrashKeepsRefreshedGrant: the activity journal carries a
// refreshed grant, which a crash right after keeps.
func TestStateCrashKeepsRefreshedGrant(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "state")
	s := openState(t, path, clock, func(o *Options) { o.ActivityInterval = time.Hour })
	mustBegin(t, s, signedIn("s1", "sealed-1", t0))
	if err := s.state.flushActivity(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Touch(ctx, "crm", "s1", authz.Touch{Grant: "sealed-2", GrantAt: t0 + 5, LastActivity: t0 + 5}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Touch(ctx, "crm", "s1", authz.Touch{LastActivity: t0 + 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.state.flushActivity(); err != nil {
		t.Fatal(err)
	}
	crash(s)
	s = openState(t, path, clock)
	defer s.Close()
	if l := mustLoad(t, s, "s1", alice); l.Session.Grant != "sealed-2" || l.Session.GrantAt != t0+5 || l.Session.LastActivity != t0+9 {
		t.Errorf("after a crash: %+v", l.Session)
	}
}
