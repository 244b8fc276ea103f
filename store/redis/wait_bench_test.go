package redis

import (
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// BenchmarkEndWait measures an End (sign-out) on a master with one replica
// (appendonly, appendfsync always, as redistest starts it) on loopback: as
// shipped, with wait_replicas=1 (WAIT), and with wait_aof (WAITAOF 1 1:
// fsynced on the master too, which then runs appendfsync always), where the
// server has WAITAOF (Redis 7.2). BENCHMARKS.md has the numbers.
func BenchmarkEndWait(b *testing.B) {
	g := redistest.StartSentinel(b, 1, 1)
	mc := g.Master.Client()
	for _, bc := range []struct{ name, query string }{
		{"no_wait", "?timeout=2s"},
		{"wait_replicas=1", "?timeout=2s&wait_replicas=1&wait_timeout=1s"},
		{"wait_aof", "?timeout=2s&wait_replicas=1&wait_timeout=1s&wait_aof=true"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.name == "wait_aof" {
				if err := mc.Do(ctx, "COMMAND", "INFO", "WAITAOF").Err(); err != nil || len(mc.Do(ctx, "COMMAND", "INFO", "WAITAOF").Val().([]any)) == 0 || mc.Do(ctx, "COMMAND", "INFO", "WAITAOF").Val().([]any)[0] == nil {
					b.Skip("this Redis has no WAITAOF (7.2 and later)")
				}
				for _, kv := range [][2]string{{"appendonly", "yes"}, {"appendfsync", "always"}} {
					if err := mc.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
						b.Fatal(err)
					}
				}
			}
			s := open(b, g.URL()+bc.query, Options{FlushInterval: 10 * time.Millisecond})
			rs := make([]*authz.Session, b.N)
			for i := range rs {
				rs[i] = newSession("bench")
				if err := s.Begin(ctx, rs[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for _, r := range rs {
				if _, _, err := s.End(ctx, "app", r.ID, r.Scope, authz.End{Cause: authz.CauseSignedOut, At: time.Now().UnixMilli(), KeepUntil: r.KeepUntil}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
