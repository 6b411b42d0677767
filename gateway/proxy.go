package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// errUpstreamTimeout is the cause of a request whose upstream did not answer in time.
var errUpstreamTimeout = errors.New("upstream did not answer within the route timeout")

// newTransport is the transport shared by every route: a keep-alive pool sized for a gateway
// (Go's default of 2 idle connections per host makes a proxy open and close a connection for
// most requests under load).
func newTransport() *http.Transport {
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
		// client's behalf and unpacked behind its back (h1Pool does the same).
		DisableCompression: true,
		// The pool's bound (h1Pool), for https targets and upgrades too (Go's default: 10 MB).
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
	}
}

// transportFor returns the transport of routes with timeout d: the base transport with the
// time until response headers, and the dial, bounded by d. Routes sharing a timeout share its
// connection pool. Called at compile time, under g.mu or before the gateway serves.
func (g *Gateway) transportFor(d time.Duration) *http.Transport {
	if d <= 0 {
		return g.base
	}
	if t, ok := g.headerTransports[d]; ok {
		return t
	}
	t := g.base.Clone()
	t.ResponseHeaderTimeout = d
	t.DialContext = (&net.Dialer{Timeout: min(d, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext
	g.headerTransports[d] = t
	return t
}

// poolFor returns the connection pool of a plain-http upstream address, shared by every route
// and target that names it. Called at compile time, under g.mu or before the gateway serves.
func (g *Gateway) poolFor(u *url.URL) *h1Pool {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	if p, ok := g.pools[addr]; ok {
		return p
	}
	p := newH1Pool(addr, g.metrics.h1Counters(addr))
	g.pools[addr] = p
	return p
}

// retainTransports drops the transports of timeouts and the pools of addresses c no longer
// uses. Requests still in flight on the old snapshot keep theirs; only idle connections are
// closed.
func (g *Gateway) retainTransports(c *compiled) {
	used := map[time.Duration]bool{}
	pools := map[*h1Pool]bool{}
	for _, rt := range c.routes {
		if rt.balancer == nil {
			continue // decided by forward auth only
		}
		used[rt.timeout] = true
		for _, t := range rt.balancer.targets {
			pools[t.pool] = true
		}
	}
	for d, t := range g.headerTransports {
		if !used[d] {
			delete(g.headerTransports, d)
			t.CloseIdleConnections()
		}
	}
	for addr, p := range g.pools {
		if !pools[p] {
			delete(g.pools, addr)
			_ = p.Close()
			g.metrics.forgetUpstream(addr)
		}
	}
}

// timeoutTransport bounds the time until the upstream's response headers arrive. A plain
// context deadline would also cut a slow but healthy response body; here the timer stops as
// soon as the headers are in, and the body is bounded by the client instead.
type timeoutTransport struct {
	next http.RoundTripper
}

type routeTimeoutKey struct{}

func (t timeoutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	d, _ := r.Context().Value(routeTimeoutKey{}).(time.Duration)
	if d <= 0 {
		return t.next.RoundTrip(r)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	timer := time.AfterFunc(d, func() { cancel(errUpstreamTimeout) })
	resp, err := t.next.RoundTrip(r.WithContext(ctx))
	if !timer.Stop() {
		// The timer fired: the cancellation cause tells the error handler it was a timeout.
		if err != nil {
			cancel(nil)
			return nil, fmt.Errorf("%w: %w", errUpstreamTimeout, err)
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

// balancer picks targets by smooth weighted round robin (nginx's algorithm): with weights 5,1,1
// it yields a a b a c a a rather than five a's in a row.
type balancer struct {
	mu      sync.Mutex
	targets []*target
	single  *target
}

type target struct {
	url     *url.URL
	weight  int
	current int
	// pool is the lean HTTP/1.1 client of a plain-http target (nil for https).
	pool *h1Pool
	// downUntil (Unix nanoseconds) keeps the balancer off a target that could not be
	// connected to, for targetFailTimeout (nginx's max_fails=1 fail_timeout=10s).
	downUntil atomic.Int64
}

// targetFailTimeout is how long a target that could not be connected to is passed over.
const targetFailTimeout = 10 * time.Second

func (t *target) markDown(now time.Time) { t.downUntil.Store(now.Add(targetFailTimeout).UnixNano()) }

func newBalancer(targets []*target) *balancer {
	b := &balancer{targets: targets}
	if len(targets) == 1 {
		b.single = targets[0]
	}
	return b
}

// next picks a target by smooth weighted round-robin among those not marked down at now; when
// every target is down it picks among all of them, so that a recovered upstream is found.
func (b *balancer) next(now time.Time) *target {
	if b.single != nil {
		return b.single
	}
	ns := now.UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.pick(func(t *target) bool { return t.downUntil.Load() <= ns }); t != nil {
		return t
	}
	return b.pick(func(*target) bool { return true })
}

// pick is one round of smooth weighted round-robin over the targets ok accepts; nil when it
// accepts none. Called with b.mu held.
func (b *balancer) pick(ok func(*target) bool) *target {
	total := 0
	var best *target
	for _, t := range b.targets {
		if !ok(t) {
			continue
		}
		t.current += t.weight
		total += t.weight
		if best == nil || t.current > best.current {
			best = t
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// bufferPool recycles the 32 KiB copy buffers of the reverse proxy.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (p *bufferPool) Get() []byte  { return *p.get() }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// get and put pass the pooled pointer itself: Put's &b costs an allocation per request.
func (p *bufferPool) get() *[]byte  { return p.pool.Get().(*[]byte) }
func (p *bufferPool) put(b *[]byte) { p.pool.Put(b) }
