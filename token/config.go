package token

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Config is what one policy says about its tokens. policy.TokenConfig has the
// same fields in the same order, so that token.Config(tc) converts: keep them
// in step.
type Config struct {
	Issuer    string
	Audiences []string
	// Exactly one of JWKSFile (an absolute path, or relative to the working
	// directory) and JWKSURI (http or https) names the issuer's key set.
	JWKSFile, JWKSURI string
	// Algorithms is the allow-list of JWS "alg" values; empty means every
	// asymmetric algorithm below, which is safe because each must also match
	// the type of the key it is verified with.
	Algorithms []string
	ClockSkew  time.Duration
	MaxBytes   int // 0: DefaultMaxBytes
	// BindClaims are read from the token into Claims.Bind, in order.
	BindClaims []string
	// RefreshInterval is how often Run re-reads the key set (0: 5m);
	// MinRefreshInterval bounds how often an unknown kid may cause a refetch
	// (0: 30s). A key set shared by several policies uses the shortest of each.
	RefreshInterval, MinRefreshInterval time.Duration
	// RequireAuthTime refuses tokens without auth_time (invalid_token), for
	// IdPs whose access tokens may lack it: without it S1 counts from the
	// session's start and S3 from iat, which a silently refreshed token
	// renews.
	RequireAuthTime bool
	// MaxLifetime is the longest exp − iat accepted (0: DefaultMaxLifetime).
	// Longer tokens, and tokens with neither iat nor auth_time (whose
	// issuance nothing bounds), are invalid: session ends are kept for this
	// long, and a token must not outlive the end that covers it (S3).
	MaxLifetime time.Duration
}

// Defaults and bounds applied by Provider.Verifier. They are the policy
// schema's (policy/REFERENCE.md), which a policy test checks: a Config built
// by hand gets what a policy file without the field gets.
const (
	DefaultMaxBytes           = 16 << 10
	DefaultMaxLifetime        = 24 * time.Hour
	DefaultRefreshInterval    = 5 * time.Minute
	DefaultMinRefreshInterval = 10 * time.Second
	// MaxClockSkew bounds ClockSkew: S5 wants a bounded skew, and a large one
	// silently extends every token's life.
	MaxClockSkew = 5 * time.Minute
)

// keyKind is the type of public key an algorithm needs; matching it before
// verification is what rules out algorithm confusion.
type keyKind uint8

const (
	kindNone keyKind = iota
	kindRSA
	kindP256
	kindP384
	kindP521
	kindEd25519
)

// algKind maps every accepted signature algorithm to its key type. HMAC and
// "none" are absent on purpose: they are never accepted (S5).
func algKind(alg string) keyKind {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return kindRSA
	case "ES256":
		return kindP256
	case "ES384":
		return kindP384
	case "ES512":
		return kindP521
	case "EdDSA":
		return kindEd25519
	}
	return kindNone
}

// DefaultAlgorithms is the allow-list used when a configuration names none:
// every asymmetric JWS algorithm. HMAC and "none" are never accepted, since
// keys come from a public JWKS (S5).
func DefaultAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// normalize validates cfg, reporting every problem at once, and returns a
// copy with defaults applied and the key set source made canonical.
func (cfg Config) normalize() (Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("token config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.Issuer == "" {
		bad("issuer", "required")
	}
	if len(cfg.Audiences) == 0 {
		bad("audiences", "at least one required")
	}
	if slices.Contains(cfg.Audiences, "") {
		bad("audiences", "empty audience")
	}
	switch {
	case cfg.JWKSFile == "" && cfg.JWKSURI == "":
		bad("jwks_file", "one of jwks_file and jwks_uri required")
	case cfg.JWKSFile != "" && cfg.JWKSURI != "":
		bad("jwks_uri", "jwks_file and jwks_uri are exclusive")
	case cfg.JWKSFile != "":
		abs, err := filepath.Abs(cfg.JWKSFile)
		if err != nil {
			bad("jwks_file", "%v", err)
		}
		cfg.JWKSFile = abs
	default:
		u, err := url.Parse(cfg.JWKSURI)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			bad("jwks_uri", "must be an absolute http(s) URL")
		case u.Scheme == "http" && !authz.IsLoopbackHost(u.Hostname()):
			bad("jwks_uri", "must use https (http only for 127.0.0.1, localhost or [::1])")
		}
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms()
	}
	for _, a := range cfg.Algorithms {
		if algKind(a) == kindNone {
			bad("algorithms", "%q is not an accepted asymmetric signature algorithm", a)
		}
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > MaxClockSkew {
		bad("clock_skew", "must be between 0 and %v", MaxClockSkew)
	}
	if cfg.MaxBytes < 0 {
		bad("max_bytes", "must not be negative")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if slices.Contains(cfg.BindClaims, "") {
		bad("bind_claims", "empty claim name")
	}
	if cfg.RefreshInterval < 0 || cfg.MinRefreshInterval < 0 {
		bad("refresh_interval", "must not be negative")
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.MaxLifetime < 0 {
		bad("max_lifetime", "must not be negative")
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	return cfg, errors.Join(errs...)
}

// fingerprint names everything that decides what Verify returns for a token,
// so that verifiers built from equal configs (a policy reload) share cache
// entries and different ones never do. %q keeps the encoding unambiguous.
func (cfg Config) fingerprint() string {
	return fmt.Sprintf("iss=%q aud=%q alg=%q skew=%d bind=%q keys=%q|%q auth_time=%t life=%d",
		cfg.Issuer, cfg.Audiences, cfg.Algorithms, cfg.ClockSkew, cfg.BindClaims, cfg.JWKSFile, cfg.JWKSURI, cfg.RequireAuthTime, cfg.MaxLifetime)
}
