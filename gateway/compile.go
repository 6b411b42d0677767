package gateway

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/policies"
)

// compiled is everything the request path needs, built once per policy snapshot.
type compiled struct {
	snap   *policies.Snapshot
	router *mux.Router
	routes []*route

	consumerLimits map[string][]*limit
	groupLimits    map[string][]*limit
	// consumerGroups is the X-Consumer-Groups value per consumer.
	consumerGroups map[string]string
	limiterIDs     map[string]bool
	// clients resolves a request's client address (remote_addr limits, the access log).
	clients clientAddrs
	// fwd is the forward-auth endpoint; nil without forward_auth.
	fwd *forwardAuth
	// signIn maps the sign-in endpoints' paths to their providers; nil without sessions.
	signIn map[string]signInEndpoint
	// tracked are the consumers with series of their own (policies.Metrics); every consumer
	// when allTracked.
	tracked    set
	allTracked bool

	// inflight is held (read-locked) by every request on this snapshot; closing the snapshot's
	// providers waits for them.
	inflight sync.RWMutex
	closed   bool
}

// route is one compiled policy route; it is the mux handler of its paths.
type route struct {
	name        string
	anonymous   string
	stripPrefix string
	timeout     time.Duration
	// clientBodyTimeout and sendTimeout bound each wait on the client (clientio.go).
	clientBodyTimeout, sendTimeout time.Duration
	// allowEncodedSlashes admits %2F and %5C in a segment (kept encoded); otherwise 400.
	allowEncodedSlashes bool

	allowConsumers, denyConsumers set
	allowGroups, denyGroups       set

	// noCredential answers a request without credentials with the challenges of the providers
	// that can admit a consumer on this route; nil keeps the chain's answer.
	noCredential *idp.Denial
	// login signs in the route's browsers (policies.Route.Login); nil without.
	login oidc.SignIn

	limits []*limit
	// upstream is how the route reaches its targets; nil for a route decided by forward auth
	// only. Its transport enforces timeout as its ResponseHeaderTimeout: cheaper per request
	// than a cancellable context and a timer.
	upstream *upstream.Route
	proxy    *httputil.ReverseProxy
	// upstreamLatency is this route's histogram series.
	upstreamLatency prometheus.Observer
}

// ServeHTTP is never called: the gateway matches with the router and runs its own pipeline.
func (rt *route) ServeHTTP(http.ResponseWriter, *http.Request) {}

type set map[string]bool

func newSet(names []string) set {
	if len(names) == 0 {
		return nil
	}
	s := make(set, len(names))
	for _, n := range names {
		s[n] = true
	}
	return s
}

// limitKeyKind says what a limit counts by.
type limitKeyKind int

const (
	keyConsumer limitKeyKind = iota
	keyRoute
	keyRemoteAddr
	keyGroup
	// keySubject counts each token subject (a person) on its own; the consumer when the chain
	// has no token.
	keySubject
)

// limit is one configured rate limit with its limiter.
type limit struct {
	owner            string // "consumer:FetchBot", "group:bots", "route:petstore"
	metricOwner      string // owner, or "consumer:other" for a consumer without series of its own
	kind             string // "limit-count" or "limit-req"
	spec             ratelimit.Spec
	key              limitKeyKind
	limiter          ratelimit.Limiter
	rejectedCode     int
	rejectedMsg      string
	allowDegradation bool
}

func (g *Gateway) compile(snap *policies.Snapshot) (*compiled, error) {
	// Routes match the normalised escaped path (see match), so that a %2F is data inside a
	// segment and never a separator.
	c := &compiled{
		snap:           snap,
		router:         mux.NewRouter().UseEncodedPath(),
		consumerLimits: map[string][]*limit{},
		groupLimits:    map[string][]*limit{},
		consumerGroups: map[string]string{},
		limiterIDs:     map[string]bool{},
		clients:        clientAddrs{trusted: snap.TrustedProxies},
		fwd:            newForwardAuth(snap.ForwardAuth),
		signIn:         compileSignIn(snap.Providers),
	}
	c.tracked, c.allTracked = trackedConsumers(snap.Policy)
	if g.tr != nil && snap.Chain != nil {
		// Before the snapshot serves: SetObserver is not synchronised with requests.
		snap.Chain.SetObserver(g.tr)
	}
	if c.fwd != nil {
		// The proxies that may ask forward auth vouch for X-Forwarded-For like trusted ones:
		// a remote_addr limit counts the original client, not the proxy.
		c.clients.trusted = append(slices.Clip(snap.TrustedProxies), c.fwd.allow...)
	}
	for _, cons := range snap.Policy.Consumers {
		if cons.Group != "" {
			c.consumerGroups[cons.Username] = cons.Group
		}
	}
	for name, p := range snap.ConsumerPlugins {
		ls, err := g.limits(c, "consumer:"+name, "consumer:"+c.consumerLabel(name), p, keyConsumer)
		if err != nil {
			return nil, err
		}
		c.consumerLimits[name] = ls
	}
	for name, p := range snap.GroupPlugins {
		ls, err := g.limits(c, "group:"+name, "group:"+name, p, keyGroup)
		if err != nil {
			return nil, err
		}
		c.groupLimits[name] = ls
	}
	adm := newAdmission(snap)
	for i := range snap.Policy.Routes {
		pr := &snap.Policy.Routes[i]
		rt, err := g.compileRoute(c, pr)
		if err != nil {
			return nil, fmt.Errorf("compiling route %q: %w", pr.Name, err)
		}
		rt.noCredential = adm.noCredential(rt)
		c.routes = append(c.routes, rt)
		// gorilla/mux panics on some templates (a capture group): checked first, so that a
		// snapshot that did not come through policies.Load cannot take the process down.
		for _, h := range pr.Hosts {
			if err := policies.CheckHost(h); err != nil {
				return nil, fmt.Errorf("compiling route %q: %w", pr.Name, err)
			}
		}
		for _, path := range pr.Paths {
			if err := policies.CheckPathTemplate(path); err != nil {
				return nil, fmt.Errorf("compiling route %q: %w", pr.Name, err)
			}
			mr := c.router.Handle(path, rt)
			if len(pr.Methods) > 0 {
				mr.Methods(pr.Methods...)
			}
			if len(pr.Hosts) > 0 {
				// mux matches one host per route; a route with several hosts gets one mux route each.
				for _, h := range pr.Hosts[1:] {
					hr := c.router.Handle(path, rt).Host(hostTemplate(h))
					if len(pr.Methods) > 0 {
						hr.Methods(pr.Methods...)
					}
				}
				mr.Host(hostTemplate(pr.Hosts[0]))
			}
			if err := mr.GetError(); err != nil {
				return nil, fmt.Errorf("compiling path %q of route %q: %w", path, pr.Name, err)
			}
		}
	}
	return c, nil
}

func (g *Gateway) compileRoute(c *compiled, pr *policies.Route) (*route, error) {
	rt := &route{
		name:        pr.Name,
		anonymous:   pr.Anonymous,
		stripPrefix: strings.TrimSuffix(pr.StripPrefix, "/"),
		timeout:     time.Duration(pr.Upstream.Timeout),

		clientBodyTimeout:   time.Duration(pr.Upstream.ClientBodyTimeout),
		sendTimeout:         time.Duration(pr.Upstream.SendTimeout),
		allowEncodedSlashes: pr.AllowEncodedSlashes,

		upstreamLatency: g.metrics.upstreamObserver(pr.Name),
	}
	if pr.Login != "" {
		s, ok := c.snap.ProviderByName[pr.Login].(oidc.SignIn)
		if !ok {
			return nil, fmt.Errorf("login idp %q does not sign browsers in", pr.Login)
		}
		if _, _, _, ok := s.SignInPaths(); !ok {
			return nil, fmt.Errorf("login idp %q has no session", pr.Login)
		}
		rt.login = s
	}
	if pr.Consumers != nil {
		rt.allowConsumers, rt.denyConsumers = newSet(pr.Consumers.Allow), newSet(pr.Consumers.Deny)
	}
	if pr.Groups != nil {
		rt.allowGroups, rt.denyGroups = newSet(pr.Groups.Allow), newSet(pr.Groups.Deny)
	}
	targets := make([]*upstream.Target, 0, len(pr.Upstream.Targets))
	for _, t := range pr.Upstream.Targets {
		u, err := url.Parse(t.URL)
		if err != nil {
			return nil, fmt.Errorf("parsing target %q: %w", t.URL, err)
		}
		w := t.Weight
		if w <= 0 {
			w = 1
		}
		tg := &upstream.Target{URL: u, Weight: w}
		if u.Scheme == "http" {
			tg.Pool = g.clients.PoolFor(u)
		}
		targets = append(targets, tg)
	}
	ls, err := g.limits(c, "route:"+pr.Name, "route:"+pr.Name, pr.Plugins, keyRoute)
	if err != nil {
		return nil, err
	}
	rt.limits = ls
	for _, l := range ls {
		g.metrics.routeLimit(pr.Name, l)
	}
	if len(targets) == 0 {
		if c.fwd == nil {
			return nil, fmt.Errorf("route has no upstream target")
		}
		return rt, nil // decided by forward auth only: nothing to forward to
	}
	rt.upstream = &upstream.Route{Balancer: upstream.NewBalancer(targets), Transport: g.clients.TransportFor(rt.timeout), Timeout: rt.timeout}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:       rt.rewrite,
		Transport:     g.transport,
		BufferPool:    g.buffers,
		FlushInterval: 0, // ReverseProxy still flushes event streams and unknown-length bodies at once
		ErrorHandler:  g.proxyError,
		ErrorLog:      g.proxyLog,
	}
	return rt, nil
}

// limits builds the limiters of one owner's plugins; metricOwner is the owner's limit label
// (an untracked consumer's is "consumer:other"). defaultKey applies when the limit sets no key.
func (g *Gateway) limits(c *compiled, owner, metricOwner string, p policies.Plugins, defaultKey limitKeyKind) ([]*limit, error) {
	var out []*limit
	add := func(kind string, spec ratelimit.Spec, key string, code, defaultCode int, msg string, degrade bool) error {
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("%s of %s: %w", kind, owner, err)
		}
		id := owner + "/" + kind
		c.limiterIDs[id] = true
		out = append(out, &limit{
			owner: owner, metricOwner: metricOwner, kind: kind, key: limitKey(key, defaultKey), spec: spec,
			limiter:      g.limiters.Limiter(id, spec),
			rejectedCode: orDefault(code, defaultCode), rejectedMsg: msg,
			allowDegradation: degrade,
		})
		return nil
	}
	if lc := p.LimitCount; lc != nil {
		spec := ratelimit.Spec{
			Kind:         ratelimit.KindCount,
			Count:        lc.Count,
			Window:       time.Duration(lc.TimeWindow) * time.Second,
			Sliding:      lc.WindowType == "sliding",
			Redis:        lc.Policy == "redis",
			SyncInterval: time.Duration(lc.SyncInterval),
		}
		if err := add("limit-count", spec, lc.Key, lc.RejectedCode, http.StatusTooManyRequests, lc.RejectedMsg, lc.AllowDegradation); err != nil {
			return nil, err
		}
	}
	if lr := p.LimitReq; lr != nil {
		spec := ratelimit.Spec{Kind: ratelimit.KindReq, Rate: lr.Rate, Burst: lr.Burst, Redis: lr.Policy == "redis"}
		if err := add("limit-req", spec, lr.Key, lr.RejectedCode, http.StatusServiceUnavailable, lr.RejectedMsg, lr.AllowDegradation); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func limitKey(key string, def limitKeyKind) limitKeyKind {
	switch key {
	case "consumer":
		if def == keyGroup {
			// A group's limit is shared by its members: "consumer" on a group counts the group.
			return keyGroup
		}
		return keyConsumer
	case "route":
		return keyRoute
	case "remote_addr":
		return keyRemoteAddr
	case "subject":
		return keySubject
	}
	return def
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// upstreams are the upstream routes of c, for the clients to keep what they use.
func (c *compiled) upstreams() []*upstream.Route {
	var us []*upstream.Route
	for _, rt := range c.routes {
		if rt.upstream != nil {
			us = append(us, rt.upstream)
		}
	}
	return us
}
