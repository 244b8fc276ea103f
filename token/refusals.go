package token

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// RefusalLogEvery is how often at most one kind of refusal (one policy,
// one detail such as "wrong aud") is logged; the next line says how many
// were left out meanwhile. A flood of bad tokens costs a few lines a
// minute, and the first one of a misconfiguration is seen at once.
const RefusalLogEvery = 10 * time.Second

// refusalLog writes refused tokens to the operator log at the default
// level, rate-limited, with expected and actual values: a first real
// identity provider is debugged from there (wrong aud, wrong iss, unknown
// key). invalid_token is a warning; token_expired, which clients cause all
// day, is info.
type refusalLog struct {
	mu   sync.Mutex
	seen map[refusalKey]*refusalCount
}

// refusalKey is bounded: policy names and a fixed set of details.
type refusalKey struct{ policy, detail string }

type refusalCount struct {
	last       time.Time
	suppressed int
}

func (l *refusalLog) log(v *verifier, err error, now time.Time) {
	te, ok := errors.AsType[*authz.TokenError](err)
	if !ok {
		return
	}
	k := refusalKey{v.policy, te.Detail}
	l.mu.Lock()
	if l.seen == nil {
		l.seen = map[refusalKey]*refusalCount{}
	}
	c := l.seen[k]
	if c == nil {
		c = &refusalCount{}
		l.seen[k] = c
	}
	if !c.last.IsZero() && now.Sub(c.last) < RefusalLogEvery && now.Sub(c.last) >= 0 {
		c.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := c.suppressed
	c.last, c.suppressed = now, 0
	l.mu.Unlock()

	args := []any{"policy", v.policy, "reason", te.Reason.String(), "detail", te.Detail}
	if r, ok := err.(*refusal); ok {
		args = append(args, r.attrs...)
	}
	if suppressed > 0 {
		args = append(args, "not_logged_since_last", suppressed)
	}
	level := slog.LevelWarn
	if te.Reason == authz.ReasonTokenExpired {
		level = slog.LevelInfo
	}
	v.p.log.Log(context.Background(), level, "token refused", args...)
}
