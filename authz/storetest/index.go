package storetest

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

const issuer = "https://issuer.test"

func index(t *testing.T, s authz.Store) authz.SessionIndex {
	t.Helper()
	ix, ok := s.(authz.SessionIndex)
	if !ok {
		t.Fatalf("%T does not implement authz.SessionIndex", s)
	}
	return ix
}

// userSession returns a live session of subject sub, with provider session
// sid ("": none, the user's scope).
func userSession(sub, sid string) *authz.Session {
	r := newSession()
	r.Subject = sub
	r.Identity = authz.IdentityDigest(issuer, sub, nil)
	r.Scope = authz.ScopeDigest(issuer, sub, sid)
	return r
}

func ids(list []authz.Session) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

func want(rs ...*authz.Session) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	slices.Sort(out)
	return out
}

func indexed(t *testing.T, s authz.Store, policy string, key authz.Digest) []string {
	t.Helper()
	list, err := index(t, s).Indexed(ctx, policy, key)
	if err != nil {
		t.Fatalf("Indexed: %v", err)
	}
	return ids(list)
}

func all(t *testing.T, s authz.Store, policy string) []string {
	t.Helper()
	var list []authz.Session
	if err := index(t, s).Sessions(ctx, policy, func(r authz.Session) error { list = append(list, r); return nil }); err != nil {
		t.Fatalf("Sessions: %v", err)
	}
	return ids(list)
}

// testIndex: sessions are found by user and by provider session, within
// their policy, live and ended, until their KeepUntil.
func testIndex(t *testing.T, s authz.Store, _ *config) {
	u := "idx-user-" + strconv.FormatInt(seq.Add(1), 10)
	a, b, c := userSession(u, "sid-a-"+u), userSession(u, "sid-b-"+u), userSession(u, "")
	other := userSession("other-"+u, "")
	elsewhere := userSession(u, "sid-a-"+u)
	elsewhere.Policy = policy + "-other"
	for _, r := range []*authz.Session{a, b, c, other, elsewhere} {
		begin(t, s, r)
	}
	if got := indexed(t, s, policy, authz.SubjectKey(u)); !slices.Equal(got, want(a, b, c)) {
		t.Errorf("by user = %v, want %v", got, want(a, b, c))
	}
	if got := indexed(t, s, policy, authz.ScopeDigest(issuer, "", "sid-a-"+u)); !slices.Equal(got, want(a)) {
		t.Errorf("by sid = %v, want %v", got, want(a))
	}
	if got := indexed(t, s, policy, authz.ScopeDigest(issuer, u, "")); !slices.Equal(got, want(c)) {
		t.Errorf("by user scope = %v, want %v", got, want(c))
	}
	if got := indexed(t, s, elsewhere.Policy, authz.SubjectKey(u)); !slices.Equal(got, want(elsewhere)) {
		t.Errorf("another policy's index = %v, want %v", got, want(elsewhere))
	}
	if got := indexed(t, s, policy, authz.SubjectKey("nobody-"+u)); len(got) != 0 {
		t.Errorf("an unknown user has sessions: %v", got)
	}
	got := all(t, s, policy)
	for _, r := range []*authz.Session{a, b, c, other} {
		if !slices.Contains(got, r.ID) {
			t.Errorf("Sessions(policy) misses %s", r.Subject)
		}
	}
	if slices.Contains(got, elsewhere.ID) {
		t.Error("Sessions(policy) lists another policy's session")
	}
	if got := all(t, s, ""); !slices.Contains(got, elsewhere.ID) || !slices.Contains(got, a.ID) {
		t.Error(`Sessions("") misses a policy`)
	}
	// An ended session is still found, ended.
	end(t, s, b, authz.End{Cause: authz.CauseSignedOut, At: now(), KeepUntil: now() + hour})
	list, err := index(t, s).Indexed(ctx, policy, authz.SubjectKey(u))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if r.ID == b.ID && (!r.Ended() || r.Cause != authz.CauseSignedOut) {
			t.Errorf("an ended session is indexed as %+v", r)
		}
	}
	if len(list) != 3 {
		t.Errorf("after an end, %d indexed sessions; want 3", len(list))
	}
}

// testIndexKeepUntil: the index forgets a session with its record, and
// keeps it as long as a Touch keeps the record.
func testIndexKeepUntil(t *testing.T, s authz.Store, _ *config) {
	u := "idx-keep-" + strconv.FormatInt(seq.Add(1), 10)
	short, kept := userSession(u, "s1"), userSession(u, "s2")
	short.KeepUntil, kept.KeepUntil = now()+300, now()+300
	begin(t, s, short)
	begin(t, s, kept)
	_, raised, err := s.Touch(ctx, policy, kept.ID, authz.Touch{KeepUntil: now() + hour})
	if err != nil {
		t.Fatal(err)
	}
	if !raised {
		// A slow machine passed the KeepUntil before the Touch: nothing
		// was kept, and nothing more to check without a timing assumption.
		if now() < kept.KeepUntil {
			t.Error("Touch lost a record before its KeepUntil")
		}
		return
	}
	waitUntil(t, "a session past its KeepUntil leaves the index", func() bool {
		return slices.Equal(indexed(t, s, policy, authz.SubjectKey(u)), want(kept))
	})
	time.Sleep(300 * time.Millisecond) // past the Begin's KeepUntil of kept too
	if got := indexed(t, s, policy, authz.SubjectKey(u)); !slices.Equal(got, want(kept)) {
		t.Errorf("a session whose KeepUntil a Touch raised left the index: %v", got)
	}
}

// testEndSessions: the rules of ends decided outside a request (S18, S19),
// on this store: by user every session of the user in the policy, by sid
// that provider session's, with both the sid's and the user's sid-less
// ones; the scopes are raised, so a sign-in up to the end opens nothing.
func testEndSessions(t *testing.T, s authz.Store, _ *config) {
	p := &authz.Policy{Name: policy, AbsoluteTimeout: time.Hour}
	n := strconv.FormatInt(seq.Add(1), 10)
	u, v := "end-u-"+n, "end-v-"+n
	ua, ub, unone := userSession(u, "sa-"+n), userSession(u, "sb-"+n), userSession(u, "")
	va, vnone := userSession(v, "sv-"+n), userSession(v, "")
	for _, r := range []*authz.Session{ua, ub, unone, va, vnone} {
		begin(t, s, r)
	}
	endBy := func(sel authz.Selector, cause authz.EndCause) []string {
		t.Helper()
		sel.Issuer = issuer
		list, err := authz.EndSessions(ctx, s, authz.NopEvents{}, p, sel, cause, now())
		if err != nil {
			t.Fatalf("EndSessions(%+v): %v", sel, err)
		}
		return ids(list)
	}
	if got := endBy(authz.Selector{SID: "sa-" + n}, authz.CauseIdPLogout); !slices.Equal(got, want(ua)) {
		t.Errorf("by sid ended %v, want %v", got, want(ua))
	}
	if got := endBy(authz.Selector{SID: "sv-" + n, Subject: v}, authz.CauseIdPLogout); !slices.Equal(got, want(va, vnone)) {
		t.Errorf("by sid and sub ended %v, want %v", got, want(va, vnone))
	}
	if got := endBy(authz.Selector{Subject: u}, authz.CauseAdmin); !slices.Equal(got, want(ub, unone)) {
		t.Errorf("by user ended %v, want %v (ua had ended already)", got, want(ub, unone))
	}
	for _, r := range []*authz.Session{ua, ub, unone, va, vnone} {
		lk := load(t, s, r)
		if !lk.Session.Ended() {
			t.Errorf("%s still live", r.Subject)
		}
		if lk.Scope.EndedAt < r.Created {
			t.Errorf("the scope of %s's session was not raised: %+v", r.Subject, lk.Scope)
		}
	}
	if lk := load(t, s, ub); lk.Session.Cause != authz.CauseAdmin {
		t.Errorf("cause = %v, want admin", lk.Session.Cause)
	}
	// A sid no session has yet (a callback in flight) is raised too.
	fresh := authz.ScopeDigest(issuer, "", "in-flight-"+n)
	endBy(authz.Selector{SID: "in-flight-" + n}, authz.CauseIdPLogout)
	if lk, err := s.Load(ctx, policy, "", fresh); err != nil || lk.Scope.EndedAt == 0 {
		t.Errorf("the scope of a sid without sessions was not raised: %+v, %v", lk, err)
	}
	if _, err := authz.EndSessions(ctx, s, authz.NopEvents{}, p, authz.Selector{Issuer: issuer}, authz.CauseAdmin, now()); !errors.Is(err, authz.ErrNoSelector) {
		t.Errorf("an empty selector = %v", err)
	}
}

// testConcurrentBeginAndEnd: a session signed in before an end of its
// provider session, that begins while the end runs (a callback in flight),
// is ended or dead with its scope: never left live.
func testConcurrentBeginAndEnd(t *testing.T, s authz.Store, _ *config) {
	p := &authz.Policy{Name: policy, AbsoluteTimeout: time.Hour}
	for i := range 20 {
		u := "race-" + strconv.FormatInt(seq.Add(1), 10)
		r := userSession(u, "sid-"+u)
		at := now()
		r.Created = at - 1 // signed in before the end
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = s.Begin(ctx, r) }()
		go func() {
			defer wg.Done()
			if _, err := authz.EndSessions(ctx, s, authz.NopEvents{}, p, authz.Selector{Issuer: issuer, SID: "sid-" + u}, authz.CauseIdPLogout, at); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		lk := load(t, s, r)
		if !lk.SessionFound || !lk.Session.Ended() && lk.Scope.EndedAt < r.Created {
			t.Fatalf("round %d: a session begun during its user's end is live: %+v", i, lk)
		}
	}
}

// testIndexSharedScope: every session of a scope is found by it, not only
// the scope's current one: begun one after another, begun at once, ended,
// and after a restart.
func testIndexSharedScope(t *testing.T, s authz.Store, c *config) {
	u := "idx-shared-" + strconv.FormatInt(seq.Add(1), 10)
	scope := authz.ScopeDigest(issuer, "", "sid-"+u)
	var rs []*authz.Session
	for range 3 {
		r := userSession(u, "sid-"+u)
		begin(t, s, r)
		rs = append(rs, r)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			r := userSession(u, "sid-"+u)
			if err := s.Begin(ctx, r); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			rs = append(rs, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	if got := indexed(t, s, policy, scope); !slices.Equal(got, want(rs...)) {
		t.Errorf("by scope = %v, want %v", got, want(rs...))
	}
	if got := indexed(t, s, policy, authz.SubjectKey(u)); !slices.Equal(got, want(rs...)) {
		t.Errorf("by user = %v, want %v", got, want(rs...))
	}
	end(t, s, rs[1], authz.End{Cause: authz.CauseSignedOut, At: now(), KeepUntil: now() + hour})
	if got := indexed(t, s, policy, scope); !slices.Equal(got, want(rs...)) {
		t.Errorf("by scope after an end = %v, want %v", got, want(rs...))
	}
	if c.restart == nil {
		return
	}
	s = c.restart(s)
	if got := indexed(t, s, policy, scope); !slices.Equal(got, want(rs...)) {
		t.Errorf("by scope after a restart = %v, want %v", got, want(rs...))
	}
}

// testIndexUserScope: a session filed under the user's own scope alone
// (UserScope: its token had no sid) is found by user, beside the user's
// sessions with a sid, ended by user, and still found after a restart.
func testIndexUserScope(t *testing.T, s authz.Store, c *config) {
	u := "idx-userscope-" + strconv.FormatInt(seq.Add(1), 10)
	withSID, own := userSession(u, "sid-"+u), userSession(u, "")
	own.UserScope = true
	other := userSession("other-"+u, "")
	other.UserScope = true
	for _, r := range []*authz.Session{withSID, own, other} {
		begin(t, s, r)
	}
	p := &authz.Policy{Name: policy, AbsoluteTimeout: time.Hour}
	sel := authz.Selector{Issuer: issuer, Subject: u}
	list, err := authz.Select(ctx, index(t, s), p, sel)
	if err != nil || !slices.Equal(ids(list), want(withSID, own)) {
		t.Fatalf("by user = %v, %v; want %v", ids(list), err, want(withSID, own))
	}
	if got := indexed(t, s, policy, own.Scope); !slices.Equal(got, want(own)) {
		t.Errorf("by the user's scope = %v, want %v", got, want(own))
	}
	if c.restart != nil {
		s = c.restart(s)
		if list, err := authz.Select(ctx, index(t, s), p, sel); err != nil || !slices.Equal(ids(list), want(withSID, own)) {
			t.Errorf("by user after a restart = %v, %v; want %v", ids(list), err, want(withSID, own))
		}
	}
	ended, err := authz.EndSessions(ctx, s, authz.NopEvents{}, p, sel, authz.CauseAdmin, now())
	if err != nil || !slices.Equal(ids(ended), want(withSID, own)) {
		t.Errorf("ended by user = %v, %v; want %v", ids(ended), err, want(withSID, own))
	}
	if lk := load(t, s, other); !lk.SessionFound || lk.Session.Ended() {
		t.Errorf("another user's session: %+v", lk)
	}
}
