package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/idp"
)

// Explanation is the trace of one request through the pipeline, without proxying it and without
// consuming any rate-limit capacity.
type Explanation struct {
	Steps []ExplainStep
	// Status and Message are the answer the gateway would give; Status 0 means forwarded.
	Status  int
	Message string
	// Forwarded is true when the request would reach an upstream.
	Forwarded bool
}

// ExplainStep is one line of an explanation.
type ExplainStep struct {
	Phase  string // match, sanitize, credential, binding, chain, authorize, limit, proxy
	OK     bool
	Detail string
}

func (e *Explanation) add(phase string, ok bool, format string, args ...any) {
	e.Steps = append(e.Steps, ExplainStep{Phase: phase, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// deny records the final answer of a refused request.
func (e *Explanation) deny(err error) *Explanation {
	he := asHTTPError(err)
	e.Status, e.Message = he.Status, he.Message
	return e
}

// Explain evaluates r against the served policy as ServeHTTP would, and says why.
func (g *Gateway) Explain(r *http.Request) *Explanation {
	c := g.acquire()
	defer c.inflight.RUnlock()
	e := &Explanation{}

	raw := requestPath(r)
	rt, err := c.match(r, &exchange{})
	if err != nil {
		switch {
		case rt != nil:
			e.add("match", false, "route %q refuses the path %q: %v", rt.name, raw, errors.Unwrap(err))
		case errors.Is(err, errNoRoute):
			e.add("match", false, "no route matches %s %s (host %q)", r.Method, r.URL.EscapedPath(), r.Host)
		default:
			e.add("match", false, "the path %q cannot be normalised: %v", raw, errors.Unwrap(err))
		}
		return e.deny(err)
	}
	if p := r.URL.EscapedPath(); p != raw {
		e.add("match", true, "route %q, on the normalised path %s", rt.name, p)
	} else {
		e.add("match", true, "route %q", rt.name)
	}

	var dropped []string
	for k := range r.Header {
		if droppedFromClient(k) {
			dropped = append(dropped, k)
		}
	}
	slices.Sort(dropped)
	if _, err := sanitizeRequest(r); err != nil {
		e.add("sanitize", false, "%s", asHTTPError(err).Message)
		return e.deny(err)
	}
	if len(dropped) > 0 {
		e.add("sanitize", true, "dropped client-sent identity headers %s", strings.Join(dropped, ", "))
	}

	var trace idp.Trace
	res, err := c.snap.Chain.Evaluate(r.Context(), r, rt.anonymous, &trace)
	for _, s := range trace.Steps {
		detail := s.Detail
		if s.Provider != "" {
			detail = s.Provider + ": " + detail
		}
		e.add(s.What, s.OK, "%s", detail)
	}
	if err != nil {
		var d *idp.Denial
		if !errors.As(err, &d) {
			e.add("authenticate", false, "a provider cannot decide: %v", err)
		}
		return e.deny(rt.routeDenial(err))
	}
	group := c.consumerGroups[res.Consumer]
	who := fmt.Sprintf("consumer %q", res.Consumer)
	if group != "" {
		who += fmt.Sprintf(" (group %q)", group)
	}
	e.add("authenticate", true, "%s, credential identifier %q", who, res.Identifier)

	if err := rt.authorize(res.Consumer, group); err != nil {
		var he *HTTPError
		if errors.As(err, &he) && he.Err != nil {
			e.add("authorize", false, "%v", he.Err)
		}
		return e.deny(err)
	}
	e.add("authorize", true, "allowed on route %q", rt.name)

	n := 0
	for _, ls := range [3][]*limit{c.consumerLimits[res.Consumer], c.groupLimits[group], rt.limits} {
		for _, l := range ls {
			n++
			counted := l.keyFor(r, c, res.Consumer, rt.name)
			if l.key == keyGroup {
				// A group's counter is keyed by its limiter alone; the reader wants the group.
				counted = group
			}
			e.add("limit", true, "%s %s of %s applies, counted by %s %q (rejects with %d; not consumed by explain)",
				l.kind, l.describe(), l.owner, l.keyName(), counted, l.rejectedCode)
		}
	}
	if n == 0 {
		e.add("limit", true, "no limit applies")
	}
	t := rt.balancer.targets[0]
	if len(rt.balancer.targets) > 1 {
		e.add("proxy", true, "forward to one of %d targets, e.g. %s (timeout %s)", len(rt.balancer.targets), t.url, timeoutText(rt.timeout))
	} else {
		e.add("proxy", true, "forward to %s (timeout %s)", t.url, timeoutText(rt.timeout))
	}
	e.Forwarded = true
	return e
}

func timeoutText(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String()
}

func (l *limit) keyName() string {
	switch l.key {
	case keyConsumer:
		return "consumer"
	case keyRoute:
		return "route"
	case keyRemoteAddr:
		return "remote address"
	}
	return "group"
}

// describe says what the limit allows: "2 per 5s", "10/s, burst 5".
func (l *limit) describe() string {
	if l.spec.Kind == ratelimit.KindReq {
		return fmt.Sprintf("%g/s, burst %g", l.spec.Rate, l.spec.Burst)
	}
	return fmt.Sprintf("%d per %s", l.spec.Count, l.spec.Window)
}
