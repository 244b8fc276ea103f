package ends

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// AdminTLS returns the admin listener's TLS configuration (S19): TLS 1.2 or
// later with the certificate and key of certFile and keyFile. With
// clientCAFile ("" for none) every client must present a certificate that
// one of the CAs in it signed, or the handshake fails. Each file is read
// again at a handshake when its modification time has changed: a renewed
// certificate or a rotated client CA needs no restart, and files that do
// not load yet (half written) keep what loaded before.
func AdminTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert := &reloaded[*tls.Certificate]{files: []string{certFile, keyFile}, parse: func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-tls-cert-file %s, --admin-tls-key-file %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}, flags: []string{"--admin-tls-cert-file", "--admin-tls-key-file"}}
	if _, err := cert.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.get(), nil }}
	if clientCAFile == "" {
		return cfg, nil
	}
	cas := &reloaded[*x509.CertPool]{files: []string{clientCAFile}, parse: func() (*x509.CertPool, error) {
		b, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--admin-client-ca-file %s: no PEM certificate in it", clientCAFile)
		}
		return pool, nil
	}, flags: []string{"--admin-client-ca-file"}}
	if _, err := cas.load(); err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient, c.ClientCAs = nil, cas.get()
		return c, nil
	}
	return cfg, nil
}

// CertIdentity names a client certificate in audit events: "cert:" and 12
// hex digits of the SHA-256 of its DER, then its subject's common name when
// it has one ("cert:0123456789ab cn=alice").
func CertIdentity(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	id := "cert:" + hex.EncodeToString(sum[:6])
	if c.Subject.CommonName != "" {
		id += " cn=" + c.Subject.CommonName
	}
	return id
}

// reloaded is what parse makes of files, made again when one of their
// modification times changes.
type reloaded[T any] struct {
	files []string
	flags []string // the flags that name files, for errors
	parse func() (T, error)

	mu   sync.Mutex
	val  T
	mods []time.Time // of files, when val was made; nil before
}

// get returns what the files make now, or, when they do not (yet) make
// anything, what they made last.
func (r *reloaded[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, err := r.load(); err == nil {
		return v
	}
	return r.val
}

// load returns what the files make, parsing them when they changed. The
// caller holds mu, or has not shared r yet.
func (r *reloaded[T]) load() (T, error) {
	mods := make([]time.Time, len(r.files))
	for i, f := range r.files {
		m, err := modTime(f)
		if err != nil {
			var zero T
			return zero, fmt.Errorf("%s: %w", r.flags[i], err)
		}
		mods[i] = m
	}
	if r.mods != nil && slices.EqualFunc(mods, r.mods, time.Time.Equal) {
		return r.val, nil
	}
	v, err := r.parse()
	if err != nil {
		return v, err
	}
	r.val, r.mods = v, mods
	return v, nil
}

func modTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
