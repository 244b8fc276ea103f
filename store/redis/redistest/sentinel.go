package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of StartSentinel monitor.
const MasterName = "mymaster"

// Sentinel is a master, its replicas and the sentinels that monitor it.
type Sentinel struct {
	Master    *Server
	Replicas  []*Server
	Sentinels []*Server
}

// URL is the redis+sentinel:// URL of the sentinels and MasterName.
func (g *Sentinel) URL() string {
	var a []string
	for _, s := range g.Sentinels {
		a = append(a, s.Addr())
	}
	return "redis+sentinel://" + strings.Join(a, ",") + "/" + MasterName
}

// StartSentinel starts a master, replicas replicas of it, and sentinels
// sentinels (redis-server --sentinel) that monitor it with quorum 1 and
// declare it down after 1 s without an answer. It returns once every
// sentinel knows the master, every replica and every other sentinel, so
// that a failover can start as soon as the master fails.
func StartSentinel(t testing.TB, replicas, sentinels int) *Sentinel {
	t.Helper()
	g := &Sentinel{Master: Start(t)}
	// A replica's first sync would otherwise wait 5 s for others to join.
	if err := g.Master.Client().ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for range replicas {
		dir := t.TempDir()
		r := launch(t, false, nil, func(port int) []string {
			return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
				"--save", "", "--appendonly", "yes", "--appendfsync", "always",
				"--protected-mode", "no", "--loglevel", "warning", "--daemonize", "no",
				"--replicaof", "127.0.0.1", strconv.Itoa(g.Master.Port)}
		})
		g.Replicas = append(g.Replicas, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, r := range g.Replicas {
		waitInfo(ctx, t, r.Client(), "replication", "master_link_status:up")
	}
	for range sentinels {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf") // the sentinel rewrites it
		body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 2000\n"+
			"sentinel parallel-syncs %[1]s 1\n", MasterName, g.Master.Port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s := launch(t, false, nil, func(port int) []string {
			return []string{conf, "--sentinel", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--dir", dir, "--protected-mode", "no", "--loglevel", "warning", "--daemonize", "no"}
		})
		g.Sentinels = append(g.Sentinels, s)
	}
	want := map[string]string{"num-slaves": strconv.Itoa(replicas), "num-other-sentinels": strconv.Itoa(sentinels - 1)}
	for _, s := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		for {
			m, err := sc.Master(ctx, MasterName).Result()
			ok := err == nil
			for k, v := range want {
				ok = ok && m[k] == v
			}
			if ok {
				break
			}
			if ctx.Err() != nil {
				sc.Close()
				t.Fatalf("sentinel %s does not see the whole group (want %v): %v %v", s.Addr(), want, m, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		sc.Close()
	}
	return g
}

// WaitFailover waits until a sentinel names a master other than old, and
// that server answers as a master; it returns the new master's address.
func (g *Sentinel) WaitFailover(t testing.TB, old string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0].Addr()})
	defer sc.Close()
	for {
		a, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
		if err == nil && len(a) == 2 {
			addr := a[0] + ":" + a[1]
			if addr != old {
				c := redis.NewClient(&redis.Options{Addr: addr})
				info, err := c.Info(ctx, "replication").Result()
				c.Close()
				if err == nil && strings.Contains(info, "role:master") {
					return addr
				}
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no failover from %s within %v: %v %v", old, timeout, a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitInfo(ctx context.Context, t testing.TB, c *redis.Client, section, want string) {
	t.Helper()
	for {
		info, err := c.Info(ctx, section).Result()
		if err == nil && strings.Contains(info, want) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: no %q in INFO %s: %v\n%s", c.Options().Addr, want, section, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
