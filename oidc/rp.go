// Package oidc is sessiongate's OpenID Connect relying party: it implements
// authz.SignIn for login.oidc policies (S12–S17) on top of go-oidc
// (discovery, ID-token signatures) and golang.org/x/oauth2 (code exchange,
// refresh, PKCE). It owns the provider configuration (discovered in the
// background, shared by policies of one issuer, kept across reloads), the
// login transactions (sealed cookies in a few slots, used up through a
// one-time claim in the session store), ID-token validation, the identity
// headers taken from its claims, RP-initiated logout, and the key ring that
// seals grants and transactions (AES-256-GCM, rotation).
//
// Nothing here logs or returns a code, token, state, secret or cookie value.
package oidc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"weak"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/token"
)

// fetchTimeout bounds one request to the provider.
const fetchTimeout = 10 * time.Second

// runTick is how often Run looks for discoveries that are due.
const runTick = time.Second

// Claimer records one-time claims: Claim returns true only for the first
// call with a key, on every replica, until keepUntil (Unix ms) has passed.
// The session store implements it; it uses up login transactions (S13).
type Claimer interface {
	Claim(ctx context.Context, key authz.Digest, keepUntil int64) (bool, error)
}

// Observer receives the events that metrics are made of. Callbacks and
// refreshes are counted by the engine, which sees their whole outcome
// (authz.SignInCounter); this is the provider side.
type Observer interface {
	// Discovered reports one discovery attempt; issuer is not a label.
	Discovered(issuer string, ok bool)
	// TokenRequested reports one request to the token endpoint: grant is
	// "authorization_code" (a sign-in's code exchange) or "refresh_token",
	// elapsed the round trip, ok whether it returned tokens.
	TokenRequested(grant string, elapsed time.Duration, ok bool)
}

type nopObserver struct{}

func (nopObserver) Discovered(string, bool)                    {}
func (nopObserver) TokenRequested(string, time.Duration, bool) {}

// Options configure an RP. Keys is required.
type Options struct {
	// Keys seal grants and login transactions. Every replica that shares a
	// store must have the same ring.
	Keys *KeyRing
	// Claims uses up login transactions. Default: a process-local set,
	// right for one replica only.
	Claims     Claimer
	Logger     *slog.Logger
	Clock      authz.Clock
	HTTPClient *http.Client // default: a client with a 10 s timeout
	Observer   Observer
}

// RP builds the SignIn of each login.oidc policy and owns what they share:
// the key ring and the discovered configuration of each issuer. One RP
// lives as long as the process; Run keeps the configurations fresh.
type RP struct {
	keys   *KeyRing
	claims Claimer
	log    *slog.Logger
	clock  authz.Clock
	client *http.Client
	obs    Observer

	mu sync.Mutex
	// Weak, so that an issuer no policy names any more is forgotten;
	// SignIns hold their discovery strongly.
	disc map[string]weak.Pointer[discovery]
}

// New returns an RP with o's dependencies.
func New(o Options) (*RP, error) {
	if o.Keys == nil {
		return nil, errors.New("oidc: no key ring")
	}
	rp := &RP{keys: o.Keys, claims: o.Claims, log: o.Logger, clock: o.Clock, client: o.HTTPClient, obs: o.Observer,
		disc: map[string]weak.Pointer[discovery]{}}
	if rp.log == nil {
		rp.log = slog.New(slog.DiscardHandler)
	}
	if rp.clock == nil {
		rp.clock = authz.SystemClock{}
	}
	if rp.client == nil {
		rp.client = &http.Client{Timeout: fetchTimeout}
	}
	// Whoever built the client: redirects keep the https-or-loopback rule
	// of key sets on every hop (discovery, keys), and a POST (the token
	// endpoint, carrying the code, the PKCE verifier and perhaps the client
	// secret) is never sent on: its 3xx is the answer, an error.
	c := *rp.client
	c.CheckRedirect = checkRedirect
	rp.client = &c
	if rp.obs == nil {
		rp.obs = nopObserver{}
	}
	if rp.claims == nil {
		rp.claims = &localClaims{clock: rp.clock, m: map[authz.Digest]int64{}}
	}
	return rp, nil
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if via[0].Method != http.MethodGet { // also a 302/303, which Go would follow as a GET
		return http.ErrUseLastResponse
	}
	return token.CheckRedirect(req, via)
}

// discovery returns the shared discovery of issuer, new ones due at once.
func (rp *RP) discovery(issuer string) *discovery {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if d := rp.disc[issuer].Value(); d != nil {
		return d
	}
	d := &discovery{issuer: issuer}
	rp.disc[issuer] = weak.Make(d)
	return d
}

// live returns the discoveries still in use, forgetting the others.
func (rp *RP) live() []*discovery {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	out := make([]*discovery, 0, len(rp.disc))
	for k, w := range rp.disc {
		if d := w.Value(); d != nil {
			out = append(out, d)
		} else {
			delete(rp.disc, k)
		}
	}
	return out
}

// Run discovers every issuer in use, refreshes each DiscoveryRefresh and
// retries failures with backoff, until ctx is done. A provider that cannot
// be reached delays no other: each attempt runs on its own.
func (rp *RP) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(runTick)
	defer t.Stop()
	for {
		now := rp.clock.Now()
		for _, d := range rp.live() {
			if d.due(now) {
				wg.Go(func() { rp.attempt(ctx, d) })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DiscoverNow runs every due discovery and waits for them: for tests and
// for a first attempt before serving.
func (rp *RP) DiscoverNow(ctx context.Context) {
	var wg sync.WaitGroup
	now := rp.clock.Now()
	for _, d := range rp.live() {
		if d.due(now) {
			wg.Go(func() { rp.attempt(ctx, d) })
		}
	}
	wg.Wait()
}

// localClaims is the process-local Claimer: enough for one replica.
type localClaims struct {
	clock authz.Clock
	mu    sync.Mutex
	m     map[authz.Digest]int64
}

// maxLocalClaims bounds the local set; expired claims are swept first.
const maxLocalClaims = 1 << 20

func (c *localClaims) Claim(_ context.Context, key authz.Digest, keepUntil int64) (bool, error) {
	now := c.clock.Now().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.m[key]; ok && until >= now {
		return false, nil
	}
	if len(c.m) >= maxLocalClaims {
		for k, until := range c.m {
			if until < now {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxLocalClaims {
			return false, errors.New("too many login attempts in flight")
		}
	}
	c.m[key] = keepUntil
	return true, nil
}
