package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sessiongate/sessiongate/authz"
)

// Options configure how policies are compiled.
type Options struct {
	// NewVerifier builds the token verifier of one policy. It is called
	// only once every policy of a load is valid, once per policy and load,
	// so that a broken reload builds nothing; a factory that wants keys and
	// verified-token caches to survive reloads keeps them by cfg itself.
	// An error is reported as "file:line: token: <err>". Nil leaves
	// Policy.Verifier nil, for validation only.
	NewVerifier func(policyName string, cfg TokenConfig) (authz.Verifier, error)
	// NewSignIn builds the sign-in of a login.oidc policy and the verifier
	// of its API clients' bearer tokens (cfg.Token; keys from discovery
	// when it names none), in place of NewVerifier, on the same terms: only
	// for a valid load, once per policy and load, without waiting for the
	// network (discovery happens in the background). An error is reported
	// as "file:line: login.oidc: <err>". Nil leaves Login.SignIn and
	// Verifier nil, for validation only.
	NewSignIn func(policyName string, cfg OIDCConfig) (authz.SignIn, authz.Verifier, error)
}

// LoadDir compiles the policies in dir: every *.yaml and *.yml file directly
// in it, symlinks followed, each one policy named after its file stem.
// Dot-entries (the ..data and ..<timestamp> entries of Kubernetes ConfigMap
// mounts), subdirectories and other files are ignored. A directory without
// policies is an error. The error, if any, is an Errors holding every
// problem found.
func LoadDir(dir string, opts Options) (*Set, error) {
	files, errs := policyFiles(dir)
	if len(errs) > 0 {
		return nil, errs
	}
	return load(files, nil, opts)
}

// LoadFiles compiles the policies at paths, each a policy file (whatever
// its extension) or a directory expanded as by LoadDir, into one Set: names
// and hosts must be unique across all of them. It serves `validate PATH...`.
func LoadFiles(paths []string, opts Options) (*Set, error) {
	var files []string
	var errs Errors
	if len(paths) == 0 {
		errs = append(errs, Error{Msg: "no policy files given"})
	}
	seen := map[string]bool{}
	for _, p := range paths {
		list := []string{p}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			var dirErrs Errors
			if list, dirErrs = policyFiles(p); len(dirErrs) > 0 {
				errs = append(errs, dirErrs...)
				continue
			}
		}
		for _, f := range list {
			if c := filepath.Clean(f); !seen[c] {
				seen[c] = true
				files = append(files, f)
			}
		}
	}
	return load(files, errs, opts)
}

// policyFiles lists the policy files directly in dir, sorted by name.
func policyFiles(dir string) ([]string, Errors) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, Errors{{File: dir, Msg: "cannot read policy directory: " + ioMsg(err)}}
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if strings.HasPrefix(name, ".") || ext != ".yaml" && ext != ".yml" {
			continue
		}
		path := filepath.Join(dir, name)
		// Stat follows symlinks: ConfigMap mounts link name.yaml to
		// ..data/name.yaml. A dangling link stays in, to be reported.
		if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
			continue
		}
		files = append(files, path)
	}
	if len(files) == 0 {
		return nil, Errors{{File: dir, Msg: "no policies in directory (no *.yaml or *.yml files)"}}
	}
	return files, nil
}

// load compiles files into a Set, adding their problems to errs; any
// problem at all means no Set.
func load(files []string, errs Errors, opts Options) (*Set, error) {
	var all []*compiled
	names := map[string]string{} // policy name → file
	hosts := map[string]string{} // host → file
	for _, file := range files {
		c, fileErrs := compileFile(file)
		errs = append(errs, fileErrs...)
		if c == nil {
			continue
		}
		// Files are visited in order, so a clash is reported on the later
		// file, naming the earlier.
		if first, dup := names[c.policy.Name]; dup {
			errs = append(errs, Error{File: file, Line: 1, Field: "policy",
				Msg: fmt.Sprintf("name %q (the file stem) is also the name of %s", c.policy.Name, first)})
		} else {
			names[c.policy.Name] = file
		}
		for _, h := range c.hosts {
			first, dup := hosts[h.host]
			if !dup {
				hosts[h.host] = file
				continue
			}
			e := h.at
			if h.host == "*" {
				e.Msg = fmt.Sprintf(`a default policy ("*") is already defined by %s`, first)
			} else {
				e.Msg = fmt.Sprintf("host %q is already claimed by %s", h.host, first)
			}
			errs = append(errs, e)
		}
		all = append(all, c)
	}
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	for _, c := range all {
		if c.oidc == nil || opts.NewSignIn == nil {
			continue
		}
		si, v, err := opts.NewSignIn(c.policy.Name, *c.oidc)
		if err != nil {
			errs = append(errs, Error{File: c.file, Line: c.oidcLine, Field: "login.oidc", Msg: err.Error()})
			continue
		}
		c.policy.Login.SignIn, c.policy.Verifier = si, v
		if lv, ok := si.(authz.LogoutVerifier); ok {
			c.policy.BackChannel = &authz.BackChannel{Issuer: c.oidc.Issuer, Audience: c.oidc.ClientID, Verifier: lv}
		}
	}
	if opts.NewVerifier != nil {
		for _, c := range all {
			if c.oidc != nil {
				continue
			}
			v, err := opts.NewVerifier(c.policy.Name, c.token)
			if err != nil {
				errs = append(errs, Error{File: c.file, Line: c.tokenLine, Field: "token", Msg: err.Error()})
				continue
			}
			c.policy.Verifier = v
			if c.logoutAudience == "" {
				continue
			}
			lc, ok := v.(authz.LogoutCapable)
			if !ok {
				errs = append(errs, Error{File: c.file, Line: c.tokenLine, Field: "token.logout_audience", Msg: "this verifier cannot check logout tokens"})
				continue
			}
			c.policy.BackChannel = &authz.BackChannel{Issuer: c.token.Issuer, Audience: c.logoutAudience, Verifier: lc.LogoutVerifier(c.logoutAudience)}
		}
	}
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	return newSet(all), nil
}

// compileFile reads, decodes and validates one file. The result is nil only
// when the file is not a policy document at all; otherwise it is returned
// even with problems, so that cross-file clashes are reported too.
func compileFile(file string) (*compiled, Errors) {
	data, err := os.ReadFile(file)
	if err != nil {
		// No line: there is no file to point into.
		return nil, Errors{{File: file, Msg: "cannot read: " + ioMsg(err)}}
	}
	sp, d, ok := parse(file, data)
	if !ok {
		return nil, d.errs
	}
	base := filepath.Base(file)
	c := d.compile(strings.TrimSuffix(base, filepath.Ext(base)), sp)
	c.warnings = d.warns
	return c, d.errs
}
