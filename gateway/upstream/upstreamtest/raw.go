// Package upstreamtest has upstreams for tests that must send what net/http's server never would.
package upstreamtest

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Raw is a TCP server that answers each request with the bytes respond returns for it
// (nil: close the connection without an answer), so that tests can send what net/http's server
// never would. It closes the connection after an HTTP/1.0 or "Connection: close" answer, and
// after every answer when CloseAfter is set (then telling closed), and counts the connections it
// accepted and the requests it read.
type Raw struct {
	ln         net.Listener
	Conns      atomic.Int64
	Requests   atomic.Int64
	CloseAfter bool
	Closed     chan struct{}
	wg         sync.WaitGroup
}

// New starts a Raw upstream that answers with respond; it stops when the test ends.
func New(t testing.TB, respond func(n int, req *http.Request) []byte) *Raw {
	return Start(t, &Raw{}, respond)
}

// Start starts u (a zero Raw, perhaps with CloseAfter set) answering with respond.
func Start(t testing.TB, u *Raw, respond func(n int, req *http.Request) []byte) *Raw {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.ln = ln
	u.Closed = make(chan struct{}, 16)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.Conns.Add(1)
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					out := respond(int(u.Requests.Add(1)), req)
					if out == nil {
						return
					}
					if _, err := c.Write(out); err != nil {
						return
					}
					if u.CloseAfter {
						c.Close()
						u.Closed <- struct{}{}
						return
					}
					if bytes.HasPrefix(out, []byte("HTTP/1.0")) || bytes.Contains(out, []byte("Connection: close")) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
	})
	return u
}

// URL is the upstream's http URL.
func (u *Raw) URL() *url.URL {
	return &url.URL{Scheme: "http", Host: u.ln.Addr().String()}
}
