package upstreamtest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// Poisoning answers the first request of its first connection with "ok", then, once Poison is
// called, writes a second response nobody asked for on that connection (Set-Cookie:
// session=attacker) and sends the port of the client's end of it on Written. Every other request
// gets "fresh". A client that reuses the poisoned connection would answer its next request, maybe
// another user's, with the stray response.
type Poisoning struct {
	ln      net.Listener
	poison  chan struct{}
	once    sync.Once
	Written chan int
}

// NewPoisoning starts a Poisoning upstream; it stops when the test ends.
func NewPoisoning(t testing.TB) *Poisoning {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Poisoning{ln: ln, poison: make(chan struct{}), Written: make(chan int, 1)}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(c net.Conn, first bool) {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if !first {
						if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"); err != nil {
							return
						}
						continue
					}
					first = false
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
					select {
					case <-u.poison:
					case <-done:
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 5\r\n\r\nstray")
					u.Written <- c.RemoteAddr().(*net.TCPAddr).Port
				}
			}(c, first)
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	return u
}

// Addr is the upstream's host:port.
func (u *Poisoning) Addr() string { return u.ln.Addr().String() }

// Poison lets the stray response be written.
func (u *Poisoning) Poison() { u.once.Do(func() { close(u.poison) }) }
