package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// errClientBody marks a failure to read the client's request body while it was being sent
// upstream: a malformed chunked encoding, a client that stopped sending (client_body_timeout)
// or went away. It is the client's fault, not the upstream's (400 or 408, not 502).
var errClientBody = errors.New("reading the client's request body")

// errClientWrite marks a failure to write the response to the client: it went away, or took no
// bytes for send_timeout.
var errClientWrite = errors.New("writing to the client")

// timedBody is the client's request body as the upstream request reads it: each read waits at
// most d for the client (nginx's client_body_timeout, between two reads rather than for the
// whole body, so that a large upload on a slow link is not cut), and its errors are the
// client's (errClientBody).
type timedBody struct {
	body io.ReadCloser
	rc   *http.ResponseController
	d    time.Duration
	done bool
}

func (b *timedBody) Read(p []byte) (int, error) {
	if !b.done {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	n, err := b.body.Read(p)
	if err != nil && !b.done {
		b.done = true
		// The server reads the connection in the background once the body is done (to see a
		// client leave); a deadline left set would cut that read, and the request with it.
		_ = b.rc.SetReadDeadline(time.Time{})
		if err != io.EOF {
			err = fmt.Errorf("%w: %w", errClientBody, err)
		}
	}
	return n, err
}

func (b *timedBody) Close() error { return b.body.Close() }

// clearReadDeadline undoes what a timedBody may have left set when the upstream answered before
// the body was read to its end.
func (b *timedBody) clearReadDeadline() {
	if !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// timedWriter writes the response to the client, each write waiting at most d for the client
// to take the bytes (nginx's send_timeout): a client that never reads would otherwise hold the
// upstream connection, and the gateway's buffers, for ever.
type timedWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
	// set tells that a deadline was set and must be cleared: the next request on the
	// connection must not inherit it.
	set bool
}

func (t *timedWriter) Write(p []byte) (int, error) {
	if t.d > 0 {
		t.set = t.rc.SetWriteDeadline(time.Now().Add(t.d)) == nil || t.set
	}
	n, err := t.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errClientWrite, err)
	}
	return n, err
}

func (t *timedWriter) clear() {
	if t.set {
		_ = t.rc.SetWriteDeadline(time.Time{})
	}
}
