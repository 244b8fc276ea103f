package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
)

// The index of sessions by user and by scope (authz.SessionIndex) is a
// sorted set per key, "i:" policy "/" digest: members are session ids,
// scored by their keep-until; the set expires with its latest member.

var _ authz.SessionIndex = (*Store)(nil)

func (s *Store) indexKey(policy string, d authz.Digest) string {
	return s.o.Prefix + ":i:" + policy + "/" + hex.EncodeToString(d[:])
}

// indexScript files a session id in an index: KEYS[1] the index; ARGV id,
// keep-until, now, max entries. Members past now are dropped; a member's
// score only grows; past the bound the members that expire first go.
var indexScript = luaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local ku = tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and tonumber(old) > ku then ku = tonumber(old) end
redis.call('ZADD', KEYS[1], ms(ku), ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n > tonumber(ARGV[4]) then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - tonumber(ARGV[4]) - 1) end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], ms(tonumber(top[2])))
return n
`)

// index files r under its index keys until keepUntil.
func (s *Store) index(ctx context.Context, r *authz.Session, keepUntil int64) error {
	ik := authz.IndexKeys(r)
	for i, d := range ik {
		if i > 0 && d == ik[0] {
			continue // filed under its scope alone
		}
		err := indexScript.Run(ctx, s.c, []string{s.indexKey(r.Policy, d)}, r.ID, keepUntil, s.now(), authz.MaxIndexed).Err()
		if err != nil {
			return s.scriptError(ctx, "index", err)
		}
	}
	return nil
}

// Indexed implements authz.SessionIndex, reading Redis itself (never the
// near cache): an end decided on it must see every replica's sessions.
func (s *Store) Indexed(ctx context.Context, policy string, key authz.Digest) ([]authz.Session, error) {
	if err := s.isDown("indexed"); err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ids, err := s.c.ZRangeByScore(ctx, s.indexKey(policy, key), &redis.ZRangeBy{
		Min: strconv.FormatInt(s.now(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, s.unavailable(ctx, "indexed", err)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.sessionKey(policy, id)
	}
	return s.readSessions(ctx, keys)
}

// readSessions reads the session records under keys in one pipeline
// (Cluster: one per node); absent ones are skipped.
func (s *Store) readSessions(ctx context.Context, keys []string) ([]authz.Session, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.unavailable(ctx, "indexed", err)
	}
	out := make([]authz.Session, 0, len(keys))
	now := s.now()
	for _, c := range cmds {
		e, found, err := s.decodeReply(ctx, c, false)
		if err != nil {
			return nil, err
		}
		if found && e.session.KeepUntil >= now {
			out = append(out, e.session)
		}
	}
	return out, nil
}

// Sessions implements authz.SessionIndex with SCAN over every primary.
func (s *Store) Sessions(ctx context.Context, policy string, fn func(authz.Session) error) error {
	if err := s.isDown("sessions"); err != nil {
		return err
	}
	match := globEscape(s.o.Prefix+":s:"+policy+"/") + "*"
	if policy == "" {
		match = globEscape(s.o.Prefix+":s:") + "*"
	}
	// A cluster scans its primaries in parallel; fn sees one session at a
	// time all the same (authz.SessionIndex).
	var mu sync.Mutex
	visit := func(list []authz.Session) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range list {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		var cursor uint64
		for {
			sctx, cancel := s.bound(ctx)
			keys, next, err := c.Scan(sctx, cursor, match, 1000).Result()
			if err != nil {
				cancel()
				return s.unavailable(sctx, "sessions", err)
			}
			list, err := s.readSessions(sctx, keys)
			cancel()
			if err != nil {
				return err
			}
			if err := visit(list); err != nil {
				return err
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	}
	return scan(ctx, s.c)
}

// globEscape quotes the characters SCAN's MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\^-`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// indexTouched keeps the index as long as a touched session's record.
func (s *Store) indexTouched(ctx context.Context, r *authz.Session) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.index(ctx, r, r.KeepUntil); err != nil {
		return fmt.Errorf("redis store: touch: %w", err)
	}
	return nil
}
