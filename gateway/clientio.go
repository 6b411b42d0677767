package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// errClientWrite marks a failure to write the response to the client: it went away, or took no
// bytes for send_timeout.
var errClientWrite = errors.New("writing to the client")

// clientBodyError is a failure to read the client's request body while it is sent upstream (a
// malformed chunk, a body cut short, a client that stopped sending for client_body_timeout): the
// client's fault, answered 400 or 408, not the upstream's 502 or 504.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string {
	return "reading the client's request body: " + e.err.Error()
}
func (e *clientBodyError) Unwrap() error { return e.err }

// clientBody is the client's body as the upstream request reads it. Each read waits at most
// timeout for the client (nginx's client_body_timeout: between two reads rather than for the
// whole body, so that a large upload on a slow link is not cut; net/http clears the deadline
// before it reads the connection again, after the body and for the next request); its read errors are typed as
// the client's; and at its end the declared trailers are handed to the upstream request, which
// writes them after the body (the server fills the client's trailers in at the body's end, in
// the reading goroutine).
type clientBody struct {
	body    io.ReadCloser
	in, out http.Header
	rc      *http.ResponseController
	timeout time.Duration
	// Read runs in http.Transport's goroutine that writes the request, which may still run
	// when the round trip has failed: err is shared with the handler's goroutine.
	err atomic.Pointer[clientBodyError]
}

var _ io.ReadCloser = (*clientBody)(nil)

func (b *clientBody) Read(p []byte) (int, error) {
	if b.timeout > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		if b.out != nil {
			copyTrailers(b.out, b.in)
		}
	case err != nil:
		cbe := &clientBodyError{err: err}
		b.err.Store(cbe)
		return n, cbe
	}
	return n, err
}

func (b *clientBody) Close() error { return b.body.Close() }

// timedWriter writes the response to the client, each write waiting at most d for the client
// to take the bytes (nginx's send_timeout): a client that never reads would otherwise hold the
// upstream connection, and the gateway's buffers, for ever. net/http clears the deadline when
// the response is done, before the next request on the connection.
type timedWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (t *timedWriter) Write(p []byte) (int, error) {
	if t.d > 0 {
		_ = t.rc.SetWriteDeadline(time.Now().Add(t.d))
	}
	n, err := t.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errClientWrite, err)
	}
	return n, err
}

// countingWriter counts the response body bytes written to the client: the access log's
// bytes_out. It lives in the exchange, so that counting costs no allocation.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Flush passes the proxy's flushes of streamed responses on.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (deadlines, hijacking).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
