package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/idp"
)

// Tracing (OpenTelemetry). With a tracer provider, each request gets a server span, with child
// spans for authenticate (one per provider call, the IdP's HTTP calls inside), the rate limit
// (the Redis calls inside) and the upstream. Without one, g.tr is nil and the request path only
// tests it: nothing is allocated and no header is touched.
//
// W3C Trace Context: a traceparent (and tracestate) is continued only from a trusted proxy, as
// X-Request-Id is. Anyone else's starts a new trace, linked to the one the client named: a
// client cannot choose the gateway's trace id (to hide among, or pollute, another caller's
// trace), nor force every request it sends to be sampled through a parent-based sampler. A
// malformed traceparent is no traceparent. The upstream receives the gateway's traceparent,
// naming the upstream span, and never the untrusted client's tracestate.
//
// Attributes never carry a credential: no header value, no query string, no cookie, no reason
// text of a denial (which may quote what a client sent). What the access log says, the spans
// say.

// instrumentation is the tracer's instrumentation scope.
const instrumentation = "github.com/portcullis/portcullis/gateway"

// The attributes of Portcullis's own that the spans carry.
const (
	attrRoute      = attribute.Key("portcullis.route")
	attrConsumer   = attribute.Key("portcullis.consumer")
	attrDecision   = attribute.Key("portcullis.decision")
	attrStep       = attribute.Key("portcullis.step")
	attrRequestID  = attribute.Key("portcullis.request_id")
	attrConvention = attribute.Key("portcullis.forward_auth.convention")
	attrIdP        = attribute.Key("portcullis.idp.name")
	attrIdPType    = attribute.Key("portcullis.idp.type")
	attrIdPResult  = attribute.Key("portcullis.idp.result")
	attrLimits     = attribute.Key("portcullis.rate_limit.count")
	attrLimitRes   = attribute.Key("portcullis.rate_limit.result")
	attrLimitOwner = attribute.Key("portcullis.rate_limit.owner")
	attrLimitKind  = attribute.Key("portcullis.rate_limit.kind")
	attrUntrusted  = attribute.Key("portcullis.untrusted_parent")
)

// tracing is the gateway's instrumentation: its tracer and the W3C Trace Context propagator.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TraceContext
}

var _ idp.Observer = (*tracing)(nil)

func newTracing(tp trace.TracerProvider) *tracing {
	return &tracing{tracer: tp.Tracer(instrumentation)}
}

// startServer starts r's server span and returns r with it in its context. The client's
// traceparent is the parent only when its peer is a trusted proxy (see above). The attributes
// are set when the span ends (endServer), all at once: one copy into the span instead of two.
func (t *tracing) startServer(c *compiled, r *http.Request, x *exchange) *http.Request {
	ctx := r.Context()
	kind := trace.WithSpanKind(trace.SpanKindServer)
	var span trace.Span
	if _, ok := r.Header["Traceparent"]; !ok {
		ctx, span = t.tracer.Start(ctx, spanMethod(r.Method), kind)
	} else if carrier := propagation.HeaderCarrier(r.Header); len(c.clients.trusted) > 0 && c.clients.peerTrusted(r) {
		// A malformed traceparent leaves ctx as it was: a new trace.
		ctx, span = t.tracer.Start(t.prop.Extract(ctx, carrier), spanMethod(r.Method), kind)
	} else if sc := trace.SpanContextFromContext(t.prop.Extract(context.Background(), carrier)); sc.IsValid() {
		link := trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attrUntrusted.Bool(true)}}
		ctx, span = t.tracer.Start(ctx, spanMethod(r.Method), kind, trace.WithLinks(link))
	} else {
		ctx, span = t.tracer.Start(ctx, spanMethod(r.Method), kind)
	}
	x.span = span
	return r.WithContext(ctx)
}

// appendServer adds server.address and server.port of host (a Host header value).
func appendServer(attrs []attribute.KeyValue, host, scheme string) []attribute.KeyValue {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = host, ""
	}
	if h != "" {
		attrs = append(attrs, semconv.ServerAddressKey.String(truncate(h, 255)))
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		port = 80
		if scheme == "https" {
			port = 443
		}
	}
	return append(attrs, semconv.ServerPortKey.Int(port))
}

// endServer ends the server span with the request's attributes and what the pipeline
// decided; r is the request as logged (for forward auth, the described one).
func (t *tracing) endServer(c *compiled, r *http.Request, x *exchange, bytesOut int64) {
	sp := x.span
	if !sp.IsRecording() {
		sp.End()
		return
	}
	peer := peerIP(r)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	method := semconvMethod(r.Method)
	attrs := make([]attribute.KeyValue, 0, 22)
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLSchemeKey.String(scheme),
		semconv.URLPathKey.String(truncate(r.URL.Path, 2048)),
		semconv.NetworkProtocolVersionKey.String(protocolVersion(r)),
		semconv.ClientAddressKey.String(c.clients.ipFrom(r, peer)),
		semconv.NetworkPeerAddressKey.String(peer),
		semconv.HTTPResponseStatusCodeKey.Int(x.status),
		semconv.HTTPResponseBodySizeKey.Int64(bytesOut),
		attrRequestID.String(x.requestID),
		attrDecision.String(x.decision),
	)
	if method == "_OTHER" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginalKey.String(truncate(r.Method, 32)))
	}
	attrs = appendServer(attrs, r.Host, scheme)
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginalKey.String(truncate(ua, 256)))
	}
	if x.route != "" {
		attrs = append(attrs, attrRoute.String(x.route))
	}
	if x.rt != nil && x.match.Route != nil {
		if tpl, err := x.match.Route.GetPathTemplate(); err == nil {
			attrs = append(attrs, semconv.HTTPRouteKey.String(tpl))
			sp.SetName(spanMethod(r.Method) + " " + tpl)
		}
	}
	if x.consumer != "" {
		attrs = append(attrs, attrConsumer.String(x.consumer))
	}
	if x.step != "" {
		attrs = append(attrs, attrStep.String(string(x.step)))
	}
	if x.forwardAuth {
		attrs = append(attrs, attrConvention.String(x.conv.String()))
	}
	if x.status >= 500 {
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(x.status)))
		sp.SetStatus(codes.Error, http.StatusText(x.status))
	}
	sp.SetAttributes(attrs...)
	sp.End()
}

// recording reports whether x's request is traced: tracing is on and its server span is
// sampled. The child spans are made only then.
func (x *exchange) recording() bool { return x.span != nil && x.span.IsRecording() }

// authSpans is the context of a traced request's authenticate step: it carries the span of
// each provider the chain called, so that a provider's Extract and Verify are one span, from
// the start of the one to the end of the other, and the IdP calls of either are inside it.
type authSpans struct {
	context.Context // the authenticate span's
	tr              *tracing
	auth            trace.Span
	providers       []providerSpan
	inline          [4]providerSpan
}

type providerSpan struct {
	p     idp.Provider
	span  trace.Span
	ended bool
}

type authSpansKey struct{}

func (a *authSpans) Value(k any) any {
	if k == (authSpansKey{}) {
		return a
	}
	return a.Context.Value(k)
}

func (a *authSpans) find(p idp.Provider) *providerSpan {
	for i := range a.providers {
		if a.providers[i].p == p {
			return &a.providers[i]
		}
	}
	return nil
}

// startAuthenticate starts the authenticate span under ctx; the context it returns collects
// the providers' spans.
func (t *tracing) startAuthenticate(ctx context.Context) *authSpans {
	ctx, sp := t.tracer.Start(ctx, "authenticate")
	a := &authSpans{Context: ctx, tr: t, auth: sp}
	a.providers = a.inline[:0]
	return a
}

// end ends the authenticate span with the chain's outcome, and the span of any provider the
// chain left open (a credential present but not needed by the consumer's chain, or a chain
// that stopped at an earlier provider).
func (a *authSpans) end(x *exchange, err error) {
	for i := range a.providers {
		if ps := &a.providers[i]; !ps.ended {
			ps.span.SetAttributes(attrIdP.String(ps.p.Name()), attrIdPType.String(ps.p.Type()), attrIdPResult.String("present"))
			ps.span.End()
		}
	}
	sp := a.auth
	switch {
	case err == nil:
		sp.SetAttributes(attrConsumer.String(x.consumer), attrIdPResult.String("granted"))
	case errors.As(err, new(*idp.Denial)):
		sp.SetAttributes(attrIdPResult.String("denied"))
	default:
		sp.SetAttributes(attrIdPResult.String("unavailable"))
		sp.SetStatus(codes.Error, "an identity provider could not decide")
	}
	sp.End()
}

// ProviderStart starts (Extract) or resumes (Verify) the provider's span, when the request is
// traced.
func (t *tracing) ProviderStart(ctx context.Context, p idp.Provider, op idp.Op) context.Context {
	a, _ := ctx.Value(authSpansKey{}).(*authSpans)
	if a == nil {
		return ctx // not a traced request
	}
	if ps := a.find(p); ps != nil {
		if ps.ended {
			return ctx
		}
		return trace.ContextWithSpan(ctx, ps.span)
	}
	ctx, sp := t.tracer.Start(ctx, "idp "+p.Name())
	a.providers = append(a.providers, providerSpan{p: p, span: sp})
	return ctx
}

// ProviderEnd ends the provider's span when its part is over: nothing found, a refusal, a
// failure, or a granted Verify. A credential found stays open for its Verify. The outcome is
// named, never the denial's reason: it may quote what the client sent.
func (t *tracing) ProviderEnd(ctx context.Context, p idp.Provider, op idp.Op, present bool, err error) {
	a, _ := ctx.Value(authSpansKey{}).(*authSpans)
	if a == nil {
		return
	}
	ps := a.find(p)
	if ps == nil || ps.ended {
		return
	}
	var result string
	var d *idp.Denial
	switch {
	case err == nil && !present:
		result = "absent"
	case err == nil && op == idp.OpExtract:
		return // verified later, or left for end
	case err == nil:
		result = "granted"
	case errors.As(err, &d):
		if op == idp.OpMatch {
			return // the next claim-matched candidate may match
		}
		result = "denied"
		ps.span.SetAttributes(semconv.HTTPResponseStatusCodeKey.Int(d.Status))
	default:
		result = "unavailable"
		ps.span.SetStatus(codes.Error, "the identity provider could not decide")
	}
	ps.span.SetAttributes(attrIdP.String(p.Name()), attrIdPType.String(p.Type()), attrIdPResult.String(result))
	ps.span.End()
	ps.ended = true
}

// startLimit starts the rate-limit span.
func (t *tracing) startLimit(ctx context.Context) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, "rate_limit")
}

// endLimit ends the rate-limit span of n limits; l is the limit that refused or failed (nil:
// all passed).
func endLimit(sp trace.Span, n int, l *limit, err error) {
	switch {
	case err == nil:
		sp.SetAttributes(attrLimits.Int(n), attrLimitRes.String("allowed"))
	case asHTTPError(err).Decision == "rate_limited":
		sp.SetAttributes(attrLimits.Int(n), attrLimitRes.String("rejected"), attrLimitOwner.String(l.owner), attrLimitKind.String(l.kind))
	default:
		sp.SetAttributes(attrLimits.Int(n), attrLimitRes.String("unavailable"), attrLimitOwner.String(l.owner), attrLimitKind.String(l.kind))
		sp.SetStatus(codes.Error, "the rate-limit store could not decide")
	}
	sp.End()
}

// forwardTraced is forward inside the upstream's client span, whose context the upstream
// receives in traceparent: the client's traceparent and tracestate are replaced, whoever sent
// them. A retry on another target (only after a failed dial, which sent nothing) is part of
// the same span.
func (g *Gateway) forwardTraced(w http.ResponseWriter, r *http.Request, x *exchange) error {
	h := r.Header
	delete(h, "Traceparent")
	delete(h, "Tracestate")
	if !x.span.IsRecording() {
		// Not sampled: no span to make, but the upstream is told the trace and the decision.
		g.tr.prop.Inject(r.Context(), propagation.HeaderCarrier(h))
		return g.forward(w, r, x.rt, x)
	}
	ctx, sp := g.tr.tracer.Start(r.Context(), spanMethod(r.Method), trace.WithSpanKind(trace.SpanKindClient))
	g.tr.prop.Inject(ctx, propagation.HeaderCarrier(h))
	err := g.forward(w, r.WithContext(ctx), x.rt, x)
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(semconvMethod(r.Method)), attrRoute.String(x.route))
	if x.upstream != "" {
		attrs = appendServer(attrs, x.upstream, x.rt.schemeOf(x.upstream))
	}
	if x.upstreamStatus != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(x.upstreamStatus))
	}
	switch {
	case err != nil:
		he := asHTTPError(err)
		attrs = append(attrs, semconv.ErrorTypeKey.String(he.Decision))
		sp.SetStatus(codes.Error, he.Message)
	case x.upstreamStatus >= 400:
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(x.upstreamStatus)))
		sp.SetStatus(codes.Error, "")
	}
	sp.SetAttributes(attrs...)
	sp.End()
	return err
}

// schemeOf is the scheme of the route's target at host.
func (rt *route) schemeOf(host string) string {
	if rt.upstream != nil {
		for _, t := range rt.upstream.Balancer.Targets() {
			if t.URL.Host == host {
				return t.URL.Scheme
			}
		}
	}
	return "http"
}

// spanMethod is the method as a span name: semconv's "HTTP" for a method it does not know, so
// that a client cannot make up span names.
func spanMethod(m string) string {
	if semconvMethod(m) == "_OTHER" {
		return "HTTP"
	}
	return m
}

// semconvMethod is the value of http.request.method: the method, or "_OTHER".
func semconvMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func protocolVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 1:
		return "1.1"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "1.0"
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMajor == 3:
		return "3"
	}
	return strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor)
}

// TracedHTTPClient is the client the identity providers call their IdPs with when tracing is
// on: each call made for a traced request is a client span in it, and carries traceparent.
// Calls outside a request (discovery at start, background key refreshes) are not traced: each
// would be a trace of its own.
func TracedHTTPClient(tp trace.TracerProvider, base *http.Client) *http.Client {
	c := *base
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = otelhttp.NewTransport(next,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanFromContext(r.Context()).IsRecording() }),
		// The URL without its query (which may carry a client secret or a token) names the call.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return spanMethod(r.Method) }),
	)
	return &c
}

// redisTracing is a go-redis hook making each command (and pipeline) of a traced request a
// client span. Only the command's name is recorded, never its arguments: they hold session
// ids and sessions. Commands outside a traced request (background counter syncs) are not
// traced. redisotel would make a root span of each of those and records the arguments unless
// told not to; this hook does neither.
type redisTracing struct{ tracer trace.Tracer }

var _ redis.Hook = redisTracing{}

// TraceRedis makes c's commands spans of the requests that run them.
func TraceRedis(c redis.UniversalClient, tp trace.TracerProvider) {
	c.AddHook(redisTracing{tracer: tp.Tracer(instrumentation)})
}

func (h redisTracing) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisTracing) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !trace.SpanFromContext(ctx).IsRecording() {
			return next(ctx, cmd)
		}
		ctx, sp := h.tracer.Start(ctx, "redis "+cmd.Name(), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(semconv.DBSystemNameRedis, semconv.DBOperationNameKey.String(cmd.Name())))
		err := next(ctx, cmd)
		endRedis(sp, err)
		return err
	}
}

func (h redisTracing) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !trace.SpanFromContext(ctx).IsRecording() {
			return next(ctx, cmds)
		}
		ctx, sp := h.tracer.Start(ctx, "redis pipeline", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(semconv.DBSystemNameRedis, semconv.DBOperationBatchSizeKey.Int(len(cmds))))
		err := next(ctx, cmds)
		endRedis(sp, err)
		return err
	}
}

func endRedis(sp trace.Span, err error) {
	if err != nil && !errors.Is(err, redis.Nil) {
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}

// RedisRoundTrips is the rate-limit registry's OnRoundTrip with tracing on: each round trip of
// limit checks to Redis is a client span in every traced request whose check it carries. The
// checks of concurrent requests share a round trip (ratelimit's script pipeline), sent from a
// goroutine of the registry's: the go-redis hook sees none of their contexts.
func RedisRoundTrips(tp trace.TracerProvider) func(callers []context.Context, checks int) func(error) {
	tr := tp.Tracer(instrumentation)
	return func(callers []context.Context, checks int) func(error) {
		var spans []trace.Span
		for _, ctx := range callers {
			if trace.SpanFromContext(ctx).IsRecording() {
				_, sp := tr.Start(ctx, "redis evalsha", trace.WithSpanKind(trace.SpanKindClient),
					trace.WithAttributes(semconv.DBSystemNameRedis, semconv.DBOperationNameKey.String("EVALSHA"),
						semconv.DBOperationBatchSizeKey.Int(checks)))
				spans = append(spans, sp)
			}
		}
		if spans == nil {
			return nil
		}
		return func(err error) {
			for _, sp := range spans {
				endRedis(sp, err)
			}
		}
	}
}
