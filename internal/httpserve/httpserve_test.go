package httpserve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs Server(h, l) on a loopback listener capped at l's MaxConns.
func serve(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	srv, l := Server(h, l)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(Listener(lis, l.MaxConns))
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// closedByServer waits (up to a generous bound) for the server to close c:
// a read that ends in EOF or a reset rather than the client's deadline.
func closedByServer(t *testing.T, c net.Conn, r *bufio.Reader) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestIdleConnectionClosed: a keep-alive connection that sends no further
// request is closed after IdleTimeout (it used to stay open forever).
func TestIdleConnectionClosed(t *testing.T) {
	addr := serve(t, ok, Limits{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !closedByServer(t, c, r) {
		t.Error("an idle keep-alive connection is still open")
	}
}

// TestTrickledRequestClosed: a request whose body trickles in is cut off by
// ReadTimeout, and so is one whose headers never end.
func TestTrickledRequestClosed(t *testing.T) {
	addr := serve(t, ok, Limits{ReadTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond})
	for _, start := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, start)
		stop := make(chan struct{})
		go func() { // one byte every 50 ms, until the server gives up
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			}
		}()
		if !closedByServer(t, c, bufio.NewReader(c)) {
			t.Errorf("%q…: a trickling request is still open", start)
		}
		close(stop)
		c.Close()
	}
}

// TestBodyBounded: a handler reads at most MaxBodyBytes of a body.
func TestBodyBounded(t *testing.T) {
	var got error
	done := make(chan struct{})
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		_, got = io.ReadAll(r.Body)
	}), Limits{MaxBodyBytes: 1024})
	resp, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader(strings.Repeat("x", 4096)))
	if err == nil {
		resp.Body.Close()
	}
	<-done
	var mbe *http.MaxBytesError
	if !errors.As(got, &mbe) {
		t.Errorf("reading a 4 KiB body with a 1 KiB bound: %v", got)
	}
}

// TestListenerCap: with n connections open, the next one is accepted only
// once one of them closes.
func TestListenerCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener(inner, 2)
	defer l.Close()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	third := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			third <- c
		}
		close(third)
	}()
	select {
	case <-third:
		t.Fatal("a third connection was accepted while two were open")
	default:
	}
	a.Close()
	a.Close() // twice: frees one slot, not two
	if c, ok := <-third; !ok {
		t.Fatal("the third connection was not accepted after one closed")
	} else {
		c.Close()
	}
	b.Close()
	if len(l.(*limitListener).slots) != 0 {
		t.Errorf("%d slots still taken after every connection closed", len(l.(*limitListener).slots))
	}
}

// TestMaxConnsBoundedByFDs: the cap never exceeds half the open-file limit.
func TestMaxConnsBoundedByFDs(t *testing.T) {
	_, l := Server(ok, Limits{MaxConns: 1 << 40})
	if l.MaxConns > FDCap() || l.MaxConns < 1 {
		t.Errorf("MaxConns %d, FDCap %d", l.MaxConns, FDCap())
	}
}
