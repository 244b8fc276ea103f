package redistest

import (
	"crypto/tls"
	"crypto/x509"
	"strconv"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// TLSFiles are PEM files for a TLS server on 127.0.0.1.
type TLSFiles struct {
	CA, Cert, Key string // CA certificate; server certificate and key
	Pool          *x509.CertPool
}

// NewTLSFiles writes a fresh CA (ECDSA P-256) and a server certificate it
// signs for 127.0.0.1 into a temporary directory.
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	ca := testutil.NewCA(t, "redistest CA")
	cert, key := ca.Server(t)
	return TLSFiles{CA: ca.File, Cert: cert, Key: key, Pool: ca.Pool()}
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
