package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Mode is how the store reaches Redis or Valkey.
type Mode uint8

const (
	Standalone Mode = iota + 1 // one server (or a proxy in front of several)
	Sentinel                   // the master that Sentinel names, followed across failovers
	Cluster                    // Redis Cluster (or Valkey cluster mode)
)

func (m Mode) String() string {
	switch m {
	case Standalone:
		return "standalone"
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	}
	return "unknown"
}

// Config is a parsed --store URL. Zero durations and sizes take the defaults
// of Options and of go-redis.
type Config struct {
	Mode     Mode
	Addrs    []string // host:port; the sentinels in Sentinel mode, seed nodes in Cluster mode
	Username string
	Password string
	// PasswordFile holds the password instead of the URL (password_file):
	// read again for every new connection, so a rotated secret file is
	// taken up without a restart.
	PasswordFile string
	DB           int
	MasterName   string // Sentinel mode
	TLS          bool
	CAFile       string // PEM roots for TLS instead of the system's

	SentinelUsername string
	SentinelPassword string

	Prefix        string        // key and channel prefix
	DialTimeout   time.Duration // dial_timeout
	Timeout       time.Duration // one operation's bound (Options.Timeout), and go-redis' read and write timeouts
	PoolSize      int
	FlushInterval time.Duration // Options.FlushInterval
	MaxStale      time.Duration // Options.MaxStale
	WaitReplicas  int           // Options.WaitReplicas (wait_replicas)
	WaitTimeout   time.Duration // Options.WaitTimeout (wait_timeout)
	WaitAOF       bool          // Options.WaitAOF (wait_aof)
}

// schemes maps every accepted URL scheme to its mode and whether it uses TLS.
var schemes = map[string]struct {
	mode Mode
	tls  bool
}{
	"redis": {Standalone, false}, "rediss": {Standalone, true},
	"valkey": {Standalone, false}, "valkeys": {Standalone, true},
	"redis+sentinel": {Sentinel, false}, "rediss+sentinel": {Sentinel, true},
	"valkey+sentinel": {Sentinel, false}, "valkeys+sentinel": {Sentinel, true},
	"redis+cluster": {Cluster, false}, "rediss+cluster": {Cluster, true},
	"valkey+cluster": {Cluster, false}, "valkeys+cluster": {Cluster, true},
}

// IsURL reports whether s names a Redis or Valkey store (by its scheme), so
// that callers can tell a store URL from other --store values.
func IsURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	_, known := schemes[strings.ToLower(scheme)]
	return ok && known
}

// ParseURL parses a store URL strictly:
//
//	redis://[user:pass@]host[:port][/db][?param=value&…]            (rediss:// for TLS)
//	redis+sentinel://[user:pass@]host[:port],host[:port]/master[/db][?…]
//	redis+cluster://[user:pass@]host[:port],host[:port][?…]
//
// valkey:// and valkeys:// are aliases of redis:// and rediss://. Ports
// default to 6379 (26379 for sentinels). Parameters: prefix, dial_timeout,
// timeout, pool_size, ca_file, password_file, sentinel_username,
// sentinel_password, flush_interval, max_stale, wait_replicas, wait_timeout,
// wait_aof. Errors never quote the password.
func ParseURL(raw string) (Config, error) {
	schemePart, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Config{}, errors.New(`want scheme://…, e.g. redis://host:6379`)
	}
	sch, ok := schemes[strings.ToLower(schemePart)]
	if !ok {
		return Config{}, fmt.Errorf("unknown scheme %q: want redis, rediss, valkey, valkeys, optionally +sentinel or +cluster", schemePart)
	}
	c := Config{Mode: sch.mode, TLS: sch.tls, Prefix: "sessiongate"}
	if strings.ContainsRune(rest, '#') {
		return Config{}, errors.New("a fragment (#) is not allowed")
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	var errs []error
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		var err error
		if c.Username, c.Password, err = userinfo(authority[:i]); err != nil {
			errs = append(errs, err)
		}
		authority = authority[i+1:]
	}
	defPort := "6379"
	if c.Mode == Sentinel {
		defPort = "26379"
	}
	for _, h := range strings.Split(authority, ",") {
		addr, err := hostPort(h, defPort)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Addrs = append(c.Addrs, addr)
	}
	if c.Mode == Standalone && len(c.Addrs) > 1 {
		errs = append(errs, errors.New("one host only: several are for +sentinel or +cluster URLs"))
	}
	errs = append(errs, c.parsePath(path))
	errs = append(errs, c.parseQuery(rawQuery))
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

func userinfo(s string) (user, pass string, err error) {
	u, p, hasPass := strings.Cut(s, ":")
	if user, err = url.PathUnescape(u); err != nil {
		return "", "", errors.New("user name: bad percent-encoding")
	}
	if pass, err = url.PathUnescape(p); err != nil {
		return "", "", errors.New("password: bad percent-encoding") // never quote it
	}
	if hasPass && pass == "" {
		return "", "", errors.New("empty password after ':'")
	}
	return user, pass, nil
}

func hostPort(h, defPort string) (string, error) {
	host, port := h, defPort
	switch {
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"): // [v6] without a port
		host = h[1 : len(h)-1]
	case strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1:
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			return "", fmt.Errorf("host %q: %v", h, err)
		}
	case strings.Contains(h, ":"):
		return "", fmt.Errorf("host %q: put IPv6 addresses in brackets", h)
	}
	if host == "" {
		return "", fmt.Errorf("host %q: empty host name", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: port must be 1-65535", h)
	}
	return net.JoinHostPort(host, port), nil
}

func (c *Config) parsePath(path string) error {
	path = strings.TrimSuffix(path, "/")
	var parts []string
	if path != "" {
		parts = strings.Split(path, "/")
	}
	if c.Mode == Sentinel {
		if len(parts) == 0 || parts[0] == "" {
			return errors.New("path: want /master-name[/db] after the sentinels")
		}
		c.MasterName, parts = parts[0], parts[1:]
	}
	switch {
	case len(parts) == 0:
		return nil
	case c.Mode == Cluster:
		return errors.New("path: a cluster has no databases; remove the path")
	case len(parts) > 1:
		return fmt.Errorf("path: unexpected %q", path)
	}
	db, err := strconv.Atoi(parts[0])
	if err != nil || db < 0 {
		return fmt.Errorf("path: database %q is not a number >= 0", parts[0])
	}
	c.DB = db
	return nil
}

func (c *Config) parseQuery(raw string) error {
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("query: %v", err)
	}
	var errs []error
	dur := func(name, v string, d *time.Duration) {
		if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a positive duration like 500ms", name, v))
		}
	}
	for name, vs := range q {
		if len(vs) != 1 {
			errs = append(errs, fmt.Errorf("%s: given %d times", name, len(vs)))
			continue
		}
		v := vs[0]
		switch name {
		case "prefix":
			if v == "" || strings.ContainsAny(v, "{} \t\r\n") {
				errs = append(errs, errors.New("prefix: must be non-empty, without braces or spaces"))
			}
			c.Prefix = v
		case "dial_timeout":
			dur(name, v, &c.DialTimeout)
		case "timeout":
			dur(name, v, &c.Timeout)
		case "flush_interval":
			dur(name, v, &c.FlushInterval)
		case "max_stale":
			dur(name, v, &c.MaxStale)
		case "pool_size":
			if c.PoolSize, err = strconv.Atoi(v); err != nil || c.PoolSize < 1 {
				errs = append(errs, fmt.Errorf("pool_size: %q is not a number >= 1", v))
			}
		case "password_file":
			if v == "" {
				errs = append(errs, errors.New("password_file: empty path"))
			}
			c.PasswordFile = v
		case "ca_file":
			if !c.TLS {
				errs = append(errs, errors.New("ca_file: only for TLS schemes (rediss://, valkeys://)"))
			}
			c.CAFile = v
		case "sentinel_username", "sentinel_password":
			if c.Mode != Sentinel {
				errs = append(errs, fmt.Errorf("%s: only for +sentinel URLs", name))
			}
			if name == "sentinel_username" {
				c.SentinelUsername = v
			} else {
				c.SentinelPassword = v
			}
		case "wait_replicas":
			if c.WaitReplicas, err = strconv.Atoi(v); err != nil || c.WaitReplicas < 1 {
				errs = append(errs, fmt.Errorf("wait_replicas: %q is not a number >= 1", v))
			}
		case "wait_timeout":
			dur(name, v, &c.WaitTimeout)
		case "wait_aof":
			if c.WaitAOF, err = strconv.ParseBool(v); err != nil {
				errs = append(errs, fmt.Errorf("wait_aof: %q is not true or false", v))
			}
		default:
			errs = append(errs, fmt.Errorf("unknown parameter %q", name))
		}
	}
	switch {
	case c.PasswordFile != "" && c.Password != "":
		errs = append(errs, errors.New("password_file: the URL has a password too; give one of them"))
	case c.WaitReplicas > 0 && c.Mode == Cluster:
		// WAIT counts the replicas of the node it is sent to; an end
		// writes to two nodes of a cluster.
		errs = append(errs, errors.New("wait_replicas: not with +cluster URLs"))
	case c.WaitReplicas == 0 && (c.WaitTimeout != 0 || c.WaitAOF):
		errs = append(errs, errors.New("wait_timeout, wait_aof: only with wait_replicas"))
	}
	return errors.Join(errs...)
}

// NewClient builds the go-redis client that c describes. It does not dial.
func (c Config) NewClient() (redis.UniversalClient, error) {
	o := &redis.UniversalOptions{
		Addrs: c.Addrs, Username: c.Username, Password: c.Password, DB: c.DB,
		MasterName: c.MasterName, SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
		IsClusterMode: c.Mode == Cluster, ClientName: "sessiongate",
		DialTimeout: c.DialTimeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout, PoolSize: c.PoolSize,
		// An outage must turn into a quick store_unavailable, not a check
		// stalled past Envoy's timeout: calls carry the request's deadline,
		// a failed dial is not retried within a call, and a call is retried
		// once (a pooled connection that broke since its last use).
		ContextTimeoutEnabled: true, DialerRetries: 1, MaxRetries: 1,
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = time.Second
	}
	if c.PasswordFile != "" {
		// Refused at start when unreadable; then read for each new
		// connection (a Kubernetes Secret's file changes in place).
		if _, err := readPasswordFile(c.PasswordFile); err != nil {
			return nil, err
		}
		user, file := c.Username, c.PasswordFile
		o.CredentialsProviderContext = func(context.Context) (string, string, error) {
			p, err := readPasswordFile(file)
			return user, p, err
		}
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout, o.WriteTimeout = DefaultTimeout, DefaultTimeout
	}
	if c.TLS {
		// ServerName stays empty: the TLS dialer then checks each node's
		// certificate against the host it dials, as cluster nodes need.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			o.TLSConfig.RootCAs = x509.NewCertPool()
			if !o.TLSConfig.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file %s: no PEM certificates", c.CAFile)
			}
		}
	}
	return redis.NewUniversalClient(o), nil
}

// maxPasswordFile bounds what password_file may hold.
const maxPasswordFile = 4 << 10

// readPasswordFile returns the password in path: its content without a
// trailing line break. Errors never quote it.
func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("password_file %s: %w", path, err)
	case len(b) > maxPasswordFile:
		return "", fmt.Errorf("password_file %s: larger than %d bytes", path, maxPasswordFile)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("password_file %s: empty", path)
	}
	return p, nil
}

// Redact returns raw with its password and sentinel_password replaced, for
// logs and error messages. It works on URLs that do not parse, too.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		// A lone userinfo may be a password too (redis://secret@host).
		user := "REDACTED"
		if u, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
			user = u + ":REDACTED"
		}
		rest = user + rest[at:]
	}
	if i := strings.Index(rest, "sentinel_password="); i >= 0 {
		j := strings.IndexAny(rest[i:], "&#")
		if j < 0 {
			j = len(rest) - i
		}
		rest = rest[:i] + "sentinel_password=REDACTED" + rest[i+j:]
	}
	return scheme + "://" + rest
}
