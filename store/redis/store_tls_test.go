package redis

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/authz"
	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

// TestTLS: rediss:// with ca_file reaches a TLS-only server whose
// certificate names 127.0.0.1 (an IP SAN: the store checks the certificate
// against the host it dials), and two stores share ends over it.
func TestTLS(t *testing.T) {
	f := redistest.NewTLSFiles(t)
	srv := redistest.StartTLS(t, f)
	u := "rediss://" + srv.Addr() + "?ca_file=" + url.QueryEscape(f.CA)
	a := open(t, u, Options{FlushInterval: 10 * time.Millisecond})
	b := open(t, u, Options{FlushInterval: 10 * time.Millisecond})
	r := roundTrip(t, a, b)
	if n, err := srv.Client().Exists(ctx, a.sessionKey("app", r.ID)).Result(); err != nil || n != 1 {
		t.Fatalf("record on the server: %d %v", n, err)
	}
}

// TestTLSWrongCA: a server whose certificate the ca_file does not sign is
// never trusted. Open succeeds (it does not dial: an unreachable store must
// not stop the server), the store stays not ready, and Ready and every call
// fail with authz.ErrStoreUnavailable, saying why (the certificate).
func TestTLSWrongCA(t *testing.T) {
	srv := redistest.StartTLS(t, redistest.NewTLSFiles(t))
	other := redistest.NewTLSFiles(t)
	s, err := Open("rediss://"+srv.Addr()+"?dial_timeout=200ms&ca_file="+url.QueryEscape(other.CA), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, "Ready reports the certificate", func() bool {
		err := s.Ready(ctx)
		return err != nil && strings.Contains(err.Error(), "certificate")
	})
	err = s.Ready(ctx)
	if !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "x509") {
		t.Fatalf("Ready = %v", err)
	}
	t.Logf("Ready: %v", err)
	r := newSession("")
	if err := s.Begin(ctx, r); !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Begin = %v", err)
	}
	if _, err := s.Load(ctx, r.Policy, r.ID, r.Scope); !errors.Is(err, authz.ErrStoreUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Load = %v", err)
	}
	// Still never trusted a moment later.
	time.Sleep(300 * time.Millisecond)
	if s.Ready(ctx) == nil {
		t.Fatal("ready with an untrusted certificate")
	}
	// A ca_file that is missing or holds no certificate fails Open.
	if _, err := Open("rediss://"+srv.Addr()+"?ca_file=/nonexistent/ca.pem", Options{}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("Open with a missing ca_file = %v", err)
	}
	if _, err := Open("rediss://"+srv.Addr()+"?ca_file="+url.QueryEscape(other.Key), Options{}); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("Open with a ca_file of no certificates = %v", err)
	}
}
