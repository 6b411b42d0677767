package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/internal/urlpath"
)

// errBadPath answers a request whose path cannot be normalised safely. The reason is one of
// urlpath's fixed sentences, never a byte of the request.
func errBadPath(err error) error {
	return &HTTPError{Status: http.StatusBadRequest, Message: "bad request path: " + err.Error(), Decision: "bad_path", Err: err}
}

// match normalises r's path and host and finds the route. Every rule (the path template, the
// allow lists, the providers of the route) applies to the normalised path, and it is what the
// upstream receives: r.URL's path is rewritten to it. r.RequestURI keeps what the client sent,
// which is what an HMAC signature covers. The route is returned with an error too when it
// refuses the request (an encoded slash it does not allow), for the access log.
func (c *compiled) match(r *http.Request, x *exchange) (*route, error) {
	p, flags, err := urlpath.Normalize(requestPath(r))
	if err != nil {
		return nil, errBadPath(err)
	}
	setEscapedPath(r.URL, p, r.URL)

	// mux reads the host from the request (from its URL when absolute) and the path from
	// URL.EscapedPath (UseEncodedPath): it is given a copy with both normalised, in the
	// exchange's scratch memory, which forward overwrites later.
	mr := &x.out
	*mr = *r
	host, ok := normalizeHost(r.Host)
	if !ok {
		return nil, errBadHost
	}
	mr.Host = host
	x.url = url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath}
	mr.URL = &x.url
	m := &x.match
	if !c.router.Match(mr, m) || m.Handler == nil {
		return nil, errNoRoute
	}
	rt := m.Handler.(*route)
	if flags&urlpath.HasEncodedSlash != 0 && !rt.allowEncodedSlashes {
		return rt, errBadPath(urlpath.ErrEncodedSlash)
	}
	return rt, nil
}

// requestPath is the path of r's target as the client sent it, still escaped, without the
// query. r.URL.Path is decoded (a %2F in it is a "/") and r.URL.RawPath is kept only sometimes
// (never with a raw backslash, which EscapedPath would turn into %5C), so the request line
// is the source.
func requestPath(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" {
		// Built in process (explain, tests): its URL is all there is.
		return r.URL.EscapedPath()
	}
	if uri[0] != '/' {
		// The absolute form (GET http://host/path): the path starts at the first "/" after
		// the authority. "*" (OPTIONS *) is returned as it is, and refused as not absolute.
		i := strings.Index(uri, "://")
		if i < 0 {
			return uri
		}
		rest := uri[i+3:]
		j := strings.IndexAny(rest, "/?")
		if j < 0 || rest[j] == '?' {
			return ""
		}
		uri = rest[j:]
	}
	if q := strings.IndexByte(uri, '?'); q >= 0 {
		uri = uri[:q]
	}
	return uri
}

// errBadHost answers a Host that names no host (an empty label), as nginx does.
var errBadHost = &HTTPError{Status: http.StatusBadRequest, Message: "bad request host", Decision: "bad_host",
	Err: errors.New("the host has an empty label")}

// normalizeHost is the host as routes match it: without its port, lower-case, without one
// trailing dot (admin.example.com. is admin.example.com, in DNS and here). A host with an empty
// label (admin.example.com.., .admin) is refused: it is no host, and with one more dot ignored
// it would only fall through to another route. It allocates only for upper-case letters.
func normalizeHost(h string) (string, bool) {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i:], ']') < 0 {
		h = h[:i] // a port; the ":" of an IPv6 literal is inside its brackets
	}
	if strings.HasPrefix(h, ".") || strings.Contains(h, "..") {
		return "", false
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if 'A' <= h[i] && h[i] <= 'Z' {
			return strings.ToLower(h), true
		}
	}
	return h, true
}

// hostTemplate is a configured host as the router matches it: lower-case and without one
// trailing dot, like the requests' hosts. A {name:pattern} part is left as it is written.
func hostTemplate(h string) string {
	h = strings.TrimSuffix(h, ".")
	var b strings.Builder
	level := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '{':
			level++
		case c == '}':
			level--
		case level == 0 && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// upstreamPath is the escaped path forwarded for the normalised path esc: the route's
// strip_prefix removed at a segment boundary (on the escaped form, so an encoded slash stays
// encoded), the target's base path before it.
func (rt *route) upstreamPath(t *upstream.Target, esc string) string {
	if rt.stripPrefix != "" {
		esc, _ = urlpath.StripPrefix(esc, rt.stripPrefix)
	}
	if base := strings.TrimSuffix(t.URL.EscapedPath(), "/"); base != "" {
		esc = base + esc
	}
	return esc
}

// escapedPath is u's normalised escaped path (set by match).
func escapedPath(u *url.URL) string {
	if u.RawPath != "" {
		return u.RawPath
	}
	return u.EscapedPath()
}

// setEscapedPath sets u's path to the escaped path p, Path and RawPath consistent so that
// EscapedPath (what mux matches and what is written upstream) returns p exactly; in is the
// request's URL (u itself in match), whose decoded Path is reused when p is its path unchanged.
func setEscapedPath(u *url.URL, p string, in *url.URL) {
	switch {
	case p == escapedPath(in):
		u.Path = in.Path
	case strings.IndexByte(p, '%') < 0:
		u.Path = p
	default:
		d, err := url.PathUnescape(p)
		if err != nil {
			d = p // cannot happen: p is normalised
		}
		u.Path = d
	}
	u.RawPath = p
}
