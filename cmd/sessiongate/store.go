package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/memory"
	redisstore "github.com/sessiongate/sessiongate/store/redis"
)

// sessionStore is what serve needs of a session store.
type sessionStore interface {
	authz.Store
	Close() error
}

// openStore maps --store to a session store: "memory" (the default) is the
// embedded store; a redis://, rediss://, valkey://, valkeys:// URL, with
// +sentinel or +cluster, is the shared store of several replicas.
func openStore(c serveConfig, clock authz.Clock, log *slog.Logger) (sessionStore, error) {
	switch {
	case c.store == "" || c.store == "memory":
		s, err := memory.New(memory.Options{Clock: clock, StateFile: c.stateFile, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("session store: %w", err)
		}
		return s, nil
	case redisstore.IsURL(c.store):
		// go-redis logs through a process-wide logger; keep its retries
		// during an outage out of the operator's log unless debugging.
		redis.SetLogger(goRedisLogger{log})
		// With Redis, --state-file keeps the ends decided during an
		// outage (store_failure: continue) until Redis has them.
		s, err := redisstore.Open(c.store, redisstore.Options{Clock: clock, Logger: log, QueueFile: c.stateFile})
		if err != nil {
			return nil, fmt.Errorf("--store %q: %w", redisstore.Redact(c.store), err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("--store %q: want memory, or a redis://, rediss://, valkey:// or valkeys:// URL (optionally +sentinel or +cluster)",
		redisstore.Redact(c.store))
}

type goRedisLogger struct{ log *slog.Logger }

func (l goRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
