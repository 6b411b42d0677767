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

// Explain evaluates r against the served policy as ServeHTTP would, and says why. It runs the
// serving pipeline's steps (decide) with a trace and without side effects: no rate-limit
// capacity is consumed and nothing is proxied.
func (g *Gateway) Explain(r *http.Request) *Explanation {
	c := g.acquire()
	defer c.inflight.RUnlock()
	e := &Explanation{}
	x := &exchange{}
	if err := g.decide(c, r, x, Mode{Trace: e}); err != nil {
		return e.deny(err)
	}
	e.proxy(x.rt)
	e.Forwarded = true
	return e
}

// matched traces the match step; raw is the path as the client sent it.
func (e *Explanation) matched(r *http.Request, raw string, rt *route, err error) {
	switch {
	case err == nil:
		if p := r.URL.EscapedPath(); p != raw {
			e.add("match", true, "route %q, on the normalised path %s", rt.name, p)
		} else {
			e.add("match", true, "route %q", rt.name)
		}
	case rt != nil:
		e.add("match", false, "route %q refuses the path %q: %v", rt.name, raw, errors.Unwrap(err))
	case errors.Is(err, errNoRoute):
		e.add("match", false, "no route matches %s %s (host %q)", r.Method, r.URL.EscapedPath(), r.Host)
	default:
		e.add("match", false, "the path %q cannot be normalised: %v", raw, errors.Unwrap(err))
	}
}

// droppedHeaders names the headers of h that sanitizing drops, sorted.
func droppedHeaders(h http.Header) []string {
	var dropped []string
	for k := range h {
		if droppedFromClient(k) {
			dropped = append(dropped, k)
		}
	}
	slices.Sort(dropped)
	return dropped
}

// sanitized traces the sanitize step; dropped are the client's headers it dropped.
func (e *Explanation) sanitized(dropped []string, err error) {
	if err != nil {
		e.add("sanitize", false, "%s", asHTTPError(err).Message)
		return
	}
	if len(dropped) > 0 {
		e.add("sanitize", true, "dropped client-sent identity headers %s", strings.Join(dropped, ", "))
	}
}

// authenticated traces the authenticate step: the chain's own steps, then the verdict.
func (e *Explanation) authenticated(trace *idp.Trace, x *exchange, err error) {
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
		return
	}
	who := fmt.Sprintf("consumer %q", x.consumer)
	if x.group != "" {
		who += fmt.Sprintf(" (group %q)", x.group)
	}
	e.add("authenticate", true, "%s, credential identifier %q", who, x.res.Identifier)
}

// authorized traces the authorize step.
func (e *Explanation) authorized(rt *route, err error) {
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) && he.Err != nil {
			e.add("authorize", false, "%v", he.Err)
		}
		return
	}
	e.add("authorize", true, "allowed on route %q", rt.name)
}

// counted is what a limit's counter is keyed by, for the reader: a group's counter is keyed by
// its limiter alone, and the reader wants the group.
func (l *limit) counted(key, group string) string {
	switch l.key {
	case keyGroup:
		return group
	case keySubject:
		// consumer NUL subject: the reader wants the subject.
		if _, sub, ok := strings.Cut(key, "\x00"); ok {
			return sub
		}
	}
	return key
}

// limitApplies traces a limit that applies but is not consumed.
func (e *Explanation) limitApplies(l *limit, key, group string) {
	e.add("limit", true, "%s %s of %s applies, counted by %s %q (rejects with %d; not consumed by explain)",
		l.kind, l.describe(), l.owner, l.keyName(), l.counted(key, group), l.rejectedCode)
}

// limitConsumed traces a limit that was consumed, with its verdict.
func (e *Explanation) limitConsumed(l *limit, key, group string, d *ratelimit.Decision) {
	if !d.Allowed {
		e.add("limit", false, "%s %s of %s exceeded, counted by %s %q (rejects with %d)",
			l.kind, l.describe(), l.owner, l.keyName(), l.counted(key, group), l.rejectedCode)
		return
	}
	e.add("limit", true, "%s %s of %s passed, counted by %s %q, %d left",
		l.kind, l.describe(), l.owner, l.keyName(), l.counted(key, group), d.Remaining)
}

// limitBypassed traces a limit whose store is unreachable and that allows degradation.
func (e *Explanation) limitBypassed(l *limit, err error) {
	e.add("limit", true, "%s %s of %s bypassed: the store is unavailable (%v)", l.kind, l.describe(), l.owner, err)
}

// limitFailed traces a limit whose store is unreachable: the request fails closed.
func (e *Explanation) limitFailed(l *limit, err error) {
	e.add("limit", false, "%s %s of %s cannot be applied: %v", l.kind, l.describe(), l.owner, err)
}

// proxy traces where an allowed request would be forwarded.
func (e *Explanation) proxy(rt *route) {
	ts := rt.upstream.Balancer.Targets()
	t := ts[0]
	if len(ts) > 1 {
		e.add("proxy", true, "forward to one of %d targets, e.g. %s (timeout %s)", len(ts), t.URL, timeoutText(rt.timeout))
	} else {
		e.add("proxy", true, "forward to %s (timeout %s)", t.URL, timeoutText(rt.timeout))
	}
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
	case keySubject:
		return "subject"
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
