package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	maxJWKSBytes = 1 << 20
	fetchTimeout = 5 * time.Second
	minRSABits   = 2048
)

// publicKey is one usable verification key of a key set.
type publicKey struct {
	kid  string
	alg  string // the JWK's "alg", "" when it does not restrict one
	kind keyKind
	pub  crypto.PublicKey
}

// keys is an immutable snapshot of a key set. gen is unique across the
// provider, so a cache entry stamped with it dies when the keys change.
type keys struct {
	gen    uint64
	list   []publicKey
	digest [sha256.Size]byte
}

// candidates returns the keys that may verify a token signed with alg and
// kid, and whether any key carries that kid at all (unknown kids refetch).
func (k *keys) candidates(kid, alg string) (out []publicKey, kidKnown bool) {
	kind := algKind(alg)
	for _, pk := range k.list {
		if kid != "" && pk.kid != kid {
			continue
		}
		kidKnown = true
		if pk.kind == kind && (pk.alg == "" || pk.alg == alg) {
			out = append(out, pk)
		}
	}
	return out, kid != "" && kidKnown
}

// kids lists the key ids of k, for the log of a refused token.
func (k *keys) kids() []string {
	out := make([]string, 0, len(k.list))
	for _, pk := range k.list {
		out = append(out, pk.kid)
	}
	return out
}

// keySet is the key set of one source (file path or URL), shared by every
// verifier that names it so that policy reloads do not refetch.
type keySet struct {
	source string // canonical path or URL: the sharing key
	name   string // for logs and metrics: the URL without query or userinfo
	read   func(ctx context.Context) ([]byte, error)
	cur    atomic.Pointer[keys]
	every  atomic.Int64 // shortest RefreshInterval asked for, ns

	mu       sync.Mutex
	last     time.Time     // last fetch attempt, for rate limiting
	failures int           // consecutive failed fetches, for the retry backoff
	inflight chan struct{} // closed when the running fetch ends
}

// Retries of a failed periodic refresh back off from retryMin, doubling up to
// the refresh interval: an IdP that is down is not hammered, and one that
// comes back is noticed within a bounded time instead of a full interval.
const retryMin = time.Second

// period is how long after the last attempt Run fetches again.
func (ks *keySet) period() time.Duration {
	every := time.Duration(ks.every.Load())
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.failures == 0 {
		return every
	}
	return min(every, retryMin<<min(ks.failures-1, 30))
}

func (p *Provider) newKeySet(cfg Config) *keySet {
	ks := &keySet{source: cfg.JWKSFile, name: cfg.JWKSFile}
	if cfg.JWKSFile != "" {
		ks.read = func(context.Context) ([]byte, error) { return readFile(cfg.JWKSFile) }
	} else {
		ks.source = cfg.JWKSURI
		ks.name = redactURL(cfg.JWKSURI)
		ks.read = func(ctx context.Context) ([]byte, error) { return p.get(ctx, cfg.JWKSURI) }
	}
	ks.cur.Store(&keys{})
	ks.every.Store(int64(cfg.RefreshInterval))
	return ks
}

// askEvery lowers the periodic refresh interval to d if d is shorter.
func (ks *keySet) askEvery(d time.Duration) {
	for {
		old := ks.every.Load()
		if int64(d) >= old || ks.every.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// maybeRefresh refetches the keys unless a fetch was attempted less than
// every ago. Concurrent callers share one fetch and wait for it, or for
// their ctx: a request is never held past its deadline by a slow IdP.
func (ks *keySet) maybeRefresh(ctx context.Context, p *Provider, every time.Duration) {
	ks.mu.Lock()
	ch := ks.inflight
	if ch == nil {
		now := p.clock.Now()
		if !ks.last.IsZero() && now.Sub(ks.last) < every {
			ks.mu.Unlock()
			return
		}
		ks.last = now
		ch = make(chan struct{})
		ks.inflight = ch
		// The fetch is shared: one caller's cancellation must not fail it
		// for all, so it runs on its own, bounded by fetchTimeout.
		go ks.fetch(context.WithoutCancel(ctx), p, ch)
	}
	ks.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// fetch loads the keys of ks and closes ch when done.
func (ks *keySet) fetch(ctx context.Context, p *Provider, ch chan struct{}) {
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	err := p.load(fctx, ks)
	ks.mu.Lock()
	if err != nil {
		ks.failures++
	} else {
		ks.failures = 0
	}
	ks.inflight = nil
	ks.mu.Unlock()
	if err != nil {
		// Say what the policies using it are left with: the keys of an
		// earlier fetch, or none at all (every token refused). Said before
		// the waiters go on, so that what they do next follows it.
		if k := ks.cur.Load(); len(k.list) > 0 {
			p.log.Warn("token: JWKS refresh failed, keeping the last good keys", "source", ks.name, "keys", len(k.list), "err", err)
		} else {
			p.log.Error("token: JWKS fetch failed and no keys were ever loaded from it: every token of the policies using it is refused until a fetch succeeds",
				"source", ks.name, "retry_in", ks.period().String(), "err", err)
		}
	}
	close(ch)
}

// load reads and installs the keys of ks. On any failure the current keys
// stay: a broken or unreachable IdP must not lock everybody out.
func (p *Provider) load(ctx context.Context, ks *keySet) error {
	body, err := ks.read(ctx)
	var list []publicKey
	if err == nil {
		list, err = parseJWKS(body)
	}
	p.obs.KeysRefreshed(ks.name, err == nil)
	if err != nil {
		return err
	}
	next := &keys{list: list, digest: digestKeys(list)}
	if old := ks.cur.Load(); old.gen != 0 && old.digest == next.digest {
		return nil // unchanged: keep the generation, and with it the cache
	}
	next.gen = p.gen.Add(1)
	ks.cur.Store(next)
	p.log.Info("token: JWKS keys loaded", "source", ks.name, "keys", len(list))
	return nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCapped(f, path)
}

func (p *Provider) get(ctx context.Context, uri string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := p.client.Do(req)
	if err != nil {
		// Drop the *url.Error wrapper: its URL may carry secrets in the query.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("GET JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET JWKS: HTTP status %d", resp.StatusCode)
	}
	return readCapped(resp.Body, "JWKS response")
}

func readCapped(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", what, maxJWKSBytes)
	}
	return b, nil
}

// parseJWKS keeps the public signature keys of a JWKS document that are
// strong enough to trust. Other keys are skipped (RFC 7517 §5 says to ignore
// what one does not understand); a set with none left is an error.
func parseJWKS(b []byte) ([]publicKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var out []publicKey
	for _, raw := range doc.Keys {
		var jwk jose.JSONWebKey
		if jwk.UnmarshalJSON(raw) != nil || !jwk.Valid() || !jwk.IsPublic() || (jwk.Use != "" && jwk.Use != "sig") {
			continue
		}
		kind := keyKindOf(jwk.Key)
		if kind == kindNone || (jwk.Algorithm != "" && algKind(jwk.Algorithm) != kind) {
			continue
		}
		out = append(out, publicKey{kid: jwk.KeyID, alg: jwk.Algorithm, kind: kind, pub: jwk.Key})
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS: no usable public signature key (RSA >= 2048 bits, EC P-256/384/521, Ed25519)")
	}
	return out, nil
}

func keyKindOf(k crypto.PublicKey) keyKind {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() >= minRSABits {
			return kindRSA
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return kindP256
		case elliptic.P384():
			return kindP384
		case elliptic.P521():
			return kindP521
		}
	case ed25519.PublicKey:
		return kindEd25519
	}
	return kindNone
}

// digestKeys identifies a key list by content, so that a periodic refresh
// that finds the same keys keeps the verified-token cache warm.
func digestKeys(list []publicKey) [sha256.Size]byte {
	h := sha256.New()
	for _, k := range list {
		tp, _ := (&jose.JSONWebKey{Key: k.pub}).Thumbprint(crypto.SHA256)
		fmt.Fprintf(h, "%q %q %x\n", k.kid, k.alg, tp)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// redactURL drops userinfo, query and fragment, which may carry secrets.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "jwks_uri"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
