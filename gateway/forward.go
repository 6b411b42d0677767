package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/gateway/upstream"
)

// errAbort asks ServeHTTP to abort the response: the upstream failed after its status line was
// already sent, so the client must see a cut connection, not a clean but truncated answer.
var errAbort = errors.New("upstream response cut short")

// forward sends r to one of the route's targets and copies the answer back. It is the request
// path's proxy: a shallow copy of the request rather than httputil.ReverseProxy's deep clone,
// headers forwarded in place, the target's own HTTP/1.1 pool (upstream.Pool) for plain http, a pooled
// copy buffer, and no flush after every write. Upgrade requests go through
// httputil.ReverseProxy, which implements the protocol switch; https targets and requests the pool
// does not send (upstream.Eligible) through http.Transport.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, rt *route, x *exchange) error {
	if x.websocket {
		return g.forwardUpgrade(w, r, rt, x)
	}
	// The route timeout bounds the dial and the wait for the response headers, and leaves a
	// slow but healthy body to the client.
	out := &x.out
	*out = *r // shallow: the header map is forwarded in place
	out.RequestURI = ""
	out.Close = false
	x.rc = *http.NewResponseController(w)
	if r.ContentLength == 0 {
		out.Body = nil // lets the transport reuse the connection without waiting on a body
	}
	// The header was made the upstream's by upstreamHeaders; the trailers arrive with the
	// body, and are sanitised as they do.
	out.Trailer = upstreamTrailer(r.Trailer)
	if out.Body != nil {
		x.body.body, x.body.in, x.body.out = out.Body, r.Trailer, out.Trailer
		x.body.rc, x.body.timeout = &x.rc, rt.clientBodyTimeout
		out.Body = &x.body
	}
	h := out.Header
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = x.val("") // no Go-http-client default in the upstream's logs
	}

	start := time.Now()
	x.attempt = attempt{g: g, x: x, rt: rt, in: r.URL}
	resp, err := rt.upstream.Send(out, &x.attempt)
	if err != nil {
		var cbe *clientBodyError
		if !errors.As(err, &cbe) {
			if be := x.body.err.Load(); be != nil {
				// The round trip's error may not carry the body's: the body's failure is the cause.
				err, cbe = fmt.Errorf("%w: %w", be, err), be
			}
		}
		if cbe == nil && rt.timeout > 0 && upstream.IsTimeout(err) {
			err = fmt.Errorf("%w: %w", upstream.ErrTimeout, err)
		}
	}
	x.upstreamTime = time.Since(start)
	rt.upstreamLatency.Observe(x.upstreamTime.Seconds())
	if err != nil {
		return upstreamError(err)
	}
	x.upstreamStatus = resp.StatusCode
	defer resp.Body.Close()

	removeHopHeaders(resp.Header, nil)
	dst := w.Header()
	for k, vs := range resp.Header {
		if k == "Set-Cookie" && len(dst[k]) > 0 {
			// A session cookie the gateway re-issued, and the upstream's own.
			dst[k] = append(slices.Clip(dst[k]), vs...)
			continue
		}
		dst[k] = vs
	}
	if _, ok := resp.Header["Content-Type"]; !ok {
		// A nil value keeps net/http from sniffing one: a proxy adds no Content-Type.
		dst["Content-Type"] = nil
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		dst["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	x.status = resp.StatusCode

	x.send = timedWriter{w: w, rc: &x.rc, d: rt.sendTimeout}
	if err := g.copyBody(&x.send, w, resp); err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			x.decision, x.err = "client_closed", err
			return nil // the client left; nobody to tell
		}
		if errors.Is(err, errClientWrite) {
			x.decision, x.err = "client_write_failed", err
			return errAbort // gone or not reading (send_timeout): the connection is dropped
		}
		x.decision, x.err = "upstream_body_error", err
		return errAbort
	}
	for k, vs := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vs
	}
	return nil
}

// attempt is the request being forwarded, as upstream.Route.Send sees it. It lives in the
// exchange, so that handing it to Send allocates nothing.
type attempt struct {
	g  *Gateway
	x  *exchange
	rt *route
	in *url.URL // the client's request URL, which each target's URL is made from
}

var _ upstream.Attempt = (*attempt)(nil)

func (a *attempt) Aim(t *upstream.Target) {
	a.x.upstream = t.URL.Host
	a.x.out.URL = a.rt.upstreamURL(t, a.in, &a.x.url)
}

func (a *attempt) PassedOver(t *upstream.Target, err error) {
	a.g.log.Warn("upstream target unreachable, passed over for a while", "request_id", a.x.requestID, "route", a.rt.name,
		"target", t.URL.Host, "for", upstream.FailTimeout, "err", err)
}

// copyBody streams the upstream's body to dst, the client's writer w with its send timeout.
// Responses of unknown length and event streams are flushed as they arrive; the rest are left to
// the server's buffering.
func (g *Gateway) copyBody(dst io.Writer, w http.ResponseWriter, resp *http.Response) error {
	bp := g.buffers.get()
	defer g.buffers.put(bp)
	buf := *bp
	stream := resp.ContentLength == -1 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var flusher http.Flusher
	if stream {
		flusher, _ = w.(http.Flusher)
	}
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading the upstream's body: %w", rerr)
		}
	}
}

// upstreamURL is the target's URL with the request's normalised path (prefix stripped, after
// the target's base path) and query, built in u.
func (rt *route) upstreamURL(t *upstream.Target, in *url.URL, u *url.URL) *url.URL {
	*u = url.URL{Scheme: t.URL.Scheme, Host: t.URL.Host, RawQuery: in.RawQuery}
	setEscapedPath(u, rt.upstreamPath(t, escapedPath(in)), in)
	return u
}

// setForwarded sets X-Forwarded-For (appending the TCP peer to any chain it sent, as every
// proxy does), X-Forwarded-Host and X-Forwarded-Proto.
func setForwarded(h http.Header, r *http.Request, x *exchange) {
	ip := peerIP(r)
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		ip = strings.Join(prior, ", ") + ", " + ip
	}
	h["X-Forwarded-For"] = x.val(ip)
	h["X-Forwarded-Host"] = x.val(r.Host)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = x.val(proto)
}

// forwardUpgrade proxies a protocol switch with httputil.ReverseProxy.
func (g *Gateway) forwardUpgrade(w http.ResponseWriter, r *http.Request, rt *route, x *exchange) error {
	ps := &proxyState{rt: rt, target: rt.upstream.Balancer.Next(time.Now())}
	x.upstream = ps.target.URL.Host
	ctx := context.WithValue(r.Context(), proxyStateKey{}, ps)
	if rt.timeout > 0 {
		ctx = upstream.WithTimeout(ctx, rt.timeout)
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	rt.proxy.ServeHTTP(sw, r.WithContext(ctx))
	rt.upstreamLatency.Observe(time.Since(start).Seconds())
	if ps.err != nil {
		return upstreamError(ps.err)
	}
	x.status = sw.status
	return nil
}
