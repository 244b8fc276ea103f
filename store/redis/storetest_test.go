package redis

import (
	"strconv"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/authz/storetest"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// conformance runs the store suite on url, each store under a prefix of
// its own; a restart is a new replica on the same Redis.
func conformance(t *testing.T, url string) {
	n := 0
	newStore := func(prefix string) *Store {
		return open(t, url+"?prefix="+prefix, Options{FlushInterval: 10 * time.Millisecond})
	}
	storetest.Run(t, func() authz.Store {
		n++
		return newStore("conformance" + strconv.Itoa(n))
	}, storetest.Corrupt(func(as authz.Store, policy, id string) {
		s := as.(*Store)
		if err := s.c.Set(ctx, s.sessionKey(policy, id), "\xffnot a record", 0).Err(); err != nil {
			t.Fatal(err)
		}
		s.near.reset(s.near.live) // or the near cache answers with the good copy
	}), storetest.Restart(func(as authz.Store) authz.Store {
		s := as.(*Store)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return newStore(s.o.Prefix)
	}))
}

func TestConformance(t *testing.T) {
	conformance(t, redistest.Start(t).URL())
}

func TestConformanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	conformance(t, redistest.StartCluster(t, 3).URL())
}
