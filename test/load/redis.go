package main

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// redisStore is the Redis sessiongate shares its sessions through (-store):
// one the harness started (-store redis) or the one at a URL. Its own
// INFO commandstats counts what reached it during each measured run.
type redisStore struct {
	url  string
	c    *redis.Client
	proc *exec.Cmd // started by the harness, else nil
}

// openRedis starts a redis-server without persistence on a free loopback
// port when spec is "redis", else connects to the URL spec.
func openRedis(spec, dir string) (*redisStore, error) {
	r := &redisStore{url: spec}
	if spec == "redis" {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		port := addr[strings.LastIndexByte(addr, ':')+1:]
		r.proc = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		if err := r.proc.Start(); err != nil {
			return nil, fmt.Errorf("redis-server: %w", err)
		}
		r.url = "redis://" + addr
	}
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		r.close()
		return nil, err
	}
	r.c = redis.NewClient(opt)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err = r.c.Ping(context.Background()).Err(); err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.close()
			return nil, fmt.Errorf("redis at %s: %w", r.url, err)
		}
	}
}

func (r *redisStore) close() {
	if r.c != nil {
		r.c.Close()
	}
	if r.proc != nil {
		_ = r.proc.Process.Signal(syscall.SIGTERM)
		_ = r.proc.Wait()
	}
}

// commands returns Redis' calls per command so far, without INFO itself
// (the harness's own reads).
func (r *redisStore) commands() (map[string]int64, error) {
	calls, err := redistest.CommandCalls(context.Background(), r.c)
	delete(calls, "info")
	return calls, err
}

// commandDiff is after − before, command by command, added into into.
func commandDiff(into, before, after map[string]int64) {
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			into[k] += d
		}
	}
}

func total(calls map[string]int64) int64 {
	var n int64
	for _, v := range calls {
		n += v
	}
	return n
}

// describe lists commands by calls, most first: "get 12, evalsha 3".
func describe(calls map[string]int64) string {
	keys := make([]string, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return calls[keys[i]] > calls[keys[j]] || calls[keys[i]] == calls[keys[j]] && keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, calls[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
