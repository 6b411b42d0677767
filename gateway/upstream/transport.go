package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrTimeout is the cause of a request whose upstream did not answer within its route's timeout.
var ErrTimeout = errors.New("upstream did not answer within the route timeout")

// NewTransport is the transport shared by every route: a keep-alive pool sized for a gateway
// (Go's default of 2 idle connections per host makes a proxy open and close a connection for
// most requests under load).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil, // an auth gateway must not route upstream traffic through an environment proxy
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
		// A proxy forwards the client's Accept-Encoding as it is: no gzip asked for on the
		// client's behalf and unpacked behind its back (Pool does the same).
		DisableCompression: true,
		// The pool's bound (Pool), for https targets and upgrades too (Go's default: 10 MB).
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
	}
}

// TimeoutTransport bounds the time until the upstream's response headers arrive, by the
// duration WithTimeout put in the request's context. A plain context deadline would also cut a
// slow but healthy response body; here the timer stops as soon as the headers are in, and the
// body is bounded by the client instead. httputil.ReverseProxy (upgrades) goes through it.
type TimeoutTransport struct {
	Next http.RoundTripper
}

type timeoutKey struct{}

// WithTimeout returns ctx carrying the route timeout TimeoutTransport applies.
func WithTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, timeoutKey{}, d)
}

func (t TimeoutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	d, _ := r.Context().Value(timeoutKey{}).(time.Duration)
	if d <= 0 {
		return t.Next.RoundTrip(r)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	timer := time.AfterFunc(d, func() { cancel(ErrTimeout) })
	resp, err := t.Next.RoundTrip(r.WithContext(ctx))
	if !timer.Stop() {
		// The timer fired: the cancellation cause tells the error handler it was a timeout.
		if err != nil {
			cancel(nil)
			return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok {
		// A protocol switch (101): the proxy writes to the body, so it must stay writable.
		resp.Body = &cancelRWBody{cancelBody: cancelBody{ReadCloser: rw, cancel: cancel}, w: rw}
		return resp, nil
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelRWBody struct {
	cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// IsDialError reports a failure to connect: the upstream received nothing of the request.
func IsDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// IsTimeout reports the transport's own timeouts (response headers, dial), not a cancelled
// client.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
