package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/gateway/upstream/upstreamtest"
)

// h1Do sends method to the pool and returns the status and the body read to its end.
func h1Do(t *testing.T, p *Pool, method string, body string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+p.addr+"/x", rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd == nil {
		req.Body = nil
	}
	resp, err := p.RoundTrip(req, p.addr, 5*time.Second, time.Second)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

func newTestPool(t *testing.T, u *url.URL) *Pool {
	p := NewPool(u.Host, Counters{})
	t.Cleanup(func() { p.Close() })
	return p
}

func TestH1PoolFraming(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		response string
		want     string
		// conns is the number of connections two requests take: 1 when the first one's
		// connection is reused.
		conns int64
	}{
		{"content length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", 1},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", "hello", 1},
		{"empty", "GET", "HTTP/1.1 204 No Content\r\n\r\n", "", 1},
		{"head", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "", 1},
		{"early hints first", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 1},
		{"five early hints", "GET", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 5) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 1},
		{"connection close", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", "ok", 2},
		{"body until close", "GET", "HTTP/1.0 200 OK\r\n\r\nuntil-close", "until-close", 2},
		// Bytes after the declared body would answer the next request: the connection is
		// not reused.
		{"bytes after the body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", "ok", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := upstreamtest.New(t, func(int, *http.Request) []byte { return []byte(tt.response) })
			p := newTestPool(t, up.URL())
			for i := range 2 {
				status, body, err := h1Do(t, p, tt.method, "")
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if status/100 != 2 || body != tt.want {
					t.Fatalf("request %d: got %d %q, want 2xx %q", i+1, status, body, tt.want)
				}
			}
			if got := up.Conns.Load(); got != tt.conns {
				t.Errorf("got %d connections for two requests, want %d", got, tt.conns)
			}
		})
	}
}

// TestH1PoolStaleConnection: the upstream closes each connection after its answer without
// saying so. The next request must not fail: a replayable one is sent again on a new
// connection, and a connection is checked before it carries one that is not.
func TestH1PoolRefusesEndlessInformational(t *testing.T) {
	up := upstreamtest.New(t, func(int, *http.Request) []byte {
		return []byte(strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	p := newTestPool(t, up.URL())
	if _, _, err := h1Do(t, p, "GET", ""); err == nil {
		t.Fatal("got an answer after six informational responses, want an error")
	}
}

func TestH1PoolStaleConnection(t *testing.T) {
	tests := []struct {
		name, method, body string
	}{
		{"GET is replayed", "GET", ""},
		{"POST is not sent on the closed connection", "POST", "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := upstreamtest.Start(t, &upstreamtest.Raw{CloseAfter: true}, func(_ int, r *http.Request) []byte {
				b, _ := io.ReadAll(r.Body)
				if string(b) != tt.body {
					return []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				}
				return []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			})
			p := newTestPool(t, up.URL())
			for i := range 3 {
				status, body, err := h1Do(t, p, tt.method, tt.body)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if status != 200 || body != "ok" {
					t.Fatalf("request %d: got %d %q, want 200 \"ok\"", i+1, status, body)
				}
				<-up.Closed // the upstream has closed the connection the pool keeps
			}
		})
	}
}

func TestH1PoolRequest(t *testing.T) {
	type seen struct {
		line, host, contentLength, body string
		header                          http.Header
	}
	got := make(chan seen, 1)
	up := upstreamtest.New(t, func(_ int, r *http.Request) []byte {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method + " " + r.RequestURI, r.Host, r.Header.Get("Content-Length"), string(b), r.Header}
		return []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	p := newTestPool(t, up.URL())
	tests := []struct {
		name, method, target, body string
		header                     http.Header
		want                       seen
	}{
		{"get", "GET", "/a/b?q=1&r=%2F", "", http.Header{"X-One": {"1", "2"}},
			seen{line: "GET /a/b?q=1&r=%2F", host: "front.example", header: http.Header{"X-One": {"1", "2"}}}},
		{"post with body", "POST", "/p", "hello", nil, seen{line: "POST /p", host: "front.example", contentLength: "5", body: "hello"}},
		{"empty post says so", "POST", "/p", "", nil, seen{line: "POST /p", host: "front.example", contentLength: "0"}},
		{"empty User-Agent sends none", "GET", "/", "", http.Header{"User-Agent": {""}}, seen{line: "GET /", host: "front.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader
			if tt.body != "" {
				rd = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(tt.method, "http://"+p.addr+tt.target, rd)
			if err != nil {
				t.Fatal(err)
			}
			if rd == nil {
				req.Body = nil
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			resp, err := p.RoundTrip(req, "front.example", time.Second, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := <-got
			if s.line != tt.want.line || s.host != tt.want.host || s.contentLength != tt.want.contentLength || s.body != tt.want.body {
				t.Errorf("got %q host %q length %q body %q, want %q host %q length %q body %q",
					s.line, s.host, s.contentLength, s.body, tt.want.line, tt.want.host, tt.want.contentLength, tt.want.body)
			}
			for k, vs := range tt.want.header {
				if g := s.header.Values(k); strings.Join(g, ",") != strings.Join(vs, ",") {
					t.Errorf("header %s: got %q, want %q", k, g, vs)
				}
			}
			if vs, ok := tt.header["User-Agent"]; ok && vs[0] == "" {
				if got, sent := s.header["User-Agent"]; sent {
					t.Errorf("got User-Agent %q, want none", got)
				}
			}
		})
	}
}

// TestH1PoolRefusesHeaderInjection: a header value with a line break (from a token claim, say)
// must not reach the upstream as a second header, and the error must not quote the value.
func TestH1PoolRefusesHeaderInjection(t *testing.T) {
	up := upstreamtest.New(t, func(int, *http.Request) []byte {
		return []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	p := newTestPool(t, up.URL())
	tests := []struct {
		name   string
		header http.Header
	}{
		{"CRLF in a value", http.Header{"X-Consumer-Custom-Id": {"secret\r\nX-Consumer-Username: admin"}}},
		{"LF in a value", http.Header{"X-A": {"a\nb"}}},
		{"NUL in a value", http.Header{"X-A": {"a\x00b"}}},
		{"space in a name", http.Header{"X A": {"v"}}},
		{"colon in a name", http.Header{"X:A": {"v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
			req.Header = tt.header
			_, err := p.RoundTrip(req, p.addr, time.Second, time.Second)
			if !errors.Is(err, errInvalidHeader) {
				t.Fatalf("got %v, want errInvalidHeader", err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error quotes the value: %v", err)
			}
		})
	}
	if n := up.Requests.Load(); n != 0 {
		t.Errorf("the upstream read %d requests, want none", n)
	}
}

func TestH1PoolTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	up := upstreamtest.New(t, func(int, *http.Request) []byte {
		arrived <- struct{}{}
		<-release
		return nil
	})
	t.Cleanup(func() { close(release) })
	p := newTestPool(t, up.URL())

	t.Run("no answer within the timeout", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
		_, err := p.RoundTrip(req, p.addr, 50*time.Millisecond, time.Second)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("got %v, want a timeout", err)
		}
	})
	t.Run("client cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/", nil)
		go func() {
			<-arrived
			cancel()
		}()
		_, err := p.RoundTrip(req, p.addr, 0, time.Second)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// TestH1PoolStrayResponse: an upstream answers with a short Content-Length and, once the pool
// holds the connection idle, writes a second response nobody asked for. However recently the
// connection was used, the next request (another client's) must not be answered with it.
func TestH1PoolStrayResponse(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			up := upstreamtest.NewPoisoning(t)
			p := newTestPool(t, &url.URL{Scheme: "http", Host: up.Addr()})
			if status, body, err := h1Do(t, p, method, ""); err != nil || status != 200 || body != "ok" {
				t.Fatalf("first request: got %d %q %v, want 200 \"ok\"", status, body, err)
			}
			p.mu.Lock()
			if len(p.idle) != 1 {
				p.mu.Unlock()
				t.Fatalf("got %d idle connections after the first request, want 1", len(p.idle))
			}
			idle := newPeeker(p.idle[0].c)
			p.mu.Unlock()
			up.Poison()
			<-up.Written
			for idle.alive() { // the stray bytes are in flight on loopback until readable
				runtime.Gosched()
			}

			status, body, err := h1Do(t, p, method, "")
			if err != nil {
				t.Fatalf("second request: %v", err)
			}
			if status != 200 || body != "fresh" {
				t.Errorf("second request: got %d %q, want 200 \"fresh\" (the stray response answered it)", status, body)
			}
		})
	}
}

// TestH1PoolResponseHeaderLimit: response headers beyond MaxResponseHeaderBytes are refused
// (502 for the client: TestGatewayResponseHeaderLimit) before they are held in memory; headers under it pass whatever the size
// of the body after them.
func TestH1PoolResponseHeaderLimit(t *testing.T) {
	big := func(n int) string { return "X-Big: " + strings.Repeat("a", n) + "\r\n" }
	body := strings.Repeat("b", 200<<10)
	tests := []struct {
		name     string
		response string
		wantErr  bool
	}{
		{"headers under the limit, large body", "HTTP/1.1 200 OK\r\n" + big(60<<10) + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false},
		{"one header line over the limit", "HTTP/1.1 200 OK\r\n" + big(70<<10) + "Content-Length: 0\r\n\r\n", true},
		{"many header lines over the limit", "HTTP/1.1 200 OK\r\n" + strings.Repeat(big(1000), 70) + "Content-Length: 0\r\n\r\n", true},
		{"a 10 MB header", "HTTP/1.1 200 OK\r\n" + big(10<<20) + "Content-Length: 0\r\n\r\n", true},
		{"informational responses count", strings.Repeat("HTTP/1.1 103 Early Hints\r\n"+big(20<<10)+"\r\n", 4) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := upstreamtest.New(t, func(int, *http.Request) []byte { return []byte(tt.response) })
			p := newTestPool(t, up.URL())
			_, got, err := h1Do(t, p, "GET", "")
			if tt.wantErr {
				if !errors.Is(err, ErrResponseHeaderTooLarge) {
					t.Fatalf("got error %v, want %v", err, ErrResponseHeaderTooLarge)
				}
				return
			}
			if err != nil || got != body {
				t.Fatalf("got %d body bytes, error %v; want %d bytes", len(got), err, len(body))
			}
		})
	}
}
