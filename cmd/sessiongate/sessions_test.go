package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/sessiongate/sessiongate/internal/testutil"
)

// TestAdminClientAddress: the forms --admin-addr takes, and when the
// sessions command speaks HTTPS.
func TestAdminClientAddress(t *testing.T) {
	ca := testutil.NewCA(t, "admin CA")
	cert, key := ca.Client(t, "ops")
	withCA := adminTLSFlags{caFile: ca.File}
	for _, c := range []struct {
		addr  string
		flags adminTLSFlags
		base  string
	}{
		{"127.0.0.1:9003", adminTLSFlags{}, "http://127.0.0.1:9003"},
		{":9003", adminTLSFlags{}, "http://127.0.0.1:9003"},
		{"http://admin.internal:9003/", adminTLSFlags{}, "http://admin.internal:9003"},
		{"https://admin.internal:9003", adminTLSFlags{}, "https://admin.internal:9003"},
		{"admin.internal:9003", withCA, "https://admin.internal:9003"},
		{":9003", adminTLSFlags{certFile: cert, keyFile: key}, "https://127.0.0.1:9003"},
	} {
		_, base, err := adminClient(c.addr, c.flags)
		if err != nil || base != c.base {
			t.Errorf("%s %+v: %s, %v; want %s", c.addr, c.flags, base, err, c.base)
		}
	}
	for _, c := range []struct {
		addr  string
		flags adminTLSFlags
		want  string
		file  bool // a file that cannot be read or used (exit 1), not a usage error (2)
	}{
		{"http://127.0.0.1:9003", withCA, "plain HTTP", false},
		{"ftp://127.0.0.1:9003", adminTLSFlags{}, "scheme", false},
		{":9003", adminTLSFlags{certFile: cert}, "--admin-key-file", false},
		{":9003", adminTLSFlags{keyFile: key}, "--admin-cert-file", false},
		{":9003", adminTLSFlags{caFile: key}, "--admin-ca-file", true},
		{":9003", adminTLSFlags{caFile: ca.File + ".missing"}, "--admin-ca-file", true},
		{":9003", adminTLSFlags{certFile: cert, keyFile: cert}, "--admin-key-file", true},
	} {
		_, _, err := adminClient(c.addr, c.flags)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %+v: %v, want an error naming %s", c.addr, c.flags, err, c.want)
		}
		if file := errors.As(err, new(fileError)); file != c.file {
			t.Errorf("%s %+v: %v is a file error: %v, want %v", c.addr, c.flags, err, file, c.file)
		}
	}
}

func TestCheckAdminFlags(t *testing.T) {
	for _, c := range []struct {
		c    serveConfig
		want string // "" for none
	}{
		{serveConfig{}, ""},
		{serveConfig{adminAddr: "127.0.0.1:9003"}, ""},
		{serveConfig{adminAddr: "0.0.0.0:9003", adminTokenFile: "t"}, ""},
		{serveConfig{adminAddr: "0.0.0.0:9003", adminTLSCert: "c", adminTLSKey: "k", adminClientCA: "ca"}, ""},
		{serveConfig{adminAddr: "0.0.0.0:9003"}, "--admin-token-file"},
		{serveConfig{adminAddr: "0.0.0.0:9003", adminTLSCert: "c", adminTLSKey: "k"}, "--admin-client-ca-file"},
		{serveConfig{adminAddr: "127.0.0.1:9003", adminTLSCert: "c"}, "--admin-tls-key-file"},
		{serveConfig{adminAddr: "127.0.0.1:9003", adminTLSKey: "k"}, "--admin-tls-cert-file"},
		{serveConfig{adminAddr: "127.0.0.1:9003", adminClientCA: "ca"}, "--admin-tls-cert-file"},
		{serveConfig{adminTLSCert: "c", adminTLSKey: "k"}, "without --admin-addr"},
	} {
		err := checkAdminFlags(c.c)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.c, err, c.want)
		}
	}
}
