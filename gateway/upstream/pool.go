package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pool is the request path's HTTP/1.1 client for one plain-http upstream address: keep-alive
// connections in a LIFO pool, and each request written and its response read by the goroutine
// that serves the client. http.Transport hands every request to a writer and a reader goroutine
// of the connection and back, which costs a proxy most of its own CPU under load; here a request
// costs no goroutine switch. What it does not do (TLS, request bodies of unknown length,
// Expect: 100-continue, CONNECT) stays with http.Transport: see Eligible.
type Pool struct {
	addr string
	m    Counters

	mu     sync.Mutex
	idle   []*conn // most recently used last
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// Counter is what a pool counts with (a prometheus.Counter is one).
type Counter interface{ Inc() }

// Counters count what happens to a pool's connections; a nil counter counts nothing.
type Counters struct {
	Dialed, Reused, Stale Counter
}

func inc(c Counter) {
	if c != nil {
		c.Inc()
	}
}

// conn is one connection to the upstream with its buffers.
type conn struct {
	c         net.Conn
	lr        headerLimiter // between c and br
	peek      *peeker
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// headerLimiter bounds what the upstream may send while the pool reads response headers:
// textproto reads a header line of any length, and a 100 MB header would be held in memory (and
// relayed). A budget of -1 reads without limit (the body, whose size is the client's business).
type headerLimiter struct {
	c      net.Conn
	budget int64
	read   int64 // bytes read since the budget was set
}

func (l *headerLimiter) Read(p []byte) (int, error) {
	if l.budget < 0 {
		return l.c.Read(p)
	}
	if l.budget == 0 {
		return 0, ErrResponseHeaderTooLarge
	}
	if int64(len(p)) > l.budget {
		p = p[:l.budget]
	}
	n, err := l.c.Read(p)
	l.budget -= int64(n)
	l.read += int64(n)
	return n, err
}

// ErrResponseHeaderTooLarge: the upstream's response headers exceed MaxResponseHeaderBytes.
var ErrResponseHeaderTooLarge = fmt.Errorf("upstream response headers exceed %d bytes", MaxResponseHeaderBytes)

const (
	h1MaxIdle     = 1024             // idle connections kept per upstream address
	h1IdleTimeout = 90 * time.Second // an idle connection older than this is closed
	h1Max1xx      = 5                // informational responses accepted before the answer
	h1ReadBuffer  = 32 << 10
	// MaxResponseHeaderBytes bounds an upstream's response headers, informational responses
	// included (Envoy's default is 60 KiB, nginx's proxy_buffer_size 4–8 KiB); beyond it the
	// client gets a 502. It matches the listener's own MaxHeaderBytes for requests.
	MaxResponseHeaderBytes = 64 << 10
)

// errH1Stale marks a failure on a reused connection before any byte of the response: the
// upstream closed it while it was idle, and a request that can be replayed is sent again on a
// new connection.
var errH1Stale = errors.New("upstream closed the idle connection")

// NewPool returns the pool of the upstream at addr (host:port). Close stops its janitor.
func NewPool(addr string, m Counters) *Pool {
	p := &Pool{addr: addr, m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go p.janitor()
	return p
}

// Close closes the idle connections and stops the janitor. Connections in use are closed when
// their response is done.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	for _, pc := range idle {
		_ = pc.c.Close()
	}
	return nil
}

// janitor closes connections idle for longer than h1IdleTimeout, so that a quiet upstream does
// not keep sockets open on both sides.
func (p *Pool) janitor() {
	defer close(p.done)
	t := time.NewTicker(h1IdleTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			n := 0
			for n < len(p.idle) && now.Sub(p.idle[n].idleSince) > h1IdleTimeout {
				n++
			}
			old := append([]*conn(nil), p.idle[:n]...)
			p.idle = append(p.idle[:0], p.idle[n:]...)
			p.mu.Unlock()
			for _, pc := range old {
				_ = pc.c.Close()
			}
		}
	}
}

// Eligible reports whether Pool can send r: plain http, a body of known length, and
// nothing that needs http.Transport's machinery. Where the platform cannot check an idle
// connection without reading it (alive), every request takes http.Transport.
func Eligible(r *http.Request) bool {
	return canPeek && r.URL.Scheme == "http" && r.ContentLength >= 0 && r.Method != http.MethodConnect &&
		len(r.Trailer) == 0 && r.Header.Get("Expect") == ""
}

// RoundTrip sends r on a pooled connection (or a new one, dialled within dialTimeout) and reads
// the response headers within timeout (0: no limit). The response body must be read to its end
// or closed: only a body read to its end gives the connection back to the pool. A request that
// failed on a stale connection and can be replayed (no body, idempotent) is sent once more on a
// new connection.
func (p *Pool) RoundTrip(r *http.Request, host string, timeout, dialTimeout time.Duration) (*http.Response, error) {
	ctx := r.Context()
	replayable := r.Body == nil && isIdempotent(r.Method)
	pc, reused := p.get()
	if pc == nil {
		var err error
		if pc, err = p.dial(ctx, dialTimeout); err != nil {
			return nil, err
		}
	}
	resp, err := p.send(ctx, pc, r, host, timeout, reused)
	if errors.Is(err, errH1Stale) && replayable {
		inc(p.m.Stale)
		if pc, err = p.dial(ctx, dialTimeout); err != nil {
			return nil, err
		}
		resp, err = p.send(ctx, pc, r, host, timeout, false)
	}
	return resp, err
}

// get pops the most recently used idle connection, closing the ones that must not carry
// another request. Every connection is checked before reuse, however recently it was used: an
// upstream may have written bytes nobody asked for (a second response after a short
// Content-Length), and a request sent on that connection would be answered with them; that
// response, perhaps with another client's Set-Cookie, would go to the wrong client. nginx checks
// readability on every reuse for the same reason, and http.Transport's reader goroutine reports
// an "unsolicited response". A connection the upstream closes between the check and the write
// is still caught (errH1Stale) and a replayable request sent again.
func (p *Pool) get() (*conn, bool) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil, false
		}
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if pc.peek.alive() { // put kept no connection with buffered bytes
			inc(p.m.Reused)
			return pc, true
		}
		inc(p.m.Stale)
		_ = pc.c.Close()
	}
}

// put gives a connection whose response was read to its end back to the pool.
func (p *Pool) put(pc *conn) {
	if pc.br.Buffered() > 0 {
		// Bytes after the response: the upstream's framing cannot be trusted on this
		// connection (a smuggled response would answer the next request).
		_ = pc.c.Close()
		return
	}
	pc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= h1MaxIdle {
		p.mu.Unlock()
		_ = pc.c.Close()
		return
	}
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

func (p *Pool) dial(ctx context.Context, timeout time.Duration) (*conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	inc(p.m.Dialed)
	pc := &conn{c: c, lr: headerLimiter{c: c, budget: -1}, peek: newPeeker(c), bw: bufio.NewWriterSize(c, 4<<10)}
	pc.br = bufio.NewReaderSize(&pc.lr, h1ReadBuffer)
	return pc, nil
}

// aLongTimeAgo is a deadline in the past: it wakes a blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// send writes r on pc and reads the response headers.
func (p *Pool) send(ctx context.Context, pc *conn, r *http.Request, host string, timeout time.Duration, reused bool) (*http.Response, error) {
	// A client that goes away cancels ctx: the wait for the upstream ends with it.
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = pc.c.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	if err := writeRequest(pc.bw, r, host); err != nil {
		if errors.Is(err, errInvalidHeader) {
			return fail(err)
		}
		if reused {
			err = fmt.Errorf("%w: %w", errH1Stale, err)
		}
		return fail(fmt.Errorf("writing the request: %w", err))
	}
	if timeout > 0 {
		_ = pc.c.SetReadDeadline(time.Now().Add(timeout))
	}
	// Reading the headers may fill the buffer with up to h1ReadBuffer bytes of the body beyond
	// them; the exact size is checked once they are parsed. The buffer is empty here (put).
	pc.lr.budget, pc.lr.read = MaxResponseHeaderBytes+h1ReadBuffer, 0
	// The first byte tells a connection the upstream had closed (nothing comes) from a response
	// cut short, which ReadResponse reports alike.
	if _, err := pc.br.Peek(1); err != nil {
		if reused && (errors.Is(err, io.EOF) || isConnReset(err)) {
			err = fmt.Errorf("%w: %w", errH1Stale, err)
		}
		return fail(fmt.Errorf("reading the response: %w", err))
	}
	var resp *http.Response
	for informational := 0; ; informational++ {
		var err error
		resp, err = http.ReadResponse(pc.br, r)
		if err != nil {
			if pc.lr.budget == 0 {
				err = ErrResponseHeaderTooLarge
			}
			return fail(fmt.Errorf("reading the response: %w", err))
		}
		if pc.lr.read-int64(pc.br.Buffered()) > MaxResponseHeaderBytes {
			return fail(fmt.Errorf("reading the response: %w", ErrResponseHeaderTooLarge))
		}
		// 1xx informational responses (100 Continue, 103 Early Hints) precede the answer, a
		// few of them (http.Transport's limit); a 101 is not expected here, as upgrades take
		// the other path.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if informational == h1Max1xx {
			return fail(fmt.Errorf("more than %d informational responses", h1Max1xx))
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("unexpected 101 Switching Protocols"))
	}
	pc.lr.budget = -1
	if timeout > 0 {
		// The timeout bounds the wait for the headers; a slow but flowing body is the client's.
		_ = pc.c.SetReadDeadline(time.Time{})
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	b := &h1Body{ReadCloser: resp.Body, pool: p, pc: pc, stop: stop, keep: !resp.Close && !r.Close}
	if resp.Body == http.NoBody {
		b.release(true) // nothing to read (HEAD, 204, 304, Content-Length: 0): done already
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// h1Body gives the connection back to the pool when the body has been read to its end, and
// closes it otherwise.
type h1Body struct {
	io.ReadCloser
	pool *Pool
	pc   *conn
	stop func() bool
	keep bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.release(false)
	}
	return nil
}

func (b *h1Body) release(complete bool) {
	b.done = true
	// stop reports false when the client's cancellation has already set a past deadline.
	if b.stop() && complete && b.keep {
		b.pool.put(b.pc)
		return
	}
	_ = b.pc.c.Close()
}

// errInvalidHeader is a header the gateway must not send: a name that is not a token or a value
// with a line break or NUL (a header injection). Its value is never quoted in the error: it may
// be a credential.
var errInvalidHeader = errors.New("invalid header for the upstream request")

// h1ExcludedHeaders are written from the request's fields, not from its header map.
var h1ExcludedHeaders = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeRequest writes r's request line, headers and body in HTTP/1.1 framing and flushes.
func writeRequest(bw *bufio.Writer, r *http.Request, host string) error {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range r.Header {
		if h1ExcludedHeaders[k] {
			continue
		}
		if !IsToken(k) {
			return fmt.Errorf("%w: name %q", errInvalidHeader, k)
		}
		for _, v := range vs {
			if v == "" && k == "User-Agent" {
				continue // an empty User-Agent asks for none, as with http.Transport
			}
			if !validHeaderValue(v) {
				return fmt.Errorf("%w: the value of %s", errInvalidHeader, k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if r.ContentLength > 0 || (r.ContentLength == 0 && methodHasBody(r.Method)) {
		var num [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], r.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
	if r.ContentLength > 0 && r.Body != nil {
		n, err := io.CopyN(bw, r.Body, r.ContentLength)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("the request body ended after %d of %d bytes", n, r.ContentLength)
			}
			return fmt.Errorf("copying the request body: %w", err)
		}
	}
	return bw.Flush()
}

// methodHasBody: the methods for which http.Transport sends "Content-Length: 0" when the body is
// empty, so that the upstream does not wait for one.
func methodHasBody(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

func isIdempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// IsToken reports whether k is an RFC 9110 token: a valid header name, or method.
func IsToken(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte[k[i]] {
			return false
		}
	}
	return true
}

// validHeaderValue refuses the bytes that would end the field or the header block: CR, LF, NUL.
// Three vectorised scans beat one byte loop on the long values (tokens) a gateway forwards.
func validHeaderValue(v string) bool {
	return strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, 0) < 0
}

var isTokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
