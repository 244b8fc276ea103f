package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/store/memory"
	"github.com/sessiongate/sessiongate/test/load/fixture"
)

// A login.oidc policy beside the fixture's, whose live session the oidc
// scenario presents. Its provider is never reached: a live sign-in session
// is decided on its record and grant alone (no discovery, no token
// endpoint while the access token is far from expiry), so the session is
// written into the store as the callback would have left it, its grant
// sealed with the key of --session-key-file: into Redis with -store, else
// into the embedded store's state file before sessiongate starts.
const (
	signInPolicy = "signin"
	signInIssuer = "http://127.0.0.1:9/realms/app" // discard port: discovery fails, which live sessions never need
	signInIdle   = "30m"                           // the policy's idle_timeout
	signInYAML   = `hosts: [` + fixture.SignInHost + `]
session:
  absolute_timeout: 8h
  idle_timeout: ` + signInIdle + `
  warn_before: 20m
login:
  oidc:
    issuer: ` + signInIssuer + `
    client_id: app
upstream:
  access_token: authorization
  headers: {` + authz.HeaderName + `: name, ` + authz.HeaderEmail + `: email, ` + authz.HeaderGroups + `: groups}
logout:
  path: /logout
  redirect_url: https://` + fixture.SignInHost + `/signed-out
`
)

// writeSignIn writes the login.oidc policy into policies and a session key
// file into dir, and returns the key file's path and its key ring.
func writeSignIn(policies, dir string) (string, *oidc.KeyRing, error) {
	if err := os.WriteFile(filepath.Join(policies, signInPolicy+".yaml"), []byte(signInYAML), 0o644); err != nil {
		return "", nil, err
	}
	var key [32]byte
	_, _ = rand.Read(key[:])
	line := base64.StdEncoding.EncodeToString(key[:]) + "\n"
	path := filepath.Join(dir, "session-keys")
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		return "", nil, err
	}
	ring, err := oidc.ParseKeyFile([]byte(line))
	return path, ring, err
}

// signedIn: one browser with a live sign-in session of the login.oidc
// policy, presented by its cookie; the access token goes upstream.
func (s *setup) signedIn() (*scenario, error) {
	r := s.seeded // the embedded store: loaded from --state-file
	if s.redis != nil {
		var err error
		if r, err = newSignIn(s.keys); err != nil {
			return nil, err
		}
		if err := s.redis.putSignIn(r); err != nil {
			return nil, err
		}
		s.verbose("wrote a sign-in session of policy %s into Redis (grant %d bytes sealed)", signInPolicy, len(r.Grant))
	}
	if r == nil {
		return nil, errors.New("scenario oidc: no sign-in session was written (the embedded store's goes into --state-file before sessiongate starts)")
	}
	// Nothing touches the session before its scenario: written before
	// sessiongate started, it must not have idled out since.
	if idle, _ := time.ParseDuration(signInIdle); time.Since(time.UnixMilli(r.LastActivity)) > idle-time.Minute {
		return nil, fmt.Errorf("scenario oidc: the sign-in session written before sessiongate started is about to pass its idle_timeout (%s): run -scenario oidc alone or earlier", signInIdle)
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

// newSignIn returns a live sign-in session of the login.oidc policy as a
// callback begins it, its grant sealed with keys. The grant is of realistic
// size: a 1.2 KB access token, a 1 KB ID token, a 400-byte refresh token,
// three identity headers (the token and the headers are the fixture's, which
// the floor's answers copy).
func newSignIn(keys *oidc.KeyRing) (*authz.Session, error) {
	rp, err := oidc.New(oidc.Options{Keys: keys})
	if err != nil {
		return nil, err
	}
	si, err := rp.SignIn(signInPolicy, oidc.Config{Issuer: signInIssuer, ClientID: "app", Scopes: []string{"openid"}, CallbackPath: "/_sessiongate/callback"})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	g := &authz.Grant{
		AccessToken: fixture.SignInAccessToken, RefreshToken: strings.Repeat("r", 400),
		IDToken: "eyJ" + strings.Repeat("i", 1000), AccessExpiry: now.Add(2 * time.Hour).UnixMilli(),
		Headers: fixture.SignInIdentity,
	}
	sealed, err := si.Seal(g)
	if err != nil {
		return nil, err
	}
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	ms := now.UnixMilli()
	return &authz.Session{
		ID: base64.RawURLEncoding.EncodeToString(raw[:]), Policy: signInPolicy, Subject: fixture.SignInSubject,
		Identity: authz.IdentityDigest(signInIssuer, fixture.SignInSubject, nil), Scope: authz.ScopeDigest(signInIssuer, fixture.SignInSubject, "op-sid-1"),
		SignIn: ms - 60_000, Created: ms - 60_000, LastActivity: ms, KeepUntil: ms + (9 * time.Hour).Milliseconds(),
		Method: authz.MethodOIDC, Grant: string(sealed), GrantAt: ms,
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
	if err := rs.c.Set(ctx, "sessiongate:s:"+signInPolicy+"/"+r.ID, rec, 0).Err(); err != nil {
		return err
	}
	return rs.c.Set(ctx, "sessiongate:c:"+signInPolicy+"/"+hex.EncodeToString(r.Scope[:]), scope, 0).Err()
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
