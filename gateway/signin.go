package gateway

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
)

// Browser sign-in: the providers with a session (oidc.SignIn) own their callback, logout and
// back-channel logout paths on the gateway listener, and a route's login names the provider
// that signs in its browsers.

// signInKind says which endpoint of a provider a path is.
type signInKind uint8

const (
	signInCallback signInKind = iota + 1
	signInLogout
	signInBackchannel
)

func (k signInKind) String() string {
	switch k {
	case signInCallback:
		return "callback"
	case signInLogout:
		return "logout"
	case signInBackchannel:
		return "backchannel_logout"
	}
	return "none"
}

type signInEndpoint struct {
	p    oidc.SignIn
	kind signInKind
}

// compileSignIn indexes the sign-in endpoints of snap's providers; nil when none has a session.
func compileSignIn(providers []idp.Provider) map[string]signInEndpoint {
	var out map[string]signInEndpoint
	for _, p := range providers {
		s, ok := p.(oidc.SignIn)
		if !ok {
			continue
		}
		cb, lo, bc, ok := s.SignInPaths()
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]signInEndpoint{}
		}
		out[cb] = signInEndpoint{p: s, kind: signInCallback}
		out[lo] = signInEndpoint{p: s, kind: signInLogout}
		out[bc] = signInEndpoint{p: s, kind: signInBackchannel}
	}
	return out
}

// origin is the request's scheme://host as the browser sees it: X-Forwarded-Proto and -Host
// count only from a trusted proxy.
func (c *compiled) origin(r *http.Request) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if c.clients.peerTrusted(r) {
		if p := firstForwarded(r.Header, "X-Forwarded-Proto"); p == "http" || p == "https" {
			scheme = p
		}
		if h := firstForwarded(r.Header, "X-Forwarded-Host"); h != "" && validHost(h) {
			host = h
		}
	}
	return scheme + "://" + host
}

// firstForwarded is the first entry of a comma-separated forwarded header: the client's side.
func firstForwarded(h http.Header, key string) string {
	vs := h[key]
	if len(vs) == 0 {
		return ""
	}
	v, _, _ := strings.Cut(vs[0], ",")
	return strings.TrimSpace(v)
}

// serveSignIn answers a sign-in endpoint.
func (g *Gateway) serveSignIn(c *compiled, w http.ResponseWriter, r *http.Request, x *exchange, ep signInEndpoint, start time.Time) {
	x.signIn, x.decision = ep.kind, ep.kind.String()
	var err error
	switch ep.kind {
	case signInCallback:
		err = ep.p.Callback(w, r, c.origin(r))
	case signInLogout:
		err = ep.p.Logout(w, r, c.origin(r))
	case signInBackchannel:
		err = ep.p.BackchannelLogout(w, r)
	}
	if err != nil {
		g.writeError(w, r, err, x)
	} else if x.status == 0 {
		x.status = http.StatusFound
		if ep.kind == signInBackchannel {
			x.status = http.StatusOK
		}
	}
	g.record(r, c, x, time.Since(start))
}

// wantsHTML reports a browser navigating: a GET or HEAD whose Accept names text/html. XHR and
// API calls (application/json, */*) get the 401 instead of a redirect they cannot follow.
func wantsHTML(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for _, v := range r.Header["Accept"] {
		if strings.Contains(strings.ToLower(v), "text/html") {
			return true
		}
	}
	return false
}

// loginRedirect turns the no-credential refusal of a browser on a route with login into the
// redirect to sign in.
func (g *Gateway) loginRedirect(c *compiled, r *http.Request, rt *route, err error) error {
	if rt.login == nil || !errors.Is(err, idp.ErrNoCredential) || !wantsHTML(r) {
		return err
	}
	loc, cookie, lerr := rt.login.LoginRedirect(r.Context(), r, c.origin(r))
	if lerr != nil {
		return lerr // the IdP cannot be asked (discovery): 503, fail closed
	}
	h := http.Header{"Location": {loc}, "Cache-Control": {"no-store"}}
	if v := cookie.String(); v != "" {
		h["Set-Cookie"] = []string{v}
	}
	return &HTTPError{Status: http.StatusFound, Message: "sign in at the identity provider", Decision: "login_redirect",
		Header: h, Err: err}
}
