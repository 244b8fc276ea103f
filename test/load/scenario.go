package main

import (
	"errors"
	"fmt"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

// scenario is one kind of traffic. Run r of a scenario (runs 2p and 2p+1
// are pair p's, whichever server goes first) sends req(r, 0), req(r, 1), …,
// the first -warmup of them unmeasured; want checks sessiongate's answers.
type scenario struct {
	name, about string
	requests    int
	req         func(run, i int) *authv3.CheckRequest
	want        func(resp *authv3.CheckResponse) error
}

const appPath = "/app/orders?page=2"

// setup is what scenarios are built from.
type setup struct {
	fx      *fixture.Fixture
	sg      *server
	redis   *redisStore    // sessiongate's store with -store, else nil
	keys    *oidc.KeyRing  // of --session-key-file
	seeded  *authz.Session // the oidc scenario's, in the embedded store's state file; nil with -store
	cfg     config
	signIn  time.Time
	verbose func(format string, args ...any)
}

func (s *setup) build(name string) (*scenario, error) {
	switch name {
	case "live":
		return s.live()
	case "api":
		return s.api()
	case "oidc":
		return s.signedIn()
	case "new":
		return s.fresh()
	case "deny":
		return s.deny(), nil
	case "mix":
		return s.mix()
	}
	return nil, fmt.Errorf("unknown scenario %q", name) // parse lets none through
}

// live: one user, one token (verified once, then cached), one live session
// presented by its cookie: the hot path of steady traffic.
func (s *setup) live() (*scenario, error) {
	reqs, _, err := s.establish(fixture.LiveUserPrefix, 1)
	if err != nil {
		return nil, err
	}
	return &scenario{
		name: "live-session", about: "allow: one user, cached token, live session (cookie)",
		requests: s.cfg.requests,
		req:      func(int, int) *authv3.CheckRequest { return reqs[0] },
		want:     allowed(false),
	}, nil
}

// api: one API client, one token (verified once, then cached), no cookie:
// its session is its scope's current one, found by the token alone.
func (s *setup) api() (*scenario, error) {
	_, toks, err := s.establish("api-user-", 1)
	if err != nil {
		return nil, err
	}
	req := fixture.Request(appPath, toks[0], "", false)
	return &scenario{
		name: "api-client", about: "allow: one API client, cached token, live session, no cookie",
		requests: s.cfg.requests,
		req:      func(int, int) *authv3.CheckRequest { return req },
		want:     allowed(false),
	}, nil
}

// fresh: every request a token never seen before, of a new user: RS256
// verification, a new session and its cookie.
func (s *setup) fresh() (*scenario, error) {
	per := s.cfg.warmup + s.cfg.newRequests
	s.verbose("minting %d tokens for new-session (RS256 signing, about 1 ms each)", per*s.cfg.pairs)
	// Floor and sessiongate runs of a pair send the same tokens: the floor
	// keeps nothing, sessiongate sees each token once.
	toks, err := s.fx.Tokens("new-user-", per*s.cfg.pairs, s.signIn)
	if err != nil {
		return nil, err
	}
	reqs := make([]*authv3.CheckRequest, len(toks))
	for i, t := range toks {
		reqs[i] = fixture.Request(appPath, t, "", false)
	}
	return &scenario{
		name: "new-session", about: "allow: first-seen token (RS256 verify), new session, Set-Cookie",
		requests: s.cfg.newRequests,
		req:      func(run, i int) *authv3.CheckRequest { return reqs[(run/2)*per+i] },
		want:     allowed(true),
	}, nil
}

// deny: a browser navigation without a token, redirected to the login page.
func (s *setup) deny() *scenario {
	req := fixture.Request(appPath, "", "", true)
	return &scenario{
		name: "deny-302", about: "deny: browser without token, 302 to login",
		requests: s.cfg.requests,
		req:      func(int, int) *authv3.CheckRequest { return req },
		want: func(resp *authv3.CheckResponse) error {
			if c := codes.Code(resp.GetStatus().GetCode()); c != codes.Unauthenticated {
				return fmt.Errorf("status %v, want Unauthenticated", c)
			}
			if st := resp.GetDeniedResponse().GetStatus().GetCode(); st != 302 {
				return fmt.Errorf("HTTP status %d, want 302", st)
			}
			return nil
		},
	}
}

// mix: many users, each with a cached token and a live session, requests
// cycling through them: the token cache and the store at realistic size.
func (s *setup) mix() (*scenario, error) {
	reqs, _, err := s.establish("mix-user-", s.cfg.users)
	if err != nil {
		return nil, err
	}
	return &scenario{
		name: "mix", about: fmt.Sprintf("allow: %d users, cached tokens, live sessions", len(reqs)),
		requests: s.cfg.requests,
		// A stride coprime with the user count spreads consecutive requests
		// over users (and cache and store shards).
		req:  func(_, i int) *authv3.CheckRequest { return reqs[(i*7919)%len(reqs)] },
		want: allowed(false),
	}, nil
}

// establish mints n users' tokens, opens their sessions on sessiongate and
// returns each user's request carrying token and session cookie, and the
// tokens.
func (s *setup) establish(prefix string, n int) ([]*authv3.CheckRequest, []string, error) {
	s.verbose("minting %d tokens and opening their sessions", n)
	toks, err := s.fx.Tokens(prefix, n, s.signIn)
	if err != nil {
		return nil, nil, err
	}
	reqs := make([]*authv3.CheckRequest, n)
	o := drive(s.sg.api, s.cfg.streams, s.cfg.limit, load{
		n:   n,
		req: func(i int) *authv3.CheckRequest { return fixture.Request(appPath, toks[i], "", false) },
		check: func(i int, resp *authv3.CheckResponse) error {
			if err := allowed(true)(resp); err != nil {
				return err
			}
			id, _ := fixture.SessionCookie(resp)
			reqs[i] = fixture.Request(appPath, toks[i], id, false)
			return nil
		},
	})
	if o.failures > 0 || o.done < n {
		return nil, nil, fmt.Errorf("opening %d sessions: %d answered, %d failed: %v", n, o.done, o.failures, o.firstErr)
	}
	return reqs, toks, nil
}

// allowed checks an allow with the upstream identity, and a new session's
// cookie exactly when newSession.
func allowed(newSession bool) func(*authv3.CheckResponse) error {
	return func(resp *authv3.CheckResponse) error {
		if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK {
			return fmt.Errorf("status %v (%s), want OK", c, resp.GetStatus().GetMessage())
		}
		if len(resp.GetOkResponse().GetHeaders()) == 0 {
			return errors.New("allowed without identity headers")
		}
		if _, set := fixture.SessionCookie(resp); set != newSession {
			return fmt.Errorf("session cookie set: %v, want %v", set, newSession)
		}
		return nil
	}
}
