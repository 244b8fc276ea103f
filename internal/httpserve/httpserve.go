// Package httpserve owns the limits of the HTTP listener (--http-addr):
// timeouts that close idle and slow connections, a bound on request bodies,
// and a cap on open connections that leaves file descriptors for the gRPC
// listener, the store and the state file however hard HTTP is flooded.
package httpserve

import (
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Limits of one HTTP server. Every field has a working default.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers; ReadTimeout the
	// whole request, body included (a trickled body is cut off).
	ReadHeaderTimeout, ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of the request headers.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers (Go's server answers 431).
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body: no endpoint reads one, and the
	// server drains at most this much before reusing a connection.
	MaxBodyBytes int64
	// MaxConns caps open connections; further ones wait in the kernel's
	// accept queue until one closes. It is never more than half the
	// process's open-file limit (FDCap).
	MaxConns int
}

// Defaults: generous for a proxy beside the gate (Envoy's, nginx's and
// Caddy's connection pools keep connections idle for up to a minute or
// more, and reconnect when the gate closes first), tight for a client that
// holds connections it does not use.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 1 << 20
	DefaultMaxBodyBytes      = 64 << 10
	DefaultMaxConns          = 1024
)

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultReadTimeout)
	def(&l.WriteTimeout, DefaultWriteTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	l.MaxConns = min(l.MaxConns, FDCap())
	return l
}

// FDCap is half the process's open-file limit (the other half is for the
// gRPC listener and everything else), or DefaultMaxConns if it is unknown.
func FDCap() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return DefaultMaxConns
	}
	return int(max(min(r.Cur/2, 1<<30), 1))
}

// Server is an http.Server for h with the limits applied, and the limits as
// applied (defaults filled in).
func Server(h http.Handler, l Limits) (*http.Server, Limits) {
	l = l.withDefaults()
	return &http.Server{
		Handler:           http.MaxBytesHandler(h, l.MaxBodyBytes),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}, l
}

// Listener caps l at n open connections: Accept waits while n are open.
func Listener(l net.Listener, n int) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
