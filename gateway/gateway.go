// Package gateway is Portcullis's HTTP server: routing, the request pipeline (match, sanitize,
// authenticate, authorize, limit, proxy, log), rate limiting, metrics, the access log and the
// admin endpoints.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/policies"
)

// Options are the gateway's dependencies.
type Options struct {
	// Logger is the operational log; AccessLog receives one line per request.
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// Limiters keeps rate-limit counters across policy reloads. Required.
	Limiters *ratelimit.Registry
	// Metrics is where the gateway registers its collectors. Required.
	Metrics *Metrics
	// TracerProvider, when set, traces each request (tracing.go); nil turns tracing off, at no
	// cost to the request path.
	TracerProvider trace.TracerProvider
}

// Gateway serves requests from the current policy snapshot.
type Gateway struct {
	log      *slog.Logger
	access   *slog.Logger
	limiters *ratelimit.Registry
	metrics  *Metrics
	// tr traces requests; nil when tracing is off.
	tr *tracing
	// transport is the reverse proxy's (upgrades), bounded by each request's route timeout.
	transport http.RoundTripper
	// clients are the transports and pools of the upstreams in use (guarded by mu; compile
	// runs under it).
	clients *upstream.Clients
	buffers *bufferPool
	// proxyLog receives the reverse proxy's own complaints (a body copy cut short).
	proxyLog *log.Logger

	current atomic.Pointer[compiled]
	// shadow, when set, decides a copy of each served request with a candidate policy.
	shadow atomic.Pointer[Shadow]

	mu sync.Mutex // serialises Swap and Close
	// closed is set by Close (guarded by mu): a later Swap is refused rather than start a
	// retire that Close would not wait for.
	closed bool
	// retiring counts the retire goroutines still waiting for their snapshot's requests.
	retiring sync.WaitGroup
}

// New builds a gateway serving snap.
func New(snap *policies.Snapshot, opts Options) (*Gateway, error) {
	if opts.Limiters == nil || opts.Metrics == nil {
		return nil, errors.New("gateway needs a rate-limit registry and metrics")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AccessLog == nil {
		opts.AccessLog = slog.New(slog.DiscardHandler)
	}
	clients := upstream.NewClients(opts.Metrics.poolCounters, opts.Metrics.forgetUpstream)
	g := &Gateway{
		log:       opts.Logger,
		access:    opts.AccessLog,
		limiters:  opts.Limiters,
		metrics:   opts.Metrics,
		transport: upstream.TimeoutTransport{Next: clients.Base()},
		clients:   clients,
		buffers:   newBufferPool(),
		proxyLog:  slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	if opts.TracerProvider != nil {
		g.tr = newTracing(opts.TracerProvider)
	}
	c, err := g.compile(snap)
	if err != nil {
		return nil, err
	}
	g.current.Store(c)
	g.metrics.policyInfo(snap)
	return g, nil
}

// Swap replaces the served snapshot with snap after compiling it. Requests in flight finish
// on the snapshot they started with; its providers are closed once they are done. On error the
// old snapshot keeps serving.
func (g *Gateway) Swap(snap *policies.Snapshot) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errGatewayClosed
	}
	c, err := g.compile(snap)
	if err != nil {
		return err
	}
	old := g.current.Swap(c)
	g.limiters.Retain(c.limiterIDs)
	g.clients.Retain(c.upstreams())
	g.metrics.policyInfo(snap)
	if old != nil && old.snap != snap {
		forget := old.ownSeries(c)
		g.retiring.Go(func() { g.retire(old, forget) })
	}
	return nil
}

// retire waits for the requests still running on c, then deletes the series of the consumers
// in forget (after those requests, so that none of them brings a series back) and closes c's
// providers.
func (g *Gateway) retire(c *compiled, forget []string) {
	c.inflight.Lock()
	c.closed = true
	c.inflight.Unlock()
	if len(forget) > 0 {
		// A reload since may have brought a consumer back: its series stay.
		cur := g.current.Load()
		forget = slices.DeleteFunc(forget, cur.keepsSeries)
		g.metrics.forgetConsumers(forget)
	}
	if err := c.snap.Close(); err != nil {
		g.log.Warn("closing retired policy", "version", c.snap.Version, "err", err)
	}
}

// Snapshot returns the policy being served.
func (g *Gateway) Snapshot() *policies.Snapshot { return g.current.Load().snap }

// acquire returns the current snapshot, held until release.
func (g *Gateway) acquire() *compiled {
	for {
		c := g.current.Load()
		c.inflight.RLock()
		if !c.closed || g.current.Load() == c {
			// Closed but still current only after Close, when nothing should be serving: answer
			// from it rather than spin.
			return c
		}
		// Lost a race with a reload: the snapshot was retired between Load and RLock.
		c.inflight.RUnlock()
	}
}

// errGatewayClosed is a Swap after Close.
var errGatewayClosed = errors.New("the gateway is closed")

// Close retires the current snapshot, waits for the snapshots retired by earlier swaps to be
// closed, and closes the idle upstream connections. Each wait is for the requests still running
// on a snapshot. Closing again does nothing.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	c := g.current.Load()
	c.inflight.Lock()
	c.closed = true
	c.inflight.Unlock()
	g.retiring.Wait()
	g.mu.Lock()
	_ = g.clients.Close()
	g.mu.Unlock()
	return c.snap.Close()
}

// exchange is the state of one request through the pipeline, for the access log. It is also
// the request's scratch memory: the outgoing request, its URL and the header values the gateway
// sets live in it, so that a request costs one allocation for all of them rather than one each.
type exchange struct {
	route    string
	consumer string
	decision string
	status   int
	err      error
	// rate is the decision reported in the X-RateLimit-* headers, valid when hasRate.
	rate    ratelimit.Decision
	hasRate bool

	// What the steps found (decide): the route, the chain's result and the consumer's group,
	// and the step that decided.
	rt    *route
	res   *idp.Result
	group string
	step  Step

	match mux.RouteMatch
	out   http.Request
	url   url.URL
	// rc, body and send are the waits on the client while proxying (clientio.go); websocket
	// says the request switches to WebSocket.
	rc        http.ResponseController
	body      clientBody
	send      timedWriter
	websocket bool
	// forwardAuth says the request asks the forward-auth endpoint, by convention conv;
	// bodyHeader repeats a refusal's body in X-Portcullis-Body (nginx's auth_request passes on
	// no body).
	forwardAuth bool
	conv        convention
	bodyHeader  bool
	// signIn is the sign-in endpoint the request asks (0: none); resp collects what providers
	// set on the response (a re-issued session cookie) when the policy has sessions.
	signIn signInKind
	resp   *oidc.Response
	// requestID is the request's X-Request-Id (requestid.go).
	requestID string
	// upstream is the target's host:port, upstreamStatus its answer's status and upstreamTime
	// the wait for its response headers; zero when the request was not forwarded.
	upstream       string
	upstreamStatus int
	upstreamTime   time.Duration
	// attempt is the request as upstream.Route.Send sees it (forward.go).
	attempt attempt
	// span is the request's server span; nil when tracing is off.
	span trace.Span
	// cw counts the response body bytes written to the client (the access log's bytes_out).
	cw countingWriter
	// vals backs the header values handed out by val; nvals of them are in use.
	vals  [14]string
	nvals int
}

// val returns a one-value header slice backed by x. Its capacity is 1, so a later Header.Add
// copies instead of overwriting the neighbouring value.
func (x *exchange) val(v string) []string {
	if x.nvals == len(x.vals) {
		return []string{v}
	}
	i := x.nvals
	x.nvals++
	x.vals[i] = v
	return x.vals[i : i+1 : i+1]
}

// ServeHTTP runs the pipeline.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.handle(w, r, &exchange{decision: "forwarded"})
}

// handle is ServeHTTP with the request's exchange given, for the tests that read what the
// pipeline decided.
func (g *Gateway) handle(w http.ResponseWriter, r *http.Request, x *exchange) {
	start := time.Now()
	g.metrics.inFlight.Inc()
	defer g.metrics.inFlight.Dec()
	c := g.acquire()
	defer c.inflight.RUnlock()
	x.requestID = c.requestID(r)
	x.cw.ResponseWriter = w
	w = &x.cw
	w.Header()[requestIDHeader] = x.val(x.requestID)
	if g.tr != nil {
		r = g.tr.startServer(c, r, x) // ended by record
	}
	if c.signIn != nil {
		if ep, ok := c.signIn[r.URL.Path]; ok {
			g.serveSignIn(c, w, r, x, ep, start)
			return
		}
		var ctx context.Context
		ctx, x.resp = oidc.WithResponse(r.Context())
		r = r.WithContext(ctx)
	}
	if c.fwd != nil {
		if conv, ok := c.fwd.endpoint(r); ok {
			g.serveForwardAuth(c, w, r, x, conv, start)
			return
		}
	}

	var sh *Shadow
	var shadowCopy *http.Request
	if sh = g.shadow.Load(); sh != nil {
		shadowCopy = sh.copyRequest(r) // before serve rewrites r
	}
	err := g.serve(c, w, r, x)
	if errors.Is(err, errAbort) {
		g.record(r, c, x, time.Since(start))
		if shadowCopy != nil {
			sh.submit(shadowCopy, c.snap, x)
		}
		// The status line is out: only a cut connection tells the client the body is incomplete.
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		g.writeError(w, r, err, x)
	}
	g.record(r, c, x, time.Since(start))
	if shadowCopy != nil {
		sh.submit(shadowCopy, c.snap, x)
	}
}

// writeError is the one place that turns a pipeline error into a response.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error, x *exchange) {
	he := asHTTPError(err)
	x.status, x.decision, x.err = he.Status, he.Decision, err
	if he.Err != nil {
		// The log's reason is the cause; the client's message is already in status and decision.
		x.err = he.Err
	}
	if x.hasRate {
		setRateHeaders(w.Header(), &x.rate, x)
	}
	x.resp.WriteTo(w.Header())
	for k, vs := range he.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if he.Status == 499 {
		return // nobody is listening
	}
	field := he.Field
	if field == "" {
		field = "message"
	}
	if x.bodyHeader {
		w.Header().Set(bodyHeader, asciiJSON(jsonField(field, he.Message)))
	}
	writeJSONField(w, he.Status, field, he.Message)
}

// serve runs match → sanitize → authenticate → authorize → limit (decide, limits consumed),
// then proxies.
func (g *Gateway) serve(c *compiled, w http.ResponseWriter, r *http.Request, x *exchange) error {
	if err := g.decide(c, r, x, Mode{Consume: true}); err != nil {
		return err
	}
	c.snap.Chain.HideCredentials(r)
	upstreamHeaders(r, x.res, x.group, x.websocket, x)
	if x.hasRate {
		setRateHeaders(w.Header(), &x.rate, x)
	}
	x.resp.WriteTo(w.Header())
	if x.span != nil {
		return g.forwardTraced(w, r, x)
	}
	return g.forward(w, r, x.rt, x)
}

// APISIX consumer-restriction's answers: by the list type that refused the request.
const (
	msgConsumerForbidden = "The consumer_name is forbidden."
	msgGroupForbidden    = "The consumer_group_id is forbidden."
)

func errForbidden(msg, reason string) error {
	return &HTTPError{Status: http.StatusForbidden, Message: msg, Decision: "forbidden", Err: errors.New(reason)}
}

// authorize applies the route's allow and deny lists of consumers and groups.
func (rt *route) authorize(consumer, group string) error {
	if rt.denyConsumers[consumer] {
		return errForbidden(msgConsumerForbidden, "consumer "+consumer+" is denied on route "+rt.name)
	}
	if group != "" && rt.denyGroups[group] {
		return errForbidden(msgGroupForbidden, "group "+group+" is denied on route "+rt.name)
	}
	if rt.allowConsumers == nil && rt.allowGroups == nil {
		return nil
	}
	if rt.allowConsumers[consumer] || (group != "" && rt.allowGroups[group]) {
		return nil
	}
	msg := msgConsumerForbidden
	if rt.allowConsumers == nil {
		msg = msgGroupForbidden // only a group list could have admitted it
	}
	return errForbidden(msg, "consumer "+consumer+" is not allowed on route "+rt.name)
}

// limit applies the consumer's, its group's and the route's limits, in that order; all must
// pass. Without m.Consume nothing is spent: the limits that apply are only traced.
func (g *Gateway) limit(r *http.Request, c *compiled, x *exchange, m Mode) (err error) {
	rt, e := x.rt, m.Trace
	all := [3][]*limit{c.consumerLimits[x.consumer], c.groupLimits[x.group], rt.limits}
	ctx := r.Context()
	var at *limit // the limit that refused the request or failed, for the span
	if m.Consume && x.recording() {
		if n := len(all[0]) + len(all[1]) + len(all[2]); n > 0 {
			var sp trace.Span
			ctx, sp = g.tr.startLimit(ctx)
			defer func() { endLimit(sp, n, at, err) }()
		}
	}
	n := 0
	for _, ls := range all {
		for _, l := range ls {
			n++
			if !m.Consume {
				if e != nil {
					e.limitApplies(l, l.keyFor(r, c, x, rt.name), x.group)
				}
				continue
			}
			key := l.keyFor(r, c, x, rt.name)
			d, err := l.limiter.Allow(ctx, key)
			if err != nil {
				at = l
				if l.allowDegradation {
					g.metrics.rateDegraded(l)
					g.log.Warn("rate limit bypassed: store unavailable", "request_id", x.requestID, "limit", l.owner, "kind", l.kind, "err", err)
					if e != nil {
						e.limitBypassed(l, err)
					}
					continue
				}
				if e != nil {
					e.limitFailed(l, err)
				}
				return fmt.Errorf("applying %s of %s: %w", l.kind, l.owner, err)
			}
			if !x.hasRate || d.Remaining < x.rate.Remaining || !d.Allowed {
				x.rate, x.hasRate = d, true
			}
			if e != nil {
				e.limitConsumed(l, key, x.group, &d)
			}
			if !d.Allowed {
				at = l
				g.metrics.rateRejected(rt.name, l)
				msg, field := l.rejectedMsg, "error_msg"
				if msg == "" {
					msg, field = http.StatusText(l.rejectedCode), ""
				}
				secs := int((d.Reset + time.Second - 1) / time.Second)
				if secs < 1 {
					secs = 1
				}
				return &HTTPError{Status: l.rejectedCode, Message: msg, Field: field, Decision: "rate_limited",
					Header: http.Header{"Retry-After": {strconv.Itoa(secs)}},
					Err:    fmt.Errorf("%s of %s exceeded", l.kind, l.owner)}
			}
		}
	}
	if n == 0 && e != nil {
		e.add("limit", true, "no limit applies")
	}
	return nil
}

func (l *limit) keyFor(r *http.Request, c *compiled, x *exchange, routeName string) string {
	consumer := x.consumer
	switch l.key {
	case keyConsumer:
		return consumer
	case keySubject:
		if x.res != nil {
			if s := x.res.Subject(); s != "" {
				// Per consumer too: two providers' subjects never share a counter.
				return consumer + "\x00" + s
			}
		}
		return consumer
	case keyRoute:
		return routeName
	case keyRemoteAddr:
		return c.clients.ip(r)
	}
	return ""
}

func setRateHeaders(h http.Header, d *ratelimit.Decision, x *exchange) {
	reset := int((d.Reset + time.Second - 1) / time.Second)
	// The three numbers share one string: one allocation instead of one per number.
	var buf [3 * 20]byte
	b := strconv.AppendInt(buf[:0], int64(d.Limit), 10)
	i := len(b)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	j := len(b)
	b = strconv.AppendInt(b, int64(reset), 10)
	s := string(b)
	h["X-Ratelimit-Limit"] = x.val(s[:i])
	h["X-Ratelimit-Remaining"] = x.val(s[i:j])
	h["X-Ratelimit-Reset"] = x.val(s[j:])
}

type proxyStateKey struct{}

// proxyState carries what the proxy's callbacks need back to the pipeline.
type proxyState struct {
	rt     *route
	target *upstream.Target
	err    error
}

// rewrite builds the outgoing request: target, prefix stripping, X-Forwarded-*.
func (rt *route) rewrite(pr *httputil.ProxyRequest) {
	ps, _ := pr.In.Context().Value(proxyStateKey{}).(*proxyState)
	var t *upstream.Target
	if ts := rt.upstream.Balancer.Targets(); len(ts) == 1 {
		t = ts[0]
	}
	if ps != nil {
		t = ps.target
	}
	rt.upstreamURL(t, pr.In.URL, pr.Out.URL)
	// The gateway's headers, set on the inbound request by upstreamHeaders, are set again here,
	// after the proxy's own hop-by-hop removal and its deletion of X-Forwarded-*: nothing the
	// client names in Connection removes them, and the X-Forwarded-For chain is the same as on
	// the other path.
	for _, k := range gatewaySetHeaders {
		if vs, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = vs
		}
	}
	// A protocol switch carries no trailers: the client's are not forwarded.
	pr.Out.Trailer = nil
	pr.Out.Host = pr.In.Host // upstreams see the host the client asked for, like nginx's proxy_set_header Host $host
}

// proxyError records the round-trip error for serve, which turns it into a response.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if ps, ok := r.Context().Value(proxyStateKey{}).(*proxyState); ok {
		ps.err = err
		return
	}
	g.log.Error("proxy error outside the pipeline", "err", err)
	w.WriteHeader(http.StatusBadGateway)
}

// statusWriter remembers the status the upstream answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	if h := s.Header(); h["Content-Type"] == nil {
		// A nil value keeps net/http from sniffing one: a proxy adds no Content-Type.
		h["Content-Type"] = nil
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (flushing, deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// truncate bounds a client-written value in a log line.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// record writes the access-log line and the request metrics. Never a credential: the path is
// logged without its query string, which may carry an API key.
func (g *Gateway) record(r *http.Request, c *compiled, x *exchange, d time.Duration) {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	msg := "request"
	if x.signIn != 0 {
		msg = "signin"
	}
	if x.forwardAuth {
		msg = "forward_auth"
		g.metrics.forwardAuthDecision(x.route, c.consumerLabel(x.consumer), x.status)
	} else {
		g.metrics.request(x.route, c.consumerLabel(x.consumer), x.status)
	}
	g.metrics.observeDuration(x.route, x.status, d)
	if x.span != nil {
		g.tr.endServer(c, r, x, x.cw.n)
	}
	if !g.access.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	peer := peerIP(r)
	client := c.clients.ipFrom(r, peer)
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", x.route),
		slog.String("consumer", x.consumer),
		slog.Int("status", x.status),
		slog.String("decision", x.decision),
		slog.Float64("latency_ms", float64(d.Microseconds())/1000),
		slog.String("remote", client),
		slog.String("request_id", x.requestID),
		slog.String("host", r.Host),
		slog.String("proto", r.Proto),
		slog.String("user_agent", truncate(r.UserAgent(), 256)),
	}
	if r.ContentLength > 0 {
		attrs = append(attrs, slog.Int64("bytes_in", r.ContentLength))
	}
	attrs = append(attrs, slog.Int64("bytes_out", x.cw.n))
	if x.span != nil {
		if sc := x.span.SpanContext(); sc.IsValid() {
			attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
		}
	}
	if x.upstream != "" {
		attrs = append(attrs, slog.String("upstream", x.upstream))
		if x.upstreamStatus != 0 {
			attrs = append(attrs, slog.Int("upstream_status", x.upstreamStatus))
		}
		attrs = append(attrs, slog.Float64("upstream_latency_ms", float64(x.upstreamTime.Microseconds())/1000))
	}
	if peer != client {
		attrs = append(attrs, slog.String("peer", peer)) // the trusted proxy it came through
	}
	if x.err != nil {
		attrs = append(attrs, slog.String("reason", x.err.Error()))
	}
	if x.forwardAuth {
		// r is the described request: its method, path and host are the original ones.
		attrs = append(attrs, slog.String("convention", x.conv.String()))
	}
	g.access.LogAttrs(r.Context(), slog.LevelInfo, msg, attrs...)
}
