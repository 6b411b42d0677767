package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// clientTimeoutPolicy is a key-auth route with short client timeouts; %s is the upstream.
const clientTimeoutPolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ],
    "client_body_timeout": "100ms", "send_timeout": "100ms" } } ]
}`

// startFront serves gw on a real listener, as the gateway's server does: deadlines need a
// connection.
func startFront(t *testing.T, gw http.Handler) string {
	t.Helper()
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	return front.Listener.Addr().String()
}

// TestClientBodyTimeout: a client that stops sending its body gets 408 once
// client_body_timeout passes without a byte, and the upstream's request is ended, on the pool's
// path (known length) and http.Transport's (chunked).
func TestClientBodyTimeout(t *testing.T) {
	tests := []struct {
		name, head, part string
	}{
		{"content length", "POST /r HTTP/1.1\r\nHost: gw\r\napikey: ka\r\nContent-Length: 100\r\n\r\n", "only ten b"},
		{"chunked", "POST /r HTTP/1.1\r\nHost: gw\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n\r\n", "a\r\nonly ten b\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The upstream reads its connection until the gateway closes it.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			ended := make(chan struct{})
			go func() {
				uc, err := ln.Accept()
				if err != nil {
					return
				}
				defer uc.Close()
				_, _ = io.Copy(io.Discard, uc)
				close(ended)
			}()
			up := struct{ URL string }{"http://" + ln.Addr().String()}
			addr := startFront(t, newTestGatewayAt(t, clientTimeoutPolicy, up.URL))
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.head+tt.part); err != nil {
				t.Fatal(err)
			}
			// Nothing more is sent: the gateway must give up on its own.
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("got %d, want 408", resp.StatusCode)
			}
			<-ended // the upstream connection is closed, not left waiting for the body
		})
	}
}

// TestSendTimeout: a client that never reads the response is dropped once send_timeout passes
// with no byte taken, which ends the upstream's response too (it would otherwise hold the
// upstream connection for ever).
func TestSendTimeout(t *testing.T) {
	writeFailed := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				close(writeFailed)
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	addr := startFront(t, newTestGatewayAt(t, clientTimeoutPolicy, up.URL))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /r HTTP/1.1\r\nHost: gw\r\napikey: ka\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing; the upstream's endless body must fail, not block for ever.
	<-writeFailed
}

// TestClientDeadlinesDoNotOutliveTheExchange: the deadlines set while proxying are cleared when
// they no longer apply: an upstream slower than client_body_timeout once a (chunked) body is in
// still answers, and after the keep-alive connection was idle for longer than send_timeout, an
// answer the gateway writes itself (a 401) still reaches the client.
func TestClientDeadlinesDoNotOutliveTheExchange(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(300 * time.Millisecond) // longer than both timeouts, which must not apply now
		fmt.Fprintf(w, "got %d bytes", len(b))
	}))
	t.Cleanup(up.Close)
	addr := startFront(t, newTestGatewayAt(t, clientTimeoutPolicy, up.URL))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	steps := []struct {
		name, req, want string
		status          int
		idle            bool // wait longer than send_timeout first
	}{
		{"chunked body, slow upstream", "POST /r HTTP/1.1\r\nHost: gw\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "got 5 bytes", 200, false},
		{"known length, slow upstream", "POST /r HTTP/1.1\r\nHost: gw\r\napikey: ka\r\nContent-Length: 5\r\n\r\nhello", "got 5 bytes", 200, false},
		{"the gateway's own answer", "GET /r HTTP/1.1\r\nHost: gw\r\n\r\n", "", 401, true},
	}
	for _, st := range steps {
		if st.idle {
			time.Sleep(300 * time.Millisecond) // the keep-alive connection idles past send_timeout
		}
		if _, err := io.WriteString(c, st.req); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", st.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != st.status || (st.want != "" && string(got) != st.want) {
			t.Fatalf("%s: got %d %q, want %d %q", st.name, resp.StatusCode, got, st.status, st.want)
		}
	}
}
