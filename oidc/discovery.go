package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/sessiongate/sessiongate/authz"
)

// Discovery timing. A provider is asked for its configuration when a policy
// naming it is loaded, again every DiscoveryRefresh, and after a failure
// with a backoff from discoveryRetryMin doubling to discoveryRetryMax. A
// failed refresh keeps the last good configuration in force.
const (
	DiscoveryRefresh  = time.Hour
	discoveryRetryMin = time.Second
	discoveryRetryMax = time.Minute
	// maxErrorText bounds a provider's error text kept for readiness.
	maxErrorText = 200
)

// metadata is one successful discovery: what the flow needs of the
// provider's configuration. Immutable.
type metadata struct {
	issuer        string
	authURL       string
	tokenURL      string
	endSessionURL string // "" when the provider has none
	jwksURI       string
	algorithms    []string // id_token_signing_alg_values_supported, asymmetric only
	authMethods   []string // token_endpoint_auth_methods_supported
	issParameter  bool     // authorization_response_iss_parameter_supported (RFC 9207)
	keys          gooidc.KeySet
	remote        *gooidc.RemoteKeySet
}

// discovery is the configuration of one issuer, shared by every policy
// that signs in with it and kept across policy reloads while one uses it.
type discovery struct {
	issuer string
	cur    atomic.Pointer[metadata] // nil until the first success
	status atomic.Pointer[string]   // last failure, "" after a success

	mu       sync.Mutex // guards the scheduling fields below
	next     time.Time  // when the next attempt is due
	failures int
	inflight bool
}

// errText makes a discovery failure short, single-line and free of the
// response body that go-oidc quotes, for readiness output and logs.
func errText(err error) string {
	var mismatch *gooidc.IssuerMismatchError
	if errors.As(err, &mismatch) {
		return "the discovery document names another issuer (issuer must match exactly, trailing slash included)"
	}
	s := err.Error()
	// go-oidc reports a refusal as "<status>: <body>"; the body is the
	// provider's page, not ours to repeat.
	if len(s) > 4 && s[3] == ' ' && strings.Trim(s[:3], "0123456789") == "" {
		if i := strings.Index(s, ": "); i > 0 {
			s = "discovery answered " + s[:i]
		}
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > maxErrorText {
		s = s[:maxErrorText] + "…"
	}
	return s
}

// fetch runs one discovery. old, when set, lends its key set if the
// jwks_uri did not change, so that a refresh does not forget the keys.
func (rp *RP) fetch(ctx context.Context, issuer string, old *metadata) (*metadata, error) {
	ctx, cancel := context.WithTimeout(gooidc.ClientContext(ctx, rp.client), fetchTimeout)
	defer cancel()
	p, err := gooidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, err
	}
	var doc struct {
		JWKSURI      string   `json:"jwks_uri"`
		EndSession   string   `json:"end_session_endpoint"`
		AuthMethods  []string `json:"token_endpoint_auth_methods_supported"`
		IssParameter bool     `json:"authorization_response_iss_parameter_supported"`
		Algorithms   []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&doc); err != nil {
		return nil, fmt.Errorf("discovery document: %w", err)
	}
	ep := p.Endpoint()
	md := &metadata{issuer: issuer, authURL: ep.AuthURL, tokenURL: ep.TokenURL, endSessionURL: doc.EndSession,
		jwksURI: doc.JWKSURI, authMethods: doc.AuthMethods, issParameter: doc.IssParameter}
	for _, a := range doc.Algorithms {
		if asymmetric(a) {
			md.algorithms = append(md.algorithms, a)
		}
	}
	for name, u := range map[string]string{"authorization_endpoint": md.authURL, "token_endpoint": md.tokenURL, "jwks_uri": md.jwksURI} {
		if !endpointOK(u, issuer) {
			return nil, fmt.Errorf("discovery document: %s missing or not https", name)
		}
	}
	if md.endSessionURL != "" && !endpointOK(md.endSessionURL, issuer) {
		md.endSessionURL = "" // unusable: logout goes straight to logout.redirect_url
	}
	if old != nil && old.jwksURI == md.jwksURI {
		md.remote = old.remote
	} else {
		// Keys are fetched on first use and again on an unknown kid, with
		// the gate's client; go-oidc never cancels that context.
		md.remote = gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), rp.client), md.jwksURI)
	}
	md.keys = md.remote
	return md, nil
}

// endpointOK accepts https endpoints, and http ones for an http issuer on a
// loopback host (local providers in development and tests).
func endpointOK(raw, issuer string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	iu, err := url.Parse(issuer)
	return err == nil && u.Scheme == "http" && iu.Scheme == "http" && authz.IsLoopbackHost(iu.Hostname()) && authz.IsLoopbackHost(u.Hostname())
}

// asymmetric reports whether alg is an allowed ID-token signature
// algorithm: never none, never HMAC (the key would be the client secret).
func asymmetric(alg string) bool {
	return slices.Contains(DefaultAlgorithms(), alg)
}

// DefaultAlgorithms are the ID-token signature algorithms accepted when a
// policy names none.
func DefaultAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// due reports whether d should be asked now and marks it in flight.
func (d *discovery) due(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight || now.Before(d.next) {
		return false
	}
	d.inflight = true
	return true
}

// done records an attempt's outcome and schedules the next.
func (d *discovery) done(now time.Time, md *metadata, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight = false
	if err == nil {
		d.cur.Store(md)
		empty := ""
		d.status.Store(&empty)
		d.failures = 0
		d.next = now.Add(DiscoveryRefresh)
		return
	}
	msg := errText(err)
	d.status.Store(&msg)
	backoff := discoveryRetryMin << min(d.failures, 10)
	d.failures++
	d.next = now.Add(min(backoff, discoveryRetryMax))
}

// attempt runs one discovery of d.
func (rp *RP) attempt(ctx context.Context, d *discovery) {
	md, err := rp.fetch(ctx, d.issuer, d.cur.Load())
	now := rp.clock.Now()
	if ctx.Err() != nil && err != nil {
		d.mu.Lock()
		d.inflight = false
		d.mu.Unlock()
		return
	}
	d.done(now, md, err)
	if err != nil {
		rp.log.Warn("identity provider discovery failed", "issuer", d.issuer, "err", errText(err), "have_previous", d.cur.Load() != nil)
	} else {
		rp.log.Debug("identity provider discovered", "issuer", d.issuer)
	}
	rp.obs.Discovered(d.issuer, err == nil)
}

// ready reports whether sign-ins can start: nil once a discovery
// succeeded (a later failed refresh keeps the last good configuration).
func (d *discovery) ready() error {
	if d.cur.Load() != nil {
		return nil
	}
	if s := d.status.Load(); s != nil && *s != "" {
		return fmt.Errorf("identity provider %s: %s", d.issuer, *s)
	}
	return fmt.Errorf("identity provider %s: discovery pending", d.issuer)
}
