package redis

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sessiongate/sessiongate/store/redis/redistest"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
	}{
		{"redis://127.0.0.1:6380", Config{Mode: Standalone, Addrs: []string{"127.0.0.1:6380"}}},
		{"redis://cache", Config{Mode: Standalone, Addrs: []string{"cache:6379"}}},
		{"valkeys://u:p%40ss@cache:6390/3?ca_file=/ca.pem&prefix=crm",
			Config{Mode: Standalone, TLS: true, Addrs: []string{"cache:6390"}, Username: "u", Password: "p@ss", DB: 3, CAFile: "/ca.pem", Prefix: "crm"}},
		{"rediss://:secret@[::1]:7000/", Config{Mode: Standalone, TLS: true, Addrs: []string{"[::1]:7000"}, Password: "secret"}},
		{"redis+sentinel://:pw@s1,s2:26380/mymaster/2?sentinel_password=spw&timeout=250ms",
			Config{Mode: Sentinel, Addrs: []string{"s1:26379", "s2:26380"}, Password: "pw", MasterName: "mymaster", DB: 2, SentinelPassword: "spw", Timeout: 250 * time.Millisecond}},
		{"valkey+cluster://n1:7000,n2:7001,[::1]?pool_size=20&flush_interval=2s&max_stale=500ms&dial_timeout=1s",
			Config{Mode: Cluster, Addrs: []string{"n1:7000", "n2:7001", "[::1]:6379"}, PoolSize: 20, FlushInterval: 2 * time.Second, MaxStale: 500 * time.Millisecond, DialTimeout: time.Second}},
		{"redis://app@cache?password_file=/run/secrets/redis",
			Config{Mode: Standalone, Addrs: []string{"cache:6379"}, Username: "app", PasswordFile: "/run/secrets/redis"}},
		{"redis+sentinel://s1/mymaster?wait_replicas=1&wait_timeout=80ms&wait_aof=true",
			Config{Mode: Sentinel, Addrs: []string{"s1:26379"}, MasterName: "mymaster", WaitReplicas: 1, WaitTimeout: 80 * time.Millisecond, WaitAOF: true}},
	} {
		got, err := ParseURL(tc.in)
		if tc.want.Prefix == "" {
			tc.want.Prefix = "sessiongate"
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) =\n%+v, %v\nwant\n%+v", tc.in, got, err, tc.want)
		}
		if !IsURL(tc.in) {
			t.Errorf("IsURL(%q) = false", tc.in)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"cache:6379", "want scheme://"},
		{"http://cache", `unknown scheme "http"`},
		{"redis://a:1,b:2", "one host only"},
		{"redis://cache:0", "port must be 1-65535"},
		{"redis://cache:x", "port must be 1-65535"},
		{"redis://::1", "brackets"},
		{"redis://", "empty host"},
		{"redis://cache/x", `database "x"`},
		{"redis://cache/1/2", "unexpected"},
		{"redis+cluster://a:1/0", "a cluster has no databases"},
		{"redis+sentinel://s1", "master-name"},
		{"redis://cache?timeout=soon", "timeout"},
		{"redis://cache?pool_size=0", "pool_size"},
		{"redis://cache?ca_file=/x", "only for TLS"},
		{"redis://cache?sentinel_password=x", "only for +sentinel"},
		{"redis://cache?bogus=1", `unknown parameter "bogus"`},
		{"redis://cache?wait_replicas=0", "wait_replicas"},
		{"redis+cluster://a:1?wait_replicas=1", "not with +cluster"},
		{"redis://cache?wait_timeout=1s", "only with wait_replicas"},
		{"redis://cache?wait_replicas=1&wait_aof=maybe", "wait_aof"},
		{"redis://cache?prefix=a&prefix=b", "given 2 times"},
		{"redis://cache?prefix={x}", "prefix"},
		{"redis://cache#frag", "fragment"},
		{"redis://u:@cache", "empty password"},
		{"redis://cache?password_file=", "password_file: empty path"},
		{"redis://:pw@cache?password_file=/p", "password_file: the URL has a password too"},
	} {
		_, err := ParseURL(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	// Every problem at once, and never the password.
	_, err := ParseURL("redis://u:hunter2@a:1,b:2,c:99999/x?bogus=1")
	for _, want := range []string{"port", "one host only", "database", "bogus"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("combined error %v lacks %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error quotes the password: %v", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:hunter2@h:1/0": "redis://u:REDACTED@h:1/0",
		"rediss://:hunter2@h":     "rediss://:REDACTED@h",
		"redis://hunter2@h":       "redis://REDACTED@h",
		"redis://h:1":             "redis://h:1",
		"redis+sentinel://s/m?sentinel_password=hunter2&x=1": "redis+sentinel://s/m?sentinel_password=REDACTED&x=1",
		"redis://u:p@ss@h/0": "redis://u:REDACTED@h/0",
		"memory":             "memory",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPasswordFile: a Redis that requires a password is reached with the
// one in password_file; a missing or empty file is refused at start, a wrong
// password fails readiness, and the file is read again for a new
// connection (a rotated secret), never quoted in an error.
func TestPasswordFile(t *testing.T) {
	srv := redistest.Start(t)
	if err := srv.Client().ConfigSet(ctx, "requirepass", "first-secret").Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "password")
	os.WriteFile(file, []byte("first-secret\n"), 0o600)
	s := open(t, srv.URL()+"?password_file="+file, Options{})
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("with the password file: %v", err)
	}
	r := newSession("pw")
	if err := s.Begin(ctx, r); err != nil {
		t.Fatal(err)
	}

	// Rotation: Redis and the file change; a new connection reads the file.
	os.WriteFile(file, []byte("second-secret\n"), 0o600)
	c, err := (Config{Mode: Standalone, Addrs: []string{srv.Addr()}, Password: "first-secret"}).NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ConfigSet(ctx, "requirepass", "second-secret").Err(); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseURL(srv.URL() + "?password_file=" + file)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := cfg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Errorf("a new connection after the file changed: %v", err)
	}

	// A wrong password: not ready, and the error does not quote it.
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-secret"), 0o600)
	cfg, _ = ParseURL(srv.URL() + "?password_file=" + wrong)
	bad, err := cfg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil || strings.Contains(err.Error(), "not-the-secret") {
		t.Errorf("a wrong password: %v", err)
	}
	for name, content := range map[string]string{"missing": "", "empty": "\n"} {
		path := filepath.Join(dir, name)
		if name != "missing" {
			os.WriteFile(path, []byte(content), 0o600)
		}
		cfg, _ := ParseURL(srv.URL() + "?password_file=" + path)
		if _, err := cfg.NewClient(); err == nil || !strings.Contains(err.Error(), "password_file") {
			t.Errorf("a %s password file: %v", name, err)
		}
	}
}
