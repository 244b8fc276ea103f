// Package storetest is the conformance suite of authz.Store, in the manner
// of testing/fstest: every store, and every fake of one, runs Run and so
// keeps the same promises (atomic read-modify-writes, times that only grow,
// ends that stay ended, scope ends that only rise, KeepUntil, corrupt
// records reported, one-time claims, grant replacement, the index of
// sessions by user and provider session and the ends decided on it). A new store is
// done when Run passes against it.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Option adapts Run to what a store can do beyond the contract.
type Option func(*config)

type config struct {
	restart func(authz.Store) authz.Store
	corrupt func(s authz.Store, policy, id string)
}

// Restart makes Run also check that the store keeps everything across a
// restart: restart stops s and returns it opened again on the same data.
func Restart(restart func(s authz.Store) authz.Store) Option {
	return func(c *config) { c.restart = restart }
}

// Corrupt makes Run also check that a damaged record is reported as
// authz.ErrCorruptRecord, never as absent (S9): corrupt overwrites the
// stored record of session id of policy with bytes no codec reads.
func Corrupt(corrupt func(s authz.Store, policy, id string)) Option {
	return func(c *config) { c.corrupt = corrupt }
}

// Run checks the stores newStore returns against the authz.Store contract.
// Each call of newStore must return an empty store on the wall clock (the
// caller closes it, in a t.Cleanup). Stores that expire records on their
// own clock (Redis) make the KeepUntil checks wait a little.
func Run(t *testing.T, newStore func() authz.Store, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	run := func(name string, f func(t *testing.T, s authz.Store, c *config)) {
		t.Run(name, func(t *testing.T) { f(t, newStore(), &c) })
	}
	run("LoadUnknown", testLoadUnknown)
	run("BeginLoad", testBeginLoad)
	run("TouchOnlyGrows", testTouchOnlyGrows)
	run("EndIsFinal", testEndIsFinal)
	run("ScopeEndsOnlyRise", testScopeEndsOnlyRise)
	run("Grant", testGrant)
	run("ConcurrentTouchAndEnd", testConcurrentTouchAndEnd)
	run("ConcurrentEnds", testConcurrentEnds)
	run("Claim", testClaim)
	run("ConcurrentClaims", testConcurrentClaims)
	run("KeepUntil", testKeepUntil)
	run("Index", testIndex)
	run("IndexKeepUntil", testIndexKeepUntil)
	run("IndexSharedScope", testIndexSharedScope)
	run("IndexUserScope", testIndexUserScope)
	run("EndSessions", testEndSessions)
	run("ConcurrentBeginAndEnd", testConcurrentBeginAndEnd)
	if c.corrupt != nil {
		run("CorruptRecord", testCorrupt)
	}
	if c.restart != nil {
		run("Restart", testRestart)
	}
}

var (
	ctx = context.Background()
	seq atomic.Int64
)

const (
	policy = "storetest"
	hour   = int64(time.Hour / time.Millisecond)
)

func now() int64 { return time.Now().UnixMilli() }

// newSession returns a live session that began now, in its own scope.
func newSession() *authz.Session {
	n := seq.Add(1)
	t := now()
	sub := "user-" + strconv.FormatInt(n, 10)
	// Session ids are 32 base64url characters, like the engine's.
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	id := base64.RawURLEncoding.EncodeToString(b[:])
	return &authz.Session{
		ID: id, Policy: policy, Subject: sub,
		Identity: authz.IdentityDigest("https://issuer.test", sub, nil),
		Scope:    authz.ScopeDigest("https://issuer.test", sub, "sid-"+strconv.FormatInt(n, 10)),
		SignIn:   t, Created: t, LastActivity: t, KeepUntil: t + hour,
	}
}

func load(t *testing.T, s authz.Store, r *authz.Session) authz.Lookup {
	t.Helper()
	lk, err := s.Load(ctx, r.Policy, r.ID, r.Scope)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return lk
}

func begin(t *testing.T, s authz.Store, r *authz.Session) {
	t.Helper()
	if err := s.Begin(ctx, r); err != nil {
		t.Fatalf("Begin: %v", err)
	}
}

func end(t *testing.T, s authz.Store, r *authz.Session, e authz.End) (authz.Session, bool) {
	t.Helper()
	got, ended, err := s.End(ctx, r.Policy, r.ID, r.Scope, e)
	if err != nil {
		t.Fatalf("End: %v", err)
	}
	return got, ended
}

func testLoadUnknown(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	if lk := load(t, s, r); lk.SessionFound || lk.ScopeFound {
		t.Errorf("an empty store found %+v", lk)
	}
	if lk, err := s.Load(ctx, policy, "", r.Scope); err != nil || lk.SessionFound || lk.ScopeFound {
		t.Errorf("Load of a scope alone: %+v, %v", lk, err)
	}
	if got, found, err := s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: now()}); err != nil || found {
		t.Errorf("Touch of an unknown session: %+v, %v, %v", got, found, err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

func testBeginLoad(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	begin(t, s, r)
	lk := load(t, s, r)
	if !lk.SessionFound || lk.Session != *r {
		t.Errorf("Load after Begin:\n got %+v\nwant %+v", lk.Session, *r)
	}
	if !lk.ScopeFound || lk.Scope.Current != r.ID || lk.Scope.EndedAt != 0 || lk.Scope.KeepUntil < r.KeepUntil {
		t.Errorf("scope after Begin: %+v", lk.Scope)
	}
	// A second session of the scope becomes its current one.
	r2 := newSession()
	r2.Scope = r.Scope
	begin(t, s, r2)
	if lk := load(t, s, r2); lk.Scope.Current != r2.ID {
		t.Errorf("current after a second Begin: %q, want %q", lk.Scope.Current, r2.ID)
	}
	// A Load with the zero scope reads the session alone (the engine's load
	// of a scope's current session): the zero Digest names no scope, even
	// one a session was begun with.
	r0 := newSession()
	r0.Scope = authz.Digest{}
	begin(t, s, r0)
	for _, r := range []*authz.Session{r, r0} {
		if lk, err := s.Load(ctx, policy, r.ID, authz.Digest{}); err != nil || !lk.SessionFound || lk.Session.ID != r.ID || lk.ScopeFound {
			t.Errorf("Load of a session with the zero scope: %+v, %v", lk, err)
		}
	}
	// Sessions of one id in two policies are two sessions.
	other := *r
	other.Policy = policy + "-other"
	if lk, err := s.Load(ctx, other.Policy, other.ID, other.Scope); err != nil || lk.SessionFound || lk.ScopeFound {
		t.Errorf("another policy sees the session: %+v, %v", lk, err)
	}
}

func testTouchOnlyGrows(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	begin(t, s, r)
	la, si, ku := r.LastActivity+5000, r.SignIn+3000, r.KeepUntil+7000
	got, found, err := s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: la, SignIn: si, KeepUntil: ku})
	if err != nil || !found || got.LastActivity != la || got.SignIn != si || got.KeepUntil != ku {
		t.Fatalf("Touch = %+v, %v, %v", got, found, err)
	}
	got, found, err = s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: la - 1, SignIn: si - 1, KeepUntil: ku - 1})
	if err != nil || !found || got.LastActivity != la || got.SignIn != si || got.KeepUntil != ku {
		t.Errorf("Touch with older times moved them back: %+v, %v, %v", got, found, err)
	}
	if got, _, _ := s.Touch(ctx, policy, r.ID, authz.Touch{}); got.LastActivity != la {
		t.Errorf("an empty Touch changed the record: %+v", got)
	}
	if lk := load(t, s, r); lk.Session.LastActivity != la || lk.Session.SignIn != si || lk.Session.KeepUntil != ku {
		t.Errorf("Load after Touch: %+v", lk.Session)
	}
}

func testEndIsFinal(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	begin(t, s, r)
	at := r.Created + 10
	got, ended := end(t, s, r, authz.End{Cause: authz.CauseSignedOut, At: at, KeepUntil: r.KeepUntil + 10})
	if !ended || got.EndedAt != at || got.Cause != authz.CauseSignedOut || got.KeepUntil != r.KeepUntil+10 {
		t.Fatalf("End = %+v, %v", got, ended)
	}
	if got, ended := end(t, s, r, authz.End{Cause: authz.CauseIdle, At: at - 5, KeepUntil: 1}); ended || got.EndedAt != at || got.Cause != authz.CauseSignedOut {
		t.Errorf("a second End = %+v, %v; the first end is final", got, ended)
	}
	if got, found, err := s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: at + 100, Grant: "g", GrantAt: at + 100}); err != nil || !found || !got.Ended() || got.LastActivity == at+100 || got.Grant != "" {
		t.Errorf("Touch after End = %+v, %v, %v; want the ended record unchanged", got, found, err)
	}
	lk := load(t, s, r)
	if !lk.SessionFound || lk.Session.EndedAt != at || lk.Session.Cause != authz.CauseSignedOut || lk.Scope.EndedAt < at {
		t.Errorf("Load after End: %+v", lk)
	}
	// A Begin in the scope afterwards does not lower its end.
	r2 := newSession()
	r2.Scope = r.Scope
	begin(t, s, r2)
	if lk := load(t, s, r2); lk.Scope.EndedAt < at || lk.Scope.Current != r2.ID {
		t.Errorf("scope after a new Begin: %+v", lk.Scope)
	}
}

func testScopeEndsOnlyRise(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	scopeOnly := *r
	scopeOnly.ID = ""
	base := now()
	for _, at := range []int64{base + 50, base + 20, base + 80, base + 10} {
		if got, ended := end(t, s, &scopeOnly, authz.End{Cause: authz.CauseSignedOut, At: at, KeepUntil: base + hour}); ended {
			t.Errorf("an end of a scope alone reported a session ended: %+v", got)
		}
	}
	lk, err := s.Load(ctx, policy, "", r.Scope)
	if err != nil || !lk.ScopeFound || lk.Scope.EndedAt != base+80 || lk.Scope.KeepUntil < base+hour {
		t.Errorf("scope after ends at +50, +20, +80, +10: %+v, %v; want EndedAt +80", lk.Scope, err)
	}
	if _, _, err := s.End(ctx, policy, "", r.Scope, authz.End{Cause: authz.CauseIdle, At: 0, KeepUntil: base + hour}); err == nil {
		t.Error("an end at 0 (which reads as live) was accepted")
	}
}

func testGrant(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	r.Method, r.Grant, r.GrantAt = authz.MethodOIDC, "sealed-1\x00\xff", r.Created
	begin(t, s, r)
	if lk := load(t, s, r); lk.Session != *r {
		t.Fatalf("Load of a session with a grant:\n got %+v\nwant %+v", lk.Session, *r)
	}
	big := string(make([]byte, 40_000)) + "end"
	got, found, err := s.Touch(ctx, policy, r.ID, authz.Touch{Grant: big, GrantAt: r.Created + 10})
	if err != nil || !found || got.Grant != big || got.GrantAt != r.Created+10 || got.Method != authz.MethodOIDC {
		t.Fatalf("Touch with a newer grant: %v, %v, grant %d bytes at %d", err, found, len(got.Grant), got.GrantAt)
	}
	if got, _, _ := s.Touch(ctx, policy, r.ID, authz.Touch{Grant: "older", GrantAt: r.Created + 5, LastActivity: r.Created + 7}); got.Grant != big || got.LastActivity != r.Created+7 {
		t.Errorf("an older grant replaced a newer one (grant %d bytes), or the activity was lost (%d)", len(got.Grant), got.LastActivity)
	}
	if lk := load(t, s, r); lk.Session.Grant != big || lk.Session.GrantAt != r.Created+10 {
		t.Errorf("Load after the grant was replaced: %d bytes at %d", len(lk.Session.Grant), lk.Session.GrantAt)
	}
	got, ended := end(t, s, r, authz.End{Cause: authz.CauseIdPRevoked, At: r.Created + 20, KeepUntil: r.KeepUntil})
	if !ended || got.Grant != "" || got.Cause != authz.CauseIdPRevoked {
		t.Errorf("End kept the grant (%d bytes) or lost the cause: %v", len(got.Grant), got.Cause)
	}
	if lk := load(t, s, r); lk.Session.Grant != "" || lk.Session.Method != authz.MethodOIDC {
		t.Errorf("an ended session still holds its grant (%d bytes), or lost its method", len(lk.Session.Grant))
	}
}

// testConcurrentTouchAndEnd: touches racing an end never revive it, and
// every Touch returns either the live record with its own activity or the
// ended one.
func testConcurrentTouchAndEnd(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	begin(t, s, r)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			la := r.Created + int64(i+1)
			got, found, err := s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: la})
			switch {
			case err != nil:
				errs <- err
			case !found:
				errs <- errors.New("Touch lost the session")
			case !got.Ended() && got.LastActivity < la:
				errs <- fmt.Errorf("Touch returned activity %d before its own %d", got.LastActivity, la)
			}
		}()
		if i == n/2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, ended, err := s.End(ctx, policy, r.ID, r.Scope, authz.End{Cause: authz.CauseIdle, At: r.Created + 1000, KeepUntil: r.KeepUntil}); err != nil || !ended {
					errs <- fmt.Errorf("End = %v, %v", ended, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if lk := load(t, s, r); !lk.Session.Ended() || lk.Session.EndedAt != r.Created+1000 {
		t.Errorf("after touches racing an end: %+v", lk.Session)
	}
	if got, _, _ := s.Touch(ctx, policy, r.ID, authz.Touch{LastActivity: r.Created + 5000}); !got.Ended() {
		t.Errorf("a Touch revived the session: %+v", got)
	}
}

// testConcurrentEnds: of many ends racing, exactly one reports it ended the
// session, and the record holds that end.
func testConcurrentEnds(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	begin(t, s, r)
	const n = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []authz.Session
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, ended, err := s.End(ctx, policy, r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: r.Created + int64(i+1), KeepUntil: r.KeepUntil})
			if err != nil {
				t.Errorf("End: %v", err)
			}
			if ended {
				mu.Lock()
				winners = append(winners, got)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d ends reported ending the session, want 1", len(winners))
	}
	lk := load(t, s, r)
	if lk.Session.EndedAt != winners[0].EndedAt {
		t.Errorf("stored end %d, the winner's %d", lk.Session.EndedAt, winners[0].EndedAt)
	}
	if lk.Scope.EndedAt != r.Created+n {
		t.Errorf("scope end %d, want the latest %d", lk.Scope.EndedAt, r.Created+n)
	}
}

func testClaim(t *testing.T, s authz.Store, _ *config) {
	n := seq.Add(1)
	k1 := authz.ClaimKey("storetest", "one-"+strconv.FormatInt(n, 10))
	k2 := authz.ClaimKey("storetest", "two-"+strconv.FormatInt(n, 10))
	keep := now() + hour
	for i, want := range []bool{true, false, false} {
		if first, err := s.Claim(ctx, k1, keep); err != nil || first != want {
			t.Errorf("claim %d of one key = %v, %v; want %v", i+1, first, err, want)
		}
	}
	if first, err := s.Claim(ctx, k2, keep); err != nil || !first {
		t.Errorf("the first claim of another key = %v, %v", first, err)
	}
	// Once its keep-until has passed, a key may be claimed again.
	k3 := authz.ClaimKey("storetest", "short-"+strconv.FormatInt(n, 10))
	short := now() + 200
	if first, err := s.Claim(ctx, k3, short); err != nil || !first {
		t.Fatalf("claim = %v, %v", first, err)
	}
	// No timing assumption: a claim answered before the keep-until must
	// refuse; one answered after it (a slow machine) shows the expiry.
	first, err := s.Claim(ctx, k3, now()+hour)
	if answered := now(); err != nil || first && answered < short {
		t.Errorf("a claim was made twice before its keep-until: %v, %v", first, err)
	}
	if !first {
		waitUntil(t, "the claim expired", func() bool {
			first, err := s.Claim(ctx, k3, now()+hour)
			return err == nil && first
		})
	}
}

func testConcurrentClaims(t *testing.T, s authz.Store, _ *config) {
	k := authz.ClaimKey("storetest", "race-"+strconv.FormatInt(seq.Add(1), 10))
	keep := now() + hour
	var wg sync.WaitGroup
	var firsts atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, err := s.Claim(ctx, k, keep)
			if err != nil {
				t.Errorf("Claim: %v", err)
			}
			if first {
				firsts.Add(1)
			}
		}()
	}
	wg.Wait()
	if firsts.Load() != 1 {
		t.Errorf("%d of 50 concurrent claims were first, want 1", firsts.Load())
	}
}

// testKeepUntil makes no timing assumption: what it expects before a
// KeepUntil it checks only for answers that came before it (a slow machine
// may pass it between two calls).
func testKeepUntil(t *testing.T, s authz.Store, _ *config) {
	r := newSession()
	r.KeepUntil = now() + 300
	begin(t, s, r)
	if lk := load(t, s, r); (!lk.SessionFound || !lk.ScopeFound) && now() < r.KeepUntil {
		t.Fatalf("before KeepUntil: %+v", lk)
	}
	ended := newSession()
	ended.KeepUntil = now() + 300
	begin(t, s, ended)
	end(t, s, ended, authz.End{Cause: authz.CauseIdle, At: ended.Created + 1, KeepUntil: now() + 300})
	// A Touch that raises KeepUntil keeps a live record longer.
	kept := newSession()
	kept.KeepUntil = now() + 300
	begin(t, s, kept)
	_, raised, err := s.Touch(ctx, policy, kept.ID, authz.Touch{KeepUntil: now() + hour})
	if err != nil {
		t.Fatal(err)
	}
	if !raised && now() < kept.KeepUntil {
		t.Error("Touch lost a record before its KeepUntil")
	}
	waitUntil(t, "records past their KeepUntil are gone", func() bool {
		a, b := load(t, s, r), load(t, s, ended)
		return !a.SessionFound && !a.ScopeFound && !b.SessionFound && !b.ScopeFound
	})
	if lk := load(t, s, kept); raised && !lk.SessionFound {
		t.Error("a record whose KeepUntil a Touch raised is gone")
	}
}

func testCorrupt(t *testing.T, s authz.Store, c *config) {
	r := newSession()
	begin(t, s, r)
	c.corrupt(s, r.Policy, r.ID)
	// A corrupt record is a failure (S9), never an absent session that a
	// token could open anew.
	if lk, err := s.Load(ctx, r.Policy, r.ID, r.Scope); !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("Load of a corrupt record = %+v, %v; want ErrCorruptRecord", lk, err)
	}
	if _, _, err := s.Touch(ctx, r.Policy, r.ID, authz.Touch{LastActivity: now()}); !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("Touch of a corrupt record = %v", err)
	}
	if _, _, err := s.End(ctx, r.Policy, r.ID, r.Scope, authz.End{Cause: authz.CauseIdle, At: now(), KeepUntil: now() + hour}); !errors.Is(err, authz.ErrCorruptRecord) {
		t.Errorf("End of a corrupt record = %v", err)
	}
}

// testRestart: what a store acknowledged is there after a restart.
func testRestart(t *testing.T, s authz.Store, c *config) {
	live, ended, oidc := newSession(), newSession(), newSession()
	oidc.Method, oidc.Grant, oidc.GrantAt = authz.MethodOIDC, "sealed", oidc.Created
	for _, r := range []*authz.Session{live, ended, oidc} {
		begin(t, s, r)
	}
	la := live.Created + 500
	if _, _, err := s.Touch(ctx, policy, live.ID, authz.Touch{LastActivity: la}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Touch(ctx, policy, oidc.ID, authz.Touch{Grant: "refreshed", GrantAt: oidc.Created + 1}); err != nil {
		t.Fatal(err)
	}
	end(t, s, ended, authz.End{Cause: authz.CauseSignedOut, At: ended.Created + 1, KeepUntil: ended.KeepUntil})
	k := authz.ClaimKey("storetest", "restart-"+strconv.FormatInt(seq.Add(1), 10))
	if first, err := s.Claim(ctx, k, now()+hour); err != nil || !first {
		t.Fatalf("Claim = %v, %v", first, err)
	}

	s = c.restart(s)

	if lk := load(t, s, live); !lk.SessionFound || lk.Session.Ended() || lk.Session.LastActivity != la || lk.Scope.Current != live.ID {
		t.Errorf("live session after a restart: %+v", lk)
	}
	if lk := load(t, s, ended); !lk.Session.Ended() || lk.Session.Cause != authz.CauseSignedOut || lk.Scope.EndedAt != ended.Created+1 {
		t.Errorf("ended session after a restart: %+v", lk)
	}
	if lk := load(t, s, oidc); lk.Session.Grant != "refreshed" || lk.Session.Method != authz.MethodOIDC {
		t.Errorf("grant after a restart: %q, method %v", lk.Session.Grant, lk.Session.Method)
	}
	if first, err := s.Claim(ctx, k, now()+hour); err != nil || first {
		t.Errorf("a claim made before the restart was made again: %v, %v", first, err)
	}
	if got := indexed(t, s, policy, authz.SubjectKey(live.Subject)); !slices.Equal(got, want(live)) {
		t.Errorf("index after a restart: %v, want %v", got, want(live))
	}
}

// waitUntil polls cond until it holds; stores expire records on their own
// schedule (Redis' active expiry, the wall clock).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
