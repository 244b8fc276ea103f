package ends_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/ends"
	redisstore "github.com/sessiongate/sessiongate/store/redis"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

const adminToken = "s3cret-admin-token-value"

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) BackChannelLogout(string) {}
func (c *counter) AdminRequest(op, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[op+"/"+result]++
}

func newAdmin(f *fixture, st authz.Store, obs *counter) http.Handler {
	return ends.NewAdmin(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: st, Auditor: f.audit, Observer: obs}, adminToken)
}

func call(h http.Handler, method, target, token, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestS19AdminNeedsTheToken: no token or a wrong one is 401, counted and
// audited, and ends nothing.
func TestS19AdminNeedsTheToken(t *testing.T) {
	st := newMemory(t)
	f := newFixture(t, st)
	obs := &counter{n: map[string]int{}}
	h := newAdmin(f, st, obs)
	s := f.session(policyA, subject, provider)
	for _, tok := range []string{"", "wrong", adminToken + "x", strings.ToUpper(adminToken)} {
		w := call(h, http.MethodPost, ends.AdminEndPath, tok, `{"user":"alice"}`)
		if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("token %q: %d %s", tok, w.Code, w.Body)
		}
		if w := call(h, http.MethodGet, ends.AdminSessionsPath+"?user=alice", tok, ""); w.Code != http.StatusUnauthorized {
			t.Errorf("list with token %q: %d", tok, w.Code)
		}
	}
	if f.ended(s) {
		t.Fatal("an unauthenticated call ended a session")
	}
	if obs.n["end/unauthorized"] != 4 || obs.n["list/unauthorized"] != 4 {
		t.Errorf("counted %v", obs.n)
	}
	if len(f.audit.events) != 8 || f.audit.events[0].Result != "unauthorized" || f.audit.events[0].Who != "unauthenticated" {
		t.Errorf("audit %+v", f.audit.events)
	}
}

// TestS19ListShowsNoIDOrToken: a user's live sessions are listed with
// their deadlines and a hash of the id, never the id; ended ones are not.
func TestS19ListShowsNoIDOrToken(t *testing.T) {
	st := newMemory(t)
	f := newFixture(t, st)
	h := newAdmin(f, st, &counter{n: map[string]int{}})
	a, b := f.session(policyA, subject, "s1"), f.session(policyB, subject, "s2")
	over := f.session(policyA, subject, "s3")
	if _, _, err := st.End(ctx, policyA, over.ID, over.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: over.KeepUntil}); err != nil {
		t.Fatal(err)
	}
	f.session(policyA, "bob", "")
	w := call(h, http.MethodGet, ends.AdminSessionsPath+"?user="+subject, adminToken, "")
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	for _, s := range []*authz.Session{a, b, over} {
		if strings.Contains(w.Body.String(), s.ID) {
			t.Fatal("a listed session shows its id")
		}
	}
	var got ends.ListResponse
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Sessions) != 2 {
		t.Fatalf("listed %+v; want alice's two live sessions", got.Sessions)
	}
	for _, s := range got.Sessions {
		if s.Session != authz.SessionHash(a.ID) && s.Session != authz.SessionHash(b.ID) || s.Subject != subject ||
			!s.AbsoluteDeadline.Equal(s.SignIn.Add(8*time.Hour)) || s.IdleDeadline.IsZero() {
			t.Errorf("listed %+v", s)
		}
	}
	w = call(h, http.MethodGet, ends.AdminSessionsPath+"?user="+subject+"&policy="+policyB, adminToken, "")
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got.Sessions) != 1 || got.Sessions[0].Policy != policyB {
		t.Errorf("list in one policy: %s", w.Body)
	}
	if w := call(h, http.MethodGet, ends.AdminSessionsPath+"?user=x&policy=nope", adminToken, ""); w.Code != http.StatusNotFound {
		t.Errorf("unknown policy: %d", w.Code)
	}
}

// TestS19EndSelectors: by user, sid, session hash and all, within one
// policy or every one.
func TestS19EndSelectors(t *testing.T) {
	st := newMemory(t)
	f := newFixture(t, st)
	h := newAdmin(f, st, &counter{n: map[string]int{}})
	end := func(body string, want int) {
		t.Helper()
		w := call(h, http.MethodPost, ends.AdminEndPath, adminToken, body)
		var got ends.EndResponse
		if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != http.StatusOK || err != nil || got.Ended != want {
			t.Errorf("%s: %d %s; want %d ended", body, w.Code, w.Body, want)
		}
	}
	u1, u2 := f.session(policyA, "u", "s1"), f.session(policyB, "u", "s2")
	end(`{"user":"u","policy":"`+policyB+`"}`, 1)
	if f.ended(u1) || !f.ended(u2) {
		t.Error("--user --policy ended the wrong sessions")
	}
	end(`{"user":"u"}`, 1)
	sid := f.session(policyA, "v", "sid-x")
	end(`{"sid":"sid-x"}`, 1)
	if !f.ended(sid) {
		t.Error("--sid")
	}
	one, two := f.session(policyA, "w", "a"), f.session(policyA, "w", "b")
	end(`{"session":"`+authz.SessionHash(one.ID)+`"}`, 1)
	if !f.ended(one) || f.ended(two) {
		t.Error("--session ended the wrong sessions")
	}
	f.session(policyC, "z", "")
	end(`{"all":true,"policy":"`+policyA+`"}`, 1) // two is the only live one left there
	end(`{"all":true}`, 1)                        // the policyC one
	for _, bad := range []string{`{}`, `{"user":"u","sid":"s"}`, `{"user":"u","extra":1}`, `not json`} {
		if w := call(h, http.MethodPost, ends.AdminEndPath, adminToken, bad); w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, w.Code)
		}
	}
	if w := call(h, http.MethodGet, ends.AdminEndPath, adminToken, ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET end: %d", w.Code)
	}
}

// TestS19EndOnEveryReplica: with Redis, an end through one replica's admin
// API is seen by another replica, and concurrent activity revives nothing.
func TestS19EndOnEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	open := func() *redisstore.Store {
		s, err := redisstore.Open(srv.URL()+"?prefix=admin", redisstore.Options{FlushInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		for deadline := time.Now().Add(10 * time.Second); s.Ready(ctx) != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("redis store not ready")
			}
		}
		return s
	}
	one, two := open(), open()
	f := newFixture(t, one)
	h := newAdmin(f, one, &counter{n: map[string]int{}})
	s := f.session(policyA, subject, provider)
	if lk, err := two.Load(ctx, policyA, s.ID, s.Scope); err != nil || !lk.SessionFound || lk.Session.Ended() {
		t.Fatalf("the other replica before the call: %+v, %v", lk, err)
	}
	// The other replica keeps touching the session while it is ended.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _, _ = two.Touch(ctx, policyA, s.ID, authz.Touch{LastActivity: time.Now().UnixMilli(), KeepUntil: time.Now().Add(10 * time.Hour).UnixMilli()})
		}
	}()
	w := call(h, http.MethodPost, ends.AdminEndPath, adminToken, `{"user":"`+subject+`"}`)
	close(stop)
	wg.Wait()
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	for _, st := range []authz.Store{one, two} {
		lk, err := st.Load(ctx, policyA, s.ID, s.Scope)
		if err != nil || !lk.Session.Ended() || lk.Session.Cause != authz.CauseAdmin {
			t.Errorf("replica %p: %+v, %v", st, lk.Session, err)
		}
	}
	// A replayed logout token is refused on the other replica too.
	bc1 := ends.NewBackChannel(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: one})
	bc2 := ends.NewBackChannel(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: two})
	tok := f.mint(nil, f.claims())
	checkAnswer(t, post(bc1, form(tok), formType), http.StatusOK, "")
	checkAnswer(t, post(bc2, form(tok), formType), http.StatusBadRequest, "replayed")
}

func TestCheckAdminAddr(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9003": true, "[::1]:9003": true, "localhost:9003": true,
		":9003": false, "0.0.0.0:9003": false, "10.0.0.1:9003": false} {
		if err := ends.CheckAdminAddr(addr, false, false); (err == nil) != ok {
			t.Errorf("%s without a token: %v", addr, err)
		}
		if err := ends.CheckAdminAddr(addr, true, false); err != nil {
			t.Errorf("%s with a token: %v", addr, err)
		}
		if err := ends.CheckAdminAddr(addr, false, true); err != nil {
			t.Errorf("%s with client certificates: %v", addr, err)
		}
	}
}
