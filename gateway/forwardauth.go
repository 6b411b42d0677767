package gateway

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/policies"
)

// Forward auth: the proxy a team already runs (nginx auth_request, Caddy forward_auth, Traefik
// ForwardAuth, Envoy ext_authz, ingress-nginx auth-url) asks the gateway to decide a request it
// describes, and forwards it itself. The described request runs the same steps as a proxied
// one (decide: match, sanitize, authenticate, authorize, limit, limits consumed once) from the
// same compiled policy; the answer is 200 with the identity headers for the proxy to copy
// upstream, or the denial as serving writes it.

// forwardAuth is the compiled forward_auth of a snapshot.
type forwardAuth struct {
	// path is the endpoint; path+"/nginx" and path+"/envoy/..." answer those conventions.
	path  string
	allow []netip.Prefix
}

func newForwardAuth(fa *policies.ForwardAuthEndpoint) *forwardAuth {
	if fa == nil {
		return nil
	}
	return &forwardAuth{path: fa.Path, allow: fa.Allow}
}

// convention is how the asking proxy describes the original request.
type convention uint8

const (
	// conventionNone is a path under the endpoint that names no convention (404).
	conventionNone convention = iota
	// conventionForwarded: X-Forwarded-Method, -Proto, -Host and -Uri (Traefik, Caddy).
	conventionForwarded
	// conventionNginx: X-Original-URI (nginx; the Host header is the original one) or
	// X-Original-URL (ingress-nginx), and X-Original-Method.
	conventionNginx
	// conventionEnvoy: the original path and query appended to the endpoint's path/envoy, the
	// method, Host and headers as they are (Envoy's ext_authz HTTP service, Istio's
	// envoyExtAuthzHttp), and the body when Envoy sends it (with_request_body).
	conventionEnvoy
)

func (c convention) String() string {
	switch c {
	case conventionForwarded:
		return "forwarded"
	case conventionNginx:
		return "nginx"
	case conventionEnvoy:
		return "envoy"
	}
	return "none"
}

// endpoint reports whether r is addressed to the forward-auth endpoint, and by which
// convention. The whole reserved path is the endpoint's: a route never sees it.
func (f *forwardAuth) endpoint(r *http.Request) (convention, bool) {
	p := r.URL.Path
	if !strings.HasPrefix(p, f.path) {
		return conventionNone, false
	}
	rest := p[len(f.path):]
	switch {
	case rest == "":
		return conventionForwarded, true
	case rest == "/nginx":
		return conventionNginx, true
	case rest == "/envoy" || strings.HasPrefix(rest, "/envoy/"):
		return conventionEnvoy, true
	case rest[0] == '/':
		return conventionNone, true
	}
	return conventionNone, false
}

var (
	errForwardAuthUntrusted = &HTTPError{Status: http.StatusForbidden, Message: "forward auth answers trusted proxies only",
		Decision: "forward_auth_untrusted", Err: errors.New("the peer is not in forward_auth's allow list (or trusted_proxies)")}
	errForwardAuthEndpoint = &HTTPError{Status: http.StatusNotFound, Message: "no forward auth convention at this path",
		Decision: "no_route"}
	// errForwardAuthOnly answers a proxied request for a route only forward auth decides: it
	// has no upstream, and to the client there is no such route.
	errForwardAuthOnly = &HTTPError{Status: http.StatusNotFound, Message: errNoRoute.Message, Decision: "no_route",
		Err: errors.New("the route has no upstream: it is decided by forward auth only")}
)

// errDescription answers a forward-auth request that does not describe a request. The reason
// is a fixed sentence, never a byte of the request.
func errDescription(reason string) error {
	return &HTTPError{Status: http.StatusBadRequest, Message: "forward auth: " + reason, Decision: "bad_forward_auth",
		Err: errors.New(reason)}
}

// trusts reports whether the TCP peer of r may ask. X-Forwarded-For is never read here: the
// peer is the proxy itself.
func (f *forwardAuth) trusts(r *http.Request) bool {
	return clientAddrs{trusted: f.allow}.peerTrusted(r)
}

// maxDescribedURI bounds the described request target, as a server bounds its request line.
const maxDescribedURI = 8 << 10

// describe returns the original request r describes by convention conv: its method, host and
// target, with r's header (the original credentials), peer and body. Nothing of r is changed.
func (f *forwardAuth) describe(r *http.Request, conv convention) (*http.Request, error) {
	var method, host, uri string
	switch conv {
	case conventionForwarded:
		var ok bool
		if method, ok = oneHeader(r.Header, "X-Forwarded-Method"); !ok {
			return nil, errDescription("X-Forwarded-Method must be set exactly once")
		}
		if uri, ok = oneHeader(r.Header, "X-Forwarded-Uri"); !ok {
			return nil, errDescription("X-Forwarded-Uri must be set exactly once")
		}
		host = r.Host
		if vs := r.Header["X-Forwarded-Host"]; len(vs) > 0 {
			if host, ok = oneHeader(r.Header, "X-Forwarded-Host"); !ok {
				return nil, errDescription("X-Forwarded-Host must be set at most once")
			}
		}
	case conventionNginx:
		var ok bool
		if method, ok = oneHeader(r.Header, "X-Original-Method"); !ok {
			return nil, errDescription("X-Original-Method must be set exactly once")
		}
		// ingress-nginx sets X-Original-URL (and X-Original-URI too with auth-method), nginx
		// the URI: with both they must agree, or a client could add the one the proxy does not
		// set. The URL, when present, names the host (ingress-nginx's Host is the auth
		// service's).
		origURI, hasURI := r.Header["X-Original-Uri"]
		switch _, hasURL := r.Header["X-Original-Url"]; {
		case hasURL:
			v, ok := oneHeader(r.Header, "X-Original-Url")
			if !ok {
				return nil, errDescription("X-Original-URL must be set exactly once")
			}
			if host, uri, ok = splitAbsoluteURL(v); !ok {
				return nil, errDescription("X-Original-URL is not an absolute http or https URL")
			}
			if hasURI && (len(origURI) != 1 || origURI[0] != uri) {
				return nil, errDescription("X-Original-URI and X-Original-URL name different requests")
			}
		case hasURI:
			if uri, ok = oneHeader(r.Header, "X-Original-Uri"); !ok {
				return nil, errDescription("X-Original-URI must be set exactly once")
			}
			host = r.Host
		default:
			return nil, errDescription("X-Original-URI or X-Original-URL must be set")
		}
	case conventionEnvoy:
		method, host = r.Method, r.Host
		prefix := f.path + "/envoy"
		if !strings.HasPrefix(r.RequestURI, prefix) {
			return nil, errDescription("the original path must follow " + prefix + " unescaped")
		}
		uri = r.RequestURI[len(prefix):]
		if uri == "" || uri[0] == '?' {
			uri = "/" + uri
		}
	}
	if !validMethod(method) {
		return nil, errDescription("the original method is not an HTTP method token")
	}
	if !validHost(host) {
		return nil, errDescription("the original host is not a host")
	}
	if len(uri) > maxDescribedURI || !validTarget(uri) {
		return nil, errDescription("the original URI is not a path with an optional query")
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, errDescription("the original URI is not a path with an optional query")
	}
	d := new(http.Request)
	*d = *r
	d.Method, d.Host, d.RequestURI, d.URL = method, host, uri, u
	return d, nil
}

// oneHeader is the value of a header sent exactly once.
func oneHeader(h http.Header, key string) (string, bool) {
	vs := h[key]
	if len(vs) != 1 {
		return "", false
	}
	return vs[0], true
}

// splitAbsoluteURL splits http(s)://host/path?query into host and target ("/" when the URL has
// no path).
func splitAbsoluteURL(s string) (host, target string, ok bool) {
	rest, ok := strings.CutPrefix(s, "https://")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "http://"); !ok {
			return "", "", false
		}
	}
	i := strings.IndexAny(rest, "/?#")
	if i < 0 {
		return rest, "/", true
	}
	if rest[i] == '#' {
		return "", "", false
	}
	host, target = rest[:i], rest[i:]
	if target[0] == '?' {
		target = "/" + target
	}
	return host, target, true
}

// validMethod reports an RFC 9110 method token of sane length.
func validMethod(m string) bool {
	return len(m) <= 32 && upstream.IsToken(m)
}

// validHost reports a Host value: a name or address with an optional port, or nothing (an
// HTTP/1.0 request), with no byte that could end or start another part of a URL.
func validHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("/?#@\\\"<>{}|^`", c) >= 0 {
			return false
		}
	}
	return true
}

// validTarget reports an origin-form request target: "/", then visible ASCII only.
func validTarget(t string) bool {
	if t == "" || t[0] != '/' {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// serveForwardAuth answers a forward-auth request: refused unless the peer may ask; otherwise
// the described request is decided, limits consumed, and answered 200 with the identity headers
// and the X-RateLimit-* of the tightest limit, or with the denial.
func (g *Gateway) serveForwardAuth(c *compiled, w http.ResponseWriter, r *http.Request, x *exchange, conv convention, start time.Time) {
	x.forwardAuth, x.conv, x.decision = true, conv, "allowed"
	// nginx's auth_request passes on only the status: the body goes in a header too.
	x.bodyHeader = conv == conventionNginx
	logged := r
	var err error = errForwardAuthEndpoint
	switch {
	case !c.fwd.trusts(r):
		err = errForwardAuthUntrusted
	case conv != conventionNone:
		var d *http.Request
		if d, err = c.fwd.describe(r, conv); err == nil {
			logged = d
			err = g.decide(c, d, x, Mode{Consume: true, ForwardAuth: true})
		}
	}
	if err != nil {
		if x.bodyHeader {
			err = nginxLogin(err)
		}
		g.writeError(w, r, err, x)
	} else {
		h := w.Header()
		// All five, empty when the consumer has none: Envoy and Traefik replace the client's
		// copies only of the headers the answer has, so an absent one could be forged.
		h["X-Consumer-Username"] = x.val(x.res.Consumer)
		h["X-Consumer-Groups"] = x.val(x.group)
		h["X-Consumer-Subject"] = x.val(x.res.Subject())
		h["X-Credential-Identifier"] = x.val(x.res.Identifier)
		h["X-Userinfo"] = x.val(x.res.Userinfo())
		if x.hasRate {
			setRateHeaders(h, &x.rate, x)
		}
		x.resp.WriteTo(h)
		h["Content-Length"] = x.val("0")
		w.WriteHeader(http.StatusOK)
		x.status = http.StatusOK
	}
	g.record(logged, c, x, time.Since(start))
}

// loginHeader carries the sign-in redirect for nginx, whose auth_request turns a 302 into a
// 500: the answer is a 401 with the IdP's URL here and the sign-in cookie, for the documented
// error_page pattern (auth_request_set $login $upstream_http_x_portcullis_login; return 302 $login).
const loginHeader = "X-Portcullis-Login"

// nginxLogin turns a sign-in redirect into nginx's form of it.
func nginxLogin(err error) error {
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusFound {
		return err
	}
	h := he.Header.Clone()
	h[loginHeader] = h["Location"]
	delete(h, "Location")
	c := *he
	c.Status, c.Header = http.StatusUnauthorized, h
	return &c
}
