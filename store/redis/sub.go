package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribeLoop keeps this replica subscribed to the change channel for as
// long as the store is open, starting over after any failure. go-redis
// would resubscribe by itself, but silently: whatever was published while
// the connection was down would be missed. Starting over makes every
// reconnection pass through the same steps, in this order: subscribe,
// write the fallback's ends, forget the live tier, trust again.
func (s *Store) subscribeLoop(ctx context.Context) {
	const minBackoff, maxBackoff = 50 * time.Millisecond, time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := s.subscribeOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.distrust(err)
		if time.Since(start) > 10*maxBackoff {
			backoff = minBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// distrust stops the near cache answering reads.
func (s *Store) distrust(err error) {
	s.setErr(err.Error())
	s.down.Store(true)
	if s.trustedSince.Swap(0) != 0 {
		s.log.Warn("redis store: lost the change channel; reads go to Redis until it is back", "err", err)
	}
}

// subscribeOnce subscribes, becomes trusted, and then applies published
// changes and heartbeat answers until something fails.
func (s *Store) subscribeOnce(ctx context.Context) error {
	ps := s.c.Subscribe(ctx)
	defer ps.Close()
	// A cancelled ctx does not interrupt a read blocked in ReceiveTimeout
	// (go-redis only turns its deadline into the read deadline), which
	// would hold Close for up to MaxStale: closing the PubSub does.
	defer context.AfterFunc(ctx, func() { ps.Close() })()
	if err := ps.Subscribe(ctx, s.channel); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	msg, err := ps.ReceiveTimeout(ctx, max(5*time.Second, s.o.MaxStale))
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		return fmt.Errorf("subscribe: unexpected %T", msg)
	}
	s.down.Store(false)
	// A restarted Redis has forgotten the scripts; the flush pipeline,
	// which cannot fall back to EVAL, needs them.
	if err := touchScript.Load(ctx, s.c).Err(); err != nil {
		return fmt.Errorf("script load: %w", err)
	}
	// Every change published from now on reaches this replica. Changes
	// before now may have been missed: the live tier is forgotten, after
	// the fallback's ends are in Redis, where the next reads will look.
	if err := s.reconcile(ctx); err != nil {
		return err
	}
	// A Redis that came back empty (no persistence) gets every end this
	// replica knows again before the near cache is trusted.
	if err := s.checkMarker(ctx); err != nil {
		return fmt.Errorf("marker: %w", err)
	}
	s.near.reset(s.near.live)
	s.trustedSince.Store(s.mono())
	s.heardAt.Store(s.now())
	s.log.Info("redis store: subscribed to the change channel; near cache in use")

	hbCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.heartbeat(hbCtx, ps)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()
	heard := time.Now()
	// Heartbeats go every MaxStale/4: waiting that plus Timeout for a word
	// means one sent at least Timeout ago is unanswered.
	wait := s.o.MaxStale/4 + s.o.Timeout
	for {
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && time.Since(heard) < silenceLimit*s.o.MaxStale {
			// A hung Redis (stopped, swapping, a frozen host), or a stall
			// here (CPU, GC): trust lapses by itself (trusted), and a PING
			// tells the two apart. Unanswered within Timeout, Redis is
			// marked down: commands fail at once until it answers again,
			// rather than each waiting out its timeout. The connection is
			// kept: the next answer clears this.
			if perr := s.probe(ctx); perr != nil {
				s.setErr(fmt.Sprintf("Redis has not answered the change channel's heartbeat for %v, nor a PING: %v", time.Since(heard).Round(time.Millisecond), perr))
				s.down.Store(true)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("change channel: %w", err)
		}
		heard = time.Now()
		switch m := msg.(type) {
		case *redis.Message:
			s.applyChange(m.Payload)
		case *redis.Pong:
			// Redis answers on this connection in order: every change
			// published before the PING was sent has been applied.
			if t, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
				s.trustedSince.Store(max(t, s.trustedSince.Load()))
			}
			s.down.Store(false)
			s.heardAt.Store(s.now())
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				return errors.New("change channel: resubscribed after a reconnection; changes may have been missed")
			}
		}
	}
}

// probe sends a PING on a pooled connection, bounded like any operation.
func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.c.Ping(ctx).Err()
}

// silenceLimit is how many MaxStale periods without a word from Redis make
// the subscriber give the connection up and start over.
const silenceLimit = 10

// heartbeat pings the subscription connection every MaxStale/4, carrying
// the send time that its answer will vouch for.
func (s *Store) heartbeat(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(s.o.MaxStale / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := ps.Ping(ctx, strconv.FormatInt(s.mono(), 10)); err != nil {
				return // the receiver sees the failure too
			}
		}
	}
}

// applyChange applies one published record to the near cache.
func (s *Store) applyChange(payload string) {
	if len(payload) < 2 {
		return
	}
	n := int(payload[0])<<8 | int(payload[1])
	if len(payload) < 2+n {
		return
	}
	k, rec := payload[2:2+n], payload[2+n:]
	e, err := decode([]byte(rec))
	if err != nil {
		s.log.Warn("redis store: undecodable change ignored", "err", err)
		return
	}
	if err := s.near.apply(k, e, s.now()); err != nil {
		s.near.reset(s.near.live) // the entry may be stale now: forget them all
	}
}
