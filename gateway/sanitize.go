package gateway

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/portcullis/portcullis/idp"
)

// The gateway owns the request headers that tell the upstream who is calling (X-Consumer-*,
// X-Credential-Identifier, X-Userinfo, ...) and where from (X-Forwarded-*). The client can
// neither send its own copies, under any spelling an upstream could read as the same name, nor
// remove the gateway's: its hop-by-hop fields are removed before the gateway sets its own, so
// naming X-Consumer-Username in Connection removes nothing the gateway sets.

// gatewaySetHeaders are the request headers the gateway sets on the upstream request: the
// upgrade path copies them onto httputil.ReverseProxy's outgoing request after the proxy's own
// hop-by-hop removal.
var gatewaySetHeaders = []string{
	"X-Consumer-Username", "X-Consumer-Groups", "X-Consumer-Subject", "X-Credential-Identifier", "X-Userinfo",
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id",
	"Traceparent", "Tracestate", // set when tracing is on (tracing.go); the client's otherwise
}

// mayBeGatewayHeader is a cheap first test: every header the gateway owns starts with "X-",
// which CGI and WSGI read the same as "X_".
func mayBeGatewayHeader(name string) bool {
	return len(name) > 2 && (name[0] == 'X' || name[0] == 'x') && (name[1] == '-' || name[1] == '_')
}

// isGatewayHeader reports whether name, read as CGI and WSGI upstreams read it ('_' and '-'
// alike, any case: X_Consumer_Username becomes HTTP_X_CONSUMER_USERNAME), is a header the
// gateway owns.
func isGatewayHeader(name string) bool {
	if !mayBeGatewayHeader(name) {
		return false
	}
	n := cgiName(name)
	return idp.IsIdentityHeader(n) || isForwardedHeader(n)
}

// isForwardedHeader reports the X-Forwarded-* headers setForwarded sets, in canonical form.
func isForwardedHeader(name string) bool {
	switch name {
	case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// cgiName is name as CGI and WSGI upstreams read it, spelt as net/http spells canonical keys:
// '_' as '-', letters upper after a '-' and lower elsewhere, whatever other bytes the name has
// (net/http leaves a name with a byte outside a token as it is). No allocation when name is
// already so spelt, as the keys of a parsed request are unless they have an underscore.
func cgiName(name string) string {
	upper := true
	i := 0
	for ; i < len(name); i++ {
		c := name[i]
		if c == '_' || (upper && 'a' <= c && c <= 'z') || (!upper && 'A' <= c && c <= 'Z') {
			break
		}
		upper = c == '-'
	}
	if i == len(name) {
		return name
	}
	b := []byte(name)
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '_':
			c = '-'
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	return string(b)
}

// droppedFromClient reports a client header the gateway drops: its copy of any header the
// gateway owns, under any spelling an upstream reads as that header. Only the colliding
// underscore names go, not all of them (nginx's underscores_in_headers off): other clients'
// underscore headers keep working. The client's own X-Forwarded-For stays, as it is the chain
// the gateway appends the peer to, and its X-Forwarded-Host and -Proto, which setForwarded
// replaces.
func droppedFromClient(name string) bool {
	return !isForwardedHeader(name) && isGatewayHeader(name)
}

// sanitize drops the client's copies of the headers the gateway owns from h.
func sanitize(h http.Header) {
	for k := range h {
		if droppedFromClient(k) {
			delete(h, k)
		}
	}
}

// sanitizeRequest is the pipeline's sanitize step: the client's copies of the gateway's
// headers go, from the header and from the declared trailers, and the protocol switch it asks
// for is classified (websocket) or refused.
func sanitizeRequest(r *http.Request) (websocket bool, err error) {
	sanitize(r.Header)
	for k := range r.Trailer {
		if isGatewayHeader(k) {
			delete(r.Trailer, k)
		}
	}
	return classifyUpgrade(r.Header)
}

// errUnsupportedUpgrade refuses a protocol switch other than WebSocket (Envoy refuses the
// upgrades a route is not configured for).
var errUnsupportedUpgrade = &HTTPError{Status: http.StatusBadRequest, Message: "unsupported protocol upgrade",
	Decision: "bad_upgrade"}

// classifyUpgrade reads the switch the client asks for: Connection names "upgrade" and Upgrade
// lists the protocols. WebSocket is proxied; h2c alone is ignored and the request served as
// plain HTTP/1.1, as Envoy does (RFC 9110 lets a server ignore Upgrade, and an h2c client then
// carries on in HTTP/1.1); any other protocol is refused. Upgrade without Connection: upgrade
// is no request to switch: the hop-by-hop removal drops it.
func classifyUpgrade(h http.Header) (websocket bool, err error) {
	if len(h["Upgrade"]) == 0 || !headerHasToken(h["Connection"], "upgrade") {
		return false, nil
	}
	other := false
	for _, v := range h["Upgrade"] {
		for p := range strings.SplitSeq(v, ",") {
			p = textproto.TrimString(p)
			name, _, _ := strings.Cut(p, "/")
			switch {
			case p == "":
			case strings.EqualFold(name, "websocket"):
				websocket = true
			case strings.EqualFold(name, "h2c"):
			default:
				other = true
			}
		}
	}
	if websocket {
		return true, nil
	}
	if other {
		return false, errUnsupportedUpgrade
	}
	return false, nil
}

// headerHasToken reports whether the comma-separated values vs hold token, in any case.
func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// hopHeaders are the hop-by-hop headers (RFC 9110, 7.6.1) that a proxy must not forward, and
// h2c's HTTP2-Settings, which only means something on the connection it came on.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings",
}

// removeHopHeaders removes the hop-by-hop fields from h, and those Connection names from h and
// from trailer.
func removeHopHeaders(h, trailer http.Header) {
	if len(h) == 0 {
		return
	}
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				k := textproto.CanonicalMIMEHeaderKey(sf)
				delete(h, k)
				delete(trailer, k)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
		delete(trailer, k)
	}
}

// upstreamHeaders turns the client's (sanitised) header into the upstream's: the hop-by-hop
// fields go first, then the gateway sets its own, so nothing the client sends can remove or
// replace them. A WebSocket switch keeps exactly Connection: Upgrade and Upgrade: websocket.
func upstreamHeaders(r *http.Request, res *idp.Result, group string, websocket bool, x *exchange) {
	h := r.Header
	removeHopHeaders(h, r.Trailer)
	if websocket {
		h["Connection"] = x.val("Upgrade")
		h["Upgrade"] = x.val("websocket")
	}
	setIdentity(h, res, group, x)
	setForwarded(h, r, x)
	h[requestIDHeader] = x.val(x.requestID)
}

func setIdentity(h http.Header, res *idp.Result, group string, x *exchange) {
	h["X-Consumer-Username"] = x.val(res.Consumer)
	if group != "" {
		h["X-Consumer-Groups"] = x.val(group)
	}
	if res.Identifier != "" {
		h["X-Credential-Identifier"] = x.val(res.Identifier)
	}
	if sub := res.Subject(); sub != "" {
		h["X-Consumer-Subject"] = x.val(sub)
	}
	if ui := res.Userinfo(); ui != "" {
		h["X-Userinfo"] = x.val(ui)
	}
}

// upstreamTrailer is the trailer map of the upstream request: the client's declared trailers
// that survived sanitising, their values filled in by clientBody when the body ends. nil when
// the client declared none: undeclared trailers are not forwarded.
func upstreamTrailer(declared http.Header) http.Header {
	if len(declared) == 0 {
		return nil
	}
	out := make(http.Header, len(declared))
	for k := range declared {
		if !isGatewayHeader(k) {
			out[k] = nil
		}
	}
	return out
}

// copyTrailers fills out's keys from the client's trailers in as they arrived. Only declared
// names (out's keys, sanitised) are copied: a trailer the client did not declare, an identity
// header among them, never reaches the upstream.
func copyTrailers(out, in http.Header) {
	for k := range out {
		if vs, ok := in[k]; ok && !isGatewayHeader(k) {
			out[k] = vs
		}
	}
}
