package ends_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/ends"
	"github.com/sessiongate/sessiongate/internal/testutil"
)

// lockedAudit is an auditor for a handler served on its own goroutines.
type lockedAudit struct {
	mu     sync.Mutex
	events []authz.EndRequest
}

func (a *lockedAudit) EndRequested(e authz.EndRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *lockedAudit) last() authz.EndRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.events[len(a.events)-1]
}

// serveAdminTLS serves the admin API over TLS on a real socket with the
// configuration AdminTLS makes, and returns its https base URL.
func serveAdminTLS(t *testing.T, token, certFile, keyFile, clientCA string) (string, *lockedAudit) {
	t.Helper()
	st := newMemory(t)
	f := newFixture(t, st)
	f.session(policyA, subject, provider)
	audit := &lockedAudit{}
	cfg, err := ends.AdminTLS(certFile, keyFile, clientCA)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ends.NewAdmin(ends.Deps{Policies: func() []*authz.Policy { return f.policies }, Store: st, Auditor: audit,
		Observer: &counter{n: map[string]int{}}}, token), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(lis, cfg))
	t.Cleanup(func() { srv.Close() })
	return "https://" + lis.Addr().String(), audit
}

func tlsClient(t *testing.T, roots *x509.CertPool, certFile, keyFile string) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func listAlice(c *http.Client, base, token string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, base+ends.AdminSessionsPath+"?user="+subject, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestS19AdminTLS: the admin API answers over HTTPS to a client that trusts
// the server's CA, with the token audited as before; a client that does
// not trust it, or that speaks TLS 1.1, or plain HTTP, gets nothing.
func TestS19AdminTLS(t *testing.T) {
	ca := testutil.NewCA(t, "admin CA")
	cert, key := ca.Server(t)
	base, audit := serveAdminTLS(t, adminToken, cert, key, "")
	if code, err := listAlice(tlsClient(t, ca.Pool(), "", ""), base, adminToken); err != nil || code != http.StatusOK {
		t.Fatalf("list over HTTPS with the CA: %d %v", code, err)
	}
	if ev := audit.last(); ev.Who != ends.TokenFingerprint(adminToken) || ev.Result != "ok" {
		t.Errorf("audited %+v", ev)
	}
	var unknown x509.UnknownAuthorityError
	if _, err := listAlice(tlsClient(t, x509.NewCertPool(), "", ""), base, adminToken); !errors.As(err, &unknown) {
		t.Errorf("a client without the CA: %v, want an unknown authority", err)
	}
	old := tlsClient(t, ca.Pool(), "", "")
	old.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS11
	if _, err := listAlice(old, base, adminToken); err == nil {
		t.Error("a TLS 1.1 client was served")
	}
	if code, err := listAlice(http.DefaultClient, "http"+strings.TrimPrefix(base, "https"), adminToken); err == nil && code == http.StatusOK {
		t.Error("plain HTTP was served")
	}
}

// TestS19AdminClientCertificates: with client CAs, a client without a
// certificate or with one of another CA fails at the handshake; the right
// one is served without a token, and audited by its certificate.
func TestS19AdminClientCertificates(t *testing.T) {
	ca, other := testutil.NewCA(t, "admin CA"), testutil.NewCA(t, "other CA")
	cert, key := ca.Server(t)
	base, audit := serveAdminTLS(t, "", cert, key, ca.File)
	if _, err := listAlice(tlsClient(t, ca.Pool(), "", ""), base, ""); err == nil {
		t.Error("a client without a certificate was served")
	}
	oc, ok := other.Client(t, "mallory")
	if _, err := listAlice(tlsClient(t, ca.Pool(), oc, ok), base, ""); err == nil {
		t.Error("a client with another CA's certificate was served")
	}
	cc, ck := ca.Client(t, "ops-alice")
	if code, err := listAlice(tlsClient(t, ca.Pool(), cc, ck), base, ""); err != nil || code != http.StatusOK {
		t.Fatalf("the right client certificate: %d %v", code, err)
	}
	pair, err := tls.X509KeyPair(mustRead(t, cc), mustRead(t, ck))
	if err != nil {
		t.Fatal(err)
	}
	want := ends.CertIdentity(pair.Leaf)
	if ev := audit.last(); ev.Who != want || !strings.HasPrefix(ev.Who, "cert:") || !strings.HasSuffix(ev.Who, " cn=ops-alice") || ev.Result != "ok" {
		t.Errorf("audited who %q, want %q", ev.Who, want)
	}
}

// TestS19AdminClientCertificatesAndToken: with both, the token is still
// required, and the event names the certificate and the token.
func TestS19AdminClientCertificatesAndToken(t *testing.T) {
	ca := testutil.NewCA(t, "admin CA")
	cert, key := ca.Server(t)
	base, audit := serveAdminTLS(t, adminToken, cert, key, ca.File)
	cc, ck := ca.Client(t, "ops-bob")
	c := tlsClient(t, ca.Pool(), cc, ck)
	if code, err := listAlice(c, base, ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("a certificate without the token: %d %v", code, err)
	}
	if ev := audit.last(); ev.Result != "unauthorized" || !strings.HasSuffix(ev.Who, "cn=ops-bob") {
		t.Errorf("audited %+v", ev)
	}
	if code, err := listAlice(c, base, adminToken); err != nil || code != http.StatusOK {
		t.Fatalf("certificate and token: %d %v", code, err)
	}
	if ev := audit.last(); !strings.HasPrefix(ev.Who, "cert:") || !strings.HasSuffix(ev.Who, "cn=ops-bob "+ends.TokenFingerprint(adminToken)) {
		t.Errorf("audited who %q", ev.Who)
	}
}

// TestAdminTLSReloadsTheCertificate: a certificate replaced on disk is
// served from the next handshake, without a restart.
func TestAdminTLSReloadsTheCertificate(t *testing.T) {
	one, two := testutil.NewCA(t, "first CA"), testutil.NewCA(t, "second CA")
	cert, key := one.Server(t)
	base, _ := serveAdminTLS(t, adminToken, cert, key, "")
	if code, err := listAlice(tlsClient(t, one.Pool(), "", ""), base, adminToken); err != nil || code != http.StatusOK {
		t.Fatalf("first certificate: %d %v", code, err)
	}
	cert2, key2 := two.Server(t)
	// Renamed over the old ones, as a Secret update or a renewal does; the
	// modification times are set apart explicitly, not left to the clock.
	for from, to := range map[string]string{cert2: cert, key2: key} {
		fi, err := os.Stat(to)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(to, fi.ModTime(), fi.ModTime().Add(1e9)); err != nil {
			t.Fatal(err)
		}
	}
	if code, err := listAlice(tlsClient(t, two.Pool(), "", ""), base, adminToken); err != nil || code != http.StatusOK {
		t.Fatalf("the renewed certificate is not served: %d %v", code, err)
	}
}

// TestAdminTLSReloadsTheClientCA: a client CA file replaced on disk decides
// from the next handshake, without a restart; one that does not load (half
// written) keeps the CAs before it.
func TestAdminTLSReloadsTheClientCA(t *testing.T) {
	one, two := testutil.NewCA(t, "first client CA"), testutil.NewCA(t, "second client CA")
	serverCA := testutil.NewCA(t, "server CA")
	cert, key := serverCA.Server(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	replace := func(b []byte) {
		t.Helper()
		fi, statErr := os.Stat(caFile)
		if err := os.WriteFile(caFile+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(caFile+".new", caFile); err != nil {
			t.Fatal(err)
		}
		if statErr == nil { // modification times set apart explicitly, not left to the clock
			if err := os.Chtimes(caFile, fi.ModTime(), fi.ModTime().Add(1e9)); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace(mustRead(t, one.File))
	base, _ := serveAdminTLS(t, "", cert, key, caFile)
	c1, k1 := one.Client(t, "ops-one")
	c2, k2 := two.Client(t, "ops-two")
	served := func(certFile, keyFile string) bool {
		code, err := listAlice(tlsClient(t, serverCA.Pool(), certFile, keyFile), base, "")
		return err == nil && code == http.StatusOK
	}
	if !served(c1, k1) || served(c2, k2) {
		t.Fatal("first CA: want its client served and the other refused")
	}
	replace(mustRead(t, two.File))
	if served(c1, k1) || !served(c2, k2) {
		t.Fatal("after the CA file was replaced: want the second CA's client served and the first's refused")
	}
	replace([]byte("-----BEGIN CERT")) // half written
	if !served(c2, k2) || served(c1, k1) {
		t.Fatal("a CA file that does not load: want the CAs before it kept")
	}
}

func TestAdminTLSErrorsNameTheFlag(t *testing.T) {
	ca := testutil.NewCA(t, "admin CA")
	cert, key := ca.Server(t)
	dir := t.TempDir()
	notPEM := dir + "/not.pem"
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ cert, key, ca, want string }{
		{dir + "/none", key, "", "--admin-tls-cert-file"},
		{cert, dir + "/none", "", "--admin-tls-key-file"},
		{cert, cert, "", "--admin-tls-key-file"},
		{cert, key, dir + "/none", "--admin-client-ca-file"},
		{cert, key, notPEM, "--admin-client-ca-file"},
	} {
		if _, err := ends.AdminTLS(c.cert, c.key, c.ca); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AdminTLS(%s, %s, %s): %v, want an error naming %s", c.cert, c.key, c.ca, err, c.want)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
