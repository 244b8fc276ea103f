// Package token verifies the bearer tokens of sessiongate's policies (S5):
// compact JWS signed with an asymmetric key from the issuer's JWKS (a file or
// a URL, refreshed and rotated), an algorithm allow-list that must also match
// the key type, and the iss, aud, exp, nbf, iat and sub claims checked with a
// bounded clock skew. It implements authz.Verifier, with a verified-token
// cache shared by every policy so that the hot path costs no cryptography.
package token

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sessiongate/sessiongate/authz"
)

// DefaultCacheSize is the default number of verified tokens a Provider keeps.
const DefaultCacheSize = 100_000

// runTick is how often Run looks for key sets due for a refresh.
const runTick = time.Second

// Observer receives the events that metrics are made of. Calls happen on the
// request path and must be cheap.
type Observer interface {
	CacheHit()
	CacheMiss()
	// KeysRefreshed reports one JWKS fetch; source is a file path or a URL
	// without query or userinfo.
	KeysRefreshed(source string, ok bool)
}

type nopObserver struct{}

func (nopObserver) CacheHit()                  {}
func (nopObserver) CacheMiss()                 {}
func (nopObserver) KeysRefreshed(string, bool) {}

// Options configure a Provider; every field is optional.
type Options struct {
	Logger     *slog.Logger                 // default: discard
	Clock      interface{ Now() time.Time } // default: wall clock; paces JWKS refreshes
	HTTPClient *http.Client                 // default: a client of its own
	CacheSize  int                          // verified tokens kept; default DefaultCacheSize
	Observer   Observer                     // default: none
}

// Provider builds verifiers and owns what they share: key sets by source and
// the verified-token cache. One Provider lives as long as the process.
type Provider struct {
	log    *slog.Logger
	clock  interface{ Now() time.Time }
	client *http.Client
	obs    Observer
	cache  *cache
	gen    atomic.Uint64 // key set generations, unique across sources
	// refusals rate-limits the log lines of refused tokens.
	refusals refusalLog

	mu sync.Mutex
	// Weak, so that a key set no policy uses any more stops being refreshed
	// and is freed; verifiers hold it strongly.
	sets map[string]weak.Pointer[keySet]
}

// NewProvider returns a Provider with o's dependencies.
func NewProvider(o Options) *Provider {
	p := &Provider{log: o.Logger, clock: o.Clock, client: o.HTTPClient, obs: o.Observer,
		sets: make(map[string]weak.Pointer[keySet])}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.clock == nil {
		p.clock = authz.SystemClock{}
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: fetchTimeout}
	}
	// Redirects follow the jwks_uri rule on every hop, whoever built the client.
	c := *p.client
	c.CheckRedirect = CheckRedirect
	p.client = &c
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	p.cache = newCache(o.CacheSize)
	return p
}

// Verifier validates cfg and returns its verifier. A new jwks_file is read
// now, and an unreadable one or one without a usable key is an error; a new
// jwks_uri is fetched by Run or by the first token, so that an IdP outage
// does not fail a policy reload. Known sources reuse their keys.
func (p *Provider) Verifier(cfg Config) (authz.Verifier, error) {
	return p.VerifierFor("", cfg)
}

// VerifierFor is Verifier for the policy named policy, which the log lines
// of refused tokens name. The verifier also implements KeyCounter.
func (p *Provider) VerifierFor(policy string, cfg Config) (authz.Verifier, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	ks, err := p.keySet(cfg)
	if err != nil {
		return nil, err
	}
	v := &verifier{p: p, ks: ks, policy: policy, cfg: cfg, fp: cfg.fingerprint()}
	v.fpHash = maphash.String(p.cache.seed, v.fp)
	for _, a := range cfg.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	return v, nil
}

// KeyCounter is implemented by the verifiers of a Provider: the number of
// usable signature keys its key set holds now. 0 means that every token of
// the policy is refused (a jwks_uri not fetched yet, or unreachable since
// the start); readiness and the token_keys metric report it.
type KeyCounter interface {
	KeyCount() int
}

var _ KeyCounter = (*verifier)(nil)

// KeyCount implements KeyCounter.
func (v *verifier) KeyCount() int { return len(v.ks.cur.Load().list) }

func (p *Provider) keySet(cfg Config) (*keySet, error) {
	src := cfg.JWKSFile + cfg.JWKSURI // exactly one is set
	p.mu.Lock()
	defer p.mu.Unlock()
	if ks := p.sets[src].Value(); ks != nil {
		ks.askEvery(cfg.RefreshInterval)
		return ks, nil
	}
	ks := p.newKeySet(cfg)
	if cfg.JWKSFile != "" {
		// Held under p.mu: a local file is quick, and a second verifier for
		// the same source must not load it twice.
		if err := p.load(context.Background(), ks); err != nil {
			return nil, fmt.Errorf("token config: jwks_file %s: %w", cfg.JWKSFile, err)
		}
		ks.last = p.clock.Now()
	}
	p.sets[src] = weak.Make(ks)
	return ks, nil
}

// liveSets returns the key sets still in use, forgetting the others.
func (p *Provider) liveSets() []*keySet {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*keySet, 0, len(p.sets))
	for src, w := range p.sets {
		if ks := w.Value(); ks != nil {
			out = append(out, ks)
		} else {
			delete(p.sets, src)
		}
	}
	return out
}

// Run refreshes every key set in use each RefreshInterval, retrying a failed
// refresh sooner with backoff, until ctx is done.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(runTick)
	defer t.Stop()
	for {
		p.refreshDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshDue is one round of Run, by the injected clock.
func (p *Provider) refreshDue(ctx context.Context) {
	for _, ks := range p.liveSets() {
		if ctx.Err() != nil {
			return
		}
		ks.maybeRefresh(ctx, p, ks.period())
	}
}

// maxRedirects bounds the redirects of one key set fetch.
const maxRedirects = 5

// CheckRedirect applies the jwks_uri rule (https, or http to a loopback
// host) to every hop of a key set fetch, and never lets one leave https: a
// key set fetched over https must not be handed over to plain http, loopback
// or not, where anyone on the path (or any local process) could serve keys.
// The error names no URL (it may carry secrets in its query). Package oidc
// applies it to discovery too.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	switch u := req.URL; {
	case u.Scheme == "https":
		return nil
	case u.Scheme != "http" || !authz.IsLoopbackHost(u.Hostname()):
		return errors.New("redirect to a URL that is neither https nor http on a loopback host refused")
	case via[len(via)-1].URL.Scheme == "https":
		return errors.New("redirect from https to http refused")
	}
	return nil
}
