package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/oidc"
	"github.com/sessiongate/sessiongate/policy"
	"github.com/sessiongate/sessiongate/token"
)

// firstDiscoveryWait bounds how long serve waits for the first discovery
// of the identity providers before it listens.
const firstDiscoveryWait = 3 * time.Second

// loadKeys returns the key ring that seals sign-in grants and login
// transactions: --session-key-file when given; else, for the embedded
// store, a random key of this process (sign-in sessions do not survive a
// restart). A shared store without the file is refused by newSignIn once a
// login.oidc policy needs it: replicas must open each other's grants.
func loadKeys(file string) (*oidc.KeyRing, error) {
	if file == "" {
		return oidc.RandomKeyRing(), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--session-key-file: %w", err)
	}
	keys, err := oidc.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("--session-key-file %s: %w", file, err)
	}
	return keys, nil
}

// errNeedKeyFile refuses login.oidc policies on a shared store without
// --session-key-file.
var errNeedKeyFile = errors.New("sign-in with a shared session store needs --session-key-file (the same keys on every replica)")

// signInFactory builds the policy.Options.NewSignIn of serve and validate.
// shared says the store is shared between replicas; keyFile whether the
// operator gave the keys.
func signInFactory(rp *oidc.RP, tokens *token.Provider, shared, keyFile bool) func(string, policy.OIDCConfig) (authz.SignIn, authz.Verifier, error) {
	return func(name string, oc policy.OIDCConfig) (authz.SignIn, authz.Verifier, error) {
		if shared && !keyFile {
			return nil, nil, errNeedKeyFile
		}
		si, err := rp.SignIn(name, oidcConfig(oc))
		if err != nil {
			return nil, nil, err
		}
		tc := token.Config(oc.Token)
		if tc.JWKSFile != "" || tc.JWKSURI != "" {
			v, err := tokens.VerifierFor(name, tc)
			if err != nil {
				return nil, nil, err
			}
			return si, v, nil
		}
		// Bearer tokens are checked against the discovered keys, with a
		// verifier built once discovery names them.
		return si, si.AccessVerifier(func(uri string) (authz.Verifier, error) {
			tc := tc
			tc.JWKSURI = uri
			return tokens.VerifierFor(name, tc)
		}), nil
	}
}

// oidcConfig converts the policy's sign-in settings.
func oidcConfig(oc policy.OIDCConfig) oidc.Config {
	c := oidc.Config{
		Issuer: oc.Issuer, ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, ClientKey: oc.ClientKey, ClientKeyID: oc.ClientKeyID, ClientAuth: oc.ClientAuth,
		Scopes: oc.Scopes, CallbackPath: oc.CallbackPath, Params: oc.Params, ReauthParams: oc.ReauthParams,
		PostLogoutRedirectURL: oc.PostLogoutRedirectURL, MaxAge: oc.MaxAge, Algorithms: oc.Token.Algorithms,
		ClockSkew: oc.Token.ClockSkew, BindClaims: oc.Token.BindClaims, RequireAuthTime: oc.Token.RequireAuthTime,
	}
	for _, h := range oc.Headers {
		c.Headers = append(c.Headers, oidc.HeaderClaim{Header: h.Header, Claim: h.Claim})
	}
	return c
}

// signInPolicies lists the policies that sign in themselves.
func signInPolicies(ps []*authz.Policy) []string {
	var names []string
	for _, p := range ps {
		if p.Login.SignIn != nil {
			names = append(names, p.Name)
		}
	}
	return names
}

// signInNotes says which policies cannot sign in now, for /readyz: a
// provider that is down takes no replica out of rotation (the other
// policies, and this one's live sessions, are still served).
func signInNotes(ps []*authz.Policy) []string {
	var notes []string
	for _, p := range ps {
		if r, ok := p.Login.SignIn.(interface{ Ready() error }); ok {
			if err := r.Ready(); err != nil {
				notes = append(notes, fmt.Sprintf("policy %s cannot sign in: %v", p.Name, err))
			}
		}
	}
	return notes
}

// randomKeyWarning tells the operator, once, what a per-process key means
// when the first login.oidc policies are loaded (at start or by a reload).
type randomKeyWarning struct {
	log  *slog.Logger
	once sync.Once
}

func (w *randomKeyWarning) check(names []string) {
	if w == nil || len(names) == 0 {
		return
	}
	w.once.Do(func() {
		w.log.Warn("no --session-key-file: sign-in sessions are sealed with a random key of this process and do not survive a restart",
			"policies", names)
	})
}
