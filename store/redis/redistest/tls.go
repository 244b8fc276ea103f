package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TLSFiles are PEM files for a TLS server on 127.0.0.1.
type TLSFiles struct {
	CA, Cert, Key string // CA certificate; server certificate and key
	Pool          *x509.CertPool
}

// NewTLSFiles writes a fresh CA (ECDSA P-256) and a server certificate it
// signs for the IP address 127.0.0.1 into a temporary directory.
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redistest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key"), Pool: x509.NewCertPool()}
	f.Pool.AddCert(ca)
	for path, b := range map[string]*pem.Block{
		f.CA: {Type: "CERTIFICATE", Bytes: caDER}, f.Cert: {Type: "CERTIFICATE", Bytes: der}, f.Key: {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// StartTLS starts a standalone server that listens with TLS only (no
// client certificates) on 127.0.0.1, with f's certificate. A redis-server
// built without TLS skips the test, even when SESSIONGATE_REQUIRE_EXTERNAL
// is set: that is a build option of the server, not a missing package.
func StartTLS(t testing.TB, f TLSFiles) *Server {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	s := &Server{t: t, Port: freePort(t, false), tls: &tls.Config{RootCAs: f.Pool, MinVersion: tls.VersionTLS12}}
	args := func(port int) []string {
		return []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--tls-cert-file", f.Cert, "--tls-key-file", f.Key, "--tls-ca-cert-file", f.CA, "--tls-auth-clients", "no",
			"--save", "", "--appendonly", "yes", "--appendfsync", "always",
			"--protected-mode", "no", "--loglevel", "warning", "--daemonize", "no"}
	}
	s.args = args(s.Port)
	err := s.startProcess()
	if err == nil {
		t.Cleanup(s.Stop)
		return s
	}
	if withoutTLS(err.Error()) {
		t.Skipf("redis-server is built without TLS (not a missing package: SESSIONGATE_REQUIRE_EXTERNAL does not apply): %v", err)
	}
	// Most likely the port was taken meanwhile: once more, the usual way.
	return launch(t, false, s.tls, args)
}

// withoutTLS reports whether redis-server's failure to start says that it
// has no TLS: an unknown tls-* directive, or TLS not built or supported.
func withoutTLS(out string) bool {
	out = strings.ToLower(out)
	if !strings.Contains(out, "tls") {
		return false
	}
	for _, m := range []string{"bad directive", "unknown", "not supported", "not built", "not available", "build_tls", "failed finding connection"} {
		if strings.Contains(out, m) {
			return true
		}
	}
	return false
}
