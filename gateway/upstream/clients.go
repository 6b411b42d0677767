package upstream

import (
	"net"
	"net/http"
	"net/url"
	"time"
)

// Clients holds what routes share to reach upstreams: the base transport, its clones bounded
// by each route timeout, and one Pool per plain-http address. It is built and changed at load
// time only (under the gateway's lock, or before it serves), never on the request path.
type Clients struct {
	base     *http.Transport
	timeouts map[time.Duration]*http.Transport
	pools    map[string]*Pool
	counters func(addr string) Counters
	forget   func(addr string)
}

// NewClients returns the clients of a gateway. counters resolves the counters of an address's
// pool when it is made; forget is told when a pool is dropped (its series go). Either may be nil.
func NewClients(counters func(addr string) Counters, forget func(addr string)) *Clients {
	if counters == nil {
		counters = func(string) Counters { return Counters{} }
	}
	if forget == nil {
		forget = func(string) {}
	}
	return &Clients{base: NewTransport(), timeouts: map[time.Duration]*http.Transport{}, pools: map[string]*Pool{},
		counters: counters, forget: forget}
}

// Base is the transport without a route timeout.
func (c *Clients) Base() *http.Transport { return c.base }

// TransportFor returns the transport of routes with timeout d: the base transport with the
// time until response headers, and the dial, bounded by d. Routes sharing a timeout share its
// connection pool.
func (c *Clients) TransportFor(d time.Duration) *http.Transport {
	if d <= 0 {
		return c.base
	}
	if t, ok := c.timeouts[d]; ok {
		return t
	}
	t := c.base.Clone()
	t.ResponseHeaderTimeout = d
	t.DialContext = (&net.Dialer{Timeout: min(d, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext
	c.timeouts[d] = t
	return t
}

// PoolFor returns the connection pool of a plain-http upstream address, shared by every route
// and target that names it.
func (c *Clients) PoolFor(u *url.URL) *Pool {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	if p, ok := c.pools[addr]; ok {
		return p
	}
	p := NewPool(addr, c.counters(addr))
	c.pools[addr] = p
	return p
}

// Retain drops the transports and pools that none of routes uses. Requests still in flight on
// the dropped ones keep them; only idle connections are closed.
func (c *Clients) Retain(routes []*Route) {
	used := map[time.Duration]bool{}
	pools := map[*Pool]bool{}
	for _, r := range routes {
		used[r.Timeout] = true
		for _, t := range r.Balancer.targets {
			pools[t.Pool] = true
		}
	}
	for d, t := range c.timeouts {
		if !used[d] {
			delete(c.timeouts, d)
			t.CloseIdleConnections()
		}
	}
	for addr, p := range c.pools {
		if !pools[p] {
			delete(c.pools, addr)
			_ = p.Close()
			c.forget(addr)
		}
	}
}

// Close closes every pool and the idle connections of every transport.
func (c *Clients) Close() error {
	for addr, p := range c.pools {
		_ = p.Close()
		delete(c.pools, addr)
	}
	for _, t := range c.timeouts {
		t.CloseIdleConnections()
	}
	c.base.CloseIdleConnections()
	return nil
}
