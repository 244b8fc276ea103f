package ends

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"
)

// AdminTLS returns the admin listener's TLS configuration (S19): TLS 1.2 or
// later with the certificate and key of certFile and keyFile, read again at
// a handshake when either file's modification time has changed (a renewed
// certificate needs no restart; a pair that does not load yet, half
// written, keeps the one before). With clientCAFile (""
// for none) every client must present a certificate that one of the CAs in
// it signed, or the handshake fails.
func AdminTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	if clientCAFile != "" {
		b, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--admin-client-ca-file %s: no PEM certificate in it", clientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
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

// certReloader serves the certificate of its files, loaded again when
// their modification times change.
type certReloader struct {
	certFile, keyFile string

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, err := r.load(); err == nil {
		return c, nil
	}
	return r.cert, nil // the last pair that loaded, until the files make a pair again
}

// load returns the current pair, reading the files when they changed.
// The caller holds mu, or is AdminTLS before the reloader is shared.
func (r *certReloader) load() (*tls.Certificate, error) {
	cm, err := modTime(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("--admin-tls-cert-file: %w", err)
	}
	km, err := modTime(r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--admin-tls-key-file: %w", err)
	}
	if r.cert != nil && cm.Equal(r.certMod) && km.Equal(r.keyMod) {
		return r.cert, nil
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--admin-tls-cert-file %s, --admin-tls-key-file %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.certMod, r.keyMod = &c, cm, km
	return r.cert, nil
}

func modTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
