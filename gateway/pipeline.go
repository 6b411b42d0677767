package gateway

import (
	"net/http"

	"github.com/portcullis/portcullis/idp"
)

// Step names a step of the request pipeline.
type Step string

// The steps, in the order the pipeline runs them.
const (
	StepMatch        Step = "match"
	StepSanitize     Step = "sanitize"
	StepAuthenticate Step = "authenticate"
	StepAuthorize    Step = "authorize"
	StepLimit        Step = "limit"
	StepProxy        Step = "proxy"
)

// Mode says what deciding a request may do besides deciding.
type Mode struct {
	// Consume spends the request's rate-limit capacity and counts its authentication decision
	// in the metrics, as serving does (and forward auth will). Without it deciding has no side
	// effect: the limits that apply are described, not applied, so a request is never refused
	// by a limit (explain, policy tests, shadow policies).
	Consume bool
	// Trace, when not nil, records each step as it is taken. A nil Trace costs nothing.
	Trace *Explanation
	// ForwardAuth decides for the proxy in front, which forwards: a route without an upstream
	// (decided only by forward auth) matches. Without it such a route is no route (404).
	ForwardAuth bool
}

// Decision is the pipeline's verdict on a request, short of proxying it.
type Decision struct {
	// Route is the matched route's name; "" when none matched.
	Route string
	// Consumer and Group are who the request was authenticated as; "" before authenticate
	// decided, or when the consumer is in no group.
	Consumer, Group string
	// CredentialID is the X-Credential-Identifier: the first binding of the chain that admitted
	// the consumer.
	CredentialID string
	// Step is the step that decided: the one that refused the request or failed, or StepProxy
	// when the request is allowed.
	Step Step
	// Err is nil when the request is allowed. Otherwise it is the refusal (a denial) or the
	// failure (an identity provider or the rate-limit store unreachable: fail closed); Refusal
	// says what the client is answered.
	Err error
	// Header holds the X-RateLimit-* headers of the tightest limit consumed (allowed or not),
	// and when the request is allowed the identity headers the upstream receives
	// (X-Consumer-Username, X-Consumer-Groups, X-Credential-Identifier, X-Userinfo). The
	// refusal's own headers (WWW-Authenticate, Retry-After) are Refusal's.
	Header http.Header
}

// Allowed reports whether the request may go on to an upstream.
func (d *Decision) Allowed() bool { return d.Err == nil }

// Refusal is the answer a refused request gets: status, message, body field and headers, as
// serving writes them. nil when the request is allowed.
func (d *Decision) Refusal() *HTTPError {
	if d.Err == nil {
		return nil
	}
	return asHTTPError(d.Err)
}

// Decide runs the steps of the pipeline that decide r (match, sanitize, authenticate,
// authorize, limit) against the served policy, as serving does, without proxying it. Like
// serving, it rewrites r: the path is normalised and the client's copies of the gateway's
// identity headers are dropped; a caller that goes on to serve r itself gives Decide a clone.
func (g *Gateway) Decide(r *http.Request, m Mode) *Decision {
	c := g.acquire()
	defer c.inflight.RUnlock()
	x := &exchange{}
	err := g.decide(c, r, x, m)
	d := &Decision{Route: x.route, Consumer: x.consumer, Group: x.group, Step: x.step, Err: err, Header: http.Header{}}
	if x.res != nil {
		d.CredentialID = x.res.Identifier
	}
	if x.hasRate {
		setRateHeaders(d.Header, &x.rate, x)
	}
	if err == nil {
		setIdentity(d.Header, x.res, x.group, x)
	}
	return d
}

// decide runs match → sanitize → authenticate → authorize → limit: serving, Decide and Explain
// all run these step functions, so what the gateway does and what explain says cannot differ.
// The findings are left in x (route, consumer, group, the chain's result, the rate-limit
// decision, the protocol switch); x.step is the step that returned the error, or StepProxy
// when the request may be proxied.
func (g *Gateway) decide(c *compiled, r *http.Request, x *exchange, m Mode) error {
	x.step = StepMatch
	if err := matchStep(c, r, x, m); err != nil {
		return err
	}
	x.step = StepSanitize
	if err := sanitizeStep(r, x, m.Trace); err != nil {
		return err
	}
	x.step = StepAuthenticate
	if err := g.authenticate(c, r, x, m); err != nil {
		return err
	}
	x.step = StepAuthorize
	if err := g.authorizeStep(x, m); err != nil {
		return err
	}
	x.step = StepLimit
	if err := g.limit(r, c, x, m); err != nil {
		return err
	}
	x.step = StepProxy
	return nil
}

// matchStep finds the route, on the normalised path and host.
func matchStep(c *compiled, r *http.Request, x *exchange, m Mode) error {
	e := m.Trace
	var raw string
	if e != nil {
		raw = requestPath(r) // before match rewrites r's path
	}
	rt, err := c.match(r, x)
	if err == nil && rt.upstream == nil && !m.ForwardAuth {
		err = errForwardAuthOnly
	}
	if rt != nil {
		x.route = rt.name
	}
	if e != nil {
		e.matched(r, raw, rt, err)
	}
	if err != nil {
		return err
	}
	x.rt = rt
	return nil
}

// sanitizeStep drops the client's copies of the gateway's headers and classifies the
// protocol switch asked for.
func sanitizeStep(r *http.Request, x *exchange, e *Explanation) error {
	var dropped []string
	if e != nil {
		dropped = droppedHeaders(r.Header) // before sanitizing drops them
	}
	websocket, err := sanitizeRequest(r)
	if e != nil {
		e.sanitized(dropped, err)
	}
	if err != nil {
		return err
	}
	x.websocket = websocket
	return nil
}

// authenticate runs the provider chain; the route's own answer replaces the chain's
// no-credential one.
func (g *Gateway) authenticate(c *compiled, r *http.Request, x *exchange, m Mode) error {
	var trace *idp.Trace
	if m.Trace != nil {
		trace = new(idp.Trace)
	}
	ctx := r.Context()
	var spans *authSpans
	if x.recording() {
		spans = g.tr.startAuthenticate(ctx)
		ctx = spans
	}
	res, err := c.snap.Chain.Evaluate(ctx, r, x.rt.anonymous, trace)
	if err == nil {
		x.res, x.consumer, x.group = res, res.Consumer, c.consumerGroups[res.Consumer]
	}
	if spans != nil {
		spans.end(x, err)
	}
	if m.Trace != nil {
		m.Trace.authenticated(trace, x, err)
	}
	if err != nil {
		err = x.rt.routeDenial(err)
		if m.Consume {
			g.metrics.authDecision(err)
			err = g.loginRedirect(c, r, x.rt, err)
		}
		return err
	}
	return nil
}

// authorizeStep applies the route's allow and deny lists: a refusal there is a "forbidden"
// decision, not a granted one.
func (g *Gateway) authorizeStep(x *exchange, m Mode) error {
	err := x.rt.authorize(x.consumer, x.group)
	if m.Consume {
		g.metrics.authDecision(err)
	}
	if m.Trace != nil {
		m.Trace.authorized(x.rt, err)
	}
	return err
}
