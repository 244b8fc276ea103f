package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestSteadyClientsAreServedByTheNearCache: once a session is live, the
// engine's requests reach Redis only for what the near cache cannot answer,
// for a browser presenting its cookie and for an API client without one
// (whose session is its scope's current one, loaded by id alone). Counted
// by Redis itself (INFO commandstats), not by the client.
func TestSteadyClientsAreServedByTheNearCache(t *testing.T) {
	srv := redistest.Start(t)
	for _, cookie := range []bool{true, false} {
		t.Run("cookie="+strconv.FormatBool(cookie), func(t *testing.T) {
			s := open(t, srv.URL(), Options{})
			rc := srv.Client()
			defer rc.Close()
			const requests = 200
			st := steadyClient(t, s, cookie, func() {
				if err := rc.ConfigResetStat(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}, requests)
			if st.allowed != requests {
				t.Fatalf("%d of %d requests allowed", st.allowed, requests)
			}
			reads := commandCalls(t, rc, "get", "mget")
			// Before a Load of the scope's current session could be answered
			// by the near cache, a cookieless client cost two GETs per
			// request. A refill after NearCacheTTL costs a few, never one per
			// request.
			if reads > requests/10 {
				t.Fatalf("%d reads reached Redis for %d allowed requests", reads, requests)
			}
			t.Logf("Redis commands for %d allowed requests: %v", requests, commandStats(t, rc))
		})
	}
}

type steadyStats struct{ allowed int }

// steadyClient begins one session for one client, calls measure, then sends
// n more requests, with the session's cookie or without any.
func steadyClient(t testing.TB, store authz.Store, cookie bool, measure func(), n int) steadyStats {
	v := fakeVerifier{}
	p := benchPolicy(v, 30*time.Minute)
	e, err := authz.NewEngine(authz.Options{Policies: onePolicy{p}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	tok := "tok-" + strconv.FormatInt(now, 10)
	v[tok] = &authz.Claims{Issuer: "iss", Subject: tok, AuthTime: now, IssuedAt: now, Expiry: now + 3600_000,
		Identity: authz.IdentityDigest("iss", tok, nil), Scope: authz.ScopeDigest("iss", tok, "")}
	h := authz.HeaderMap{"authorization": "Bearer " + tok}
	d := e.Check(context.Background(), &authz.Request{Host: "app.test", Path: "/", Headers: h})
	if !d.Allow || len(d.SetCookie) != 1 {
		t.Fatalf("begin: %+v", d)
	}
	if cookie {
		h["cookie"] = strings.SplitN(d.SetCookie[0], ";", 2)[0]
	}
	measure()
	var st steadyStats
	for range n {
		d := e.Check(context.Background(), &authz.Request{Host: "app.test", Path: "/", Headers: h})
		if d.Allow && len(d.SetCookie) == 0 {
			st.allowed++
		}
	}
	return st
}

// commandStats returns Redis' calls per command since the last CONFIG
// RESETSTAT (INFO commandstats).
func commandStats(t testing.TB, rc *redis.Client) map[string]int64 {
	t.Helper()
	st, err := redistest.CommandCalls(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func commandCalls(t testing.TB, rc *redis.Client, names ...string) int64 {
	st := commandStats(t, rc)
	var n int64
	for _, name := range names {
		n += st[name]
	}
	return n
}
