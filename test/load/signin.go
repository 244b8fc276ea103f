package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

// signedIn: one browser with a live sign-in session of the login.oidc
// policy, presented by its cookie; the access token goes upstream.
func (s *setup) signedIn() (*scenario, error) {
	r := s.seeded // the embedded store: loaded from --state-file
	if s.redis != nil {
		var err error
		if r, err = fixture.NewSignIn(s.keys); err != nil {
			return nil, err
		}
		if err := s.redis.putSignIn(r); err != nil {
			return nil, err
		}
		s.verbose("wrote a sign-in session of policy %s into Redis (grant %d bytes sealed)", fixture.SignInPolicy, len(r.Grant))
	}
	if r == nil {
		return nil, errors.New("scenario oidc: no sign-in session was written (the embedded store's goes into --state-file before sessiongate starts)")
	}
	// Nothing touches the session before its scenario: written before
	// sessiongate started, it must not have idled out since.
	if time.Since(time.UnixMilli(r.LastActivity)) > fixture.SignInIdle-time.Minute {
		return nil, fmt.Errorf("scenario oidc: the sign-in session written before sessiongate started is about to pass its idle_timeout (%s): run -scenario oidc alone or earlier", fixture.SignInIdle)
	}
	req := fixture.Request(appPath, "", r.ID, true)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Host, h.Headers[":authority"] = fixture.SignInHost, fixture.SignInHost
	return &scenario{
		name: "oidc-session", about: "allow: one browser, live login.oidc session (cookie), access token and identity headers upstream",
		requests: s.cfg.requests,
		req:      func(int, int) *authv3.CheckRequest { return req },
		want: func(resp *authv3.CheckResponse) error {
			if err := allowed(false)(resp); err != nil {
				return err
			}
			for _, o := range resp.GetOkResponse().GetHeaders() {
				if o.GetHeader().GetKey() == "authorization" && strings.HasPrefix(o.GetHeader().GetValue(), "Bearer ") {
					return nil
				}
			}
			return errors.New("allowed without the access token upstream")
		},
	}, nil
}

// putSignIn writes r and its scope, the scope's first session, into Redis
// under the Redis store's keys (store/redis: sessionKey, scopeKey), default
// prefix.
func (rs *redisStore) putSignIn(r *authz.Session) error {
	rec, err := r.AppendBinary(nil)
	if err != nil {
		return err
	}
	scope, err := (&authz.ScopeState{Current: r.ID, KeepUntil: r.KeepUntil}).AppendBinary(nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := rs.c.Set(ctx, "sessiongate:s:"+fixture.SignInPolicy+"/"+r.ID, rec, 0).Err(); err != nil {
		return err
	}
	return rs.c.Set(ctx, "sessiongate:c:"+fixture.SignInPolicy+"/"+hex.EncodeToString(r.Scope[:]), scope, 0).Err()
}

// writeStateFile begins r in the embedded store (store/memory) kept in the
// state file path, as the callback begins a sign-in session (record, scope,
// the grant apart, the index), and closes it, which writes the snapshot
// that sessiongate serve --state-file path loads.
func writeStateFile(path string, r *authz.Session) error {
	st, err := memory.New(memory.Options{StateFile: path})
	if err != nil {
		return err
	}
	return errors.Join(st.Begin(context.Background(), r), st.Close())
}
