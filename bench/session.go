package main

// The browser-session contestants (issue 13): a person signed in through the bench's OIDC
// issuer, every request carrying the session cookie. pc-session is Portcullis's oidc provider
// with a session (the route's "login"), oauth2-proxy-session oauth2-proxy as the reverse proxy
// in front of the same upstream.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"
)

// Portcullis's session client at the issuer, and the person it signs in. They guard nothing but
// this benchmark.
const (
	pcSessionIdP          = "sso"
	pcSessionClientID     = "portcullis-gateway"
	pcSessionClientSecret = "bench-portcullis-client-secret"
	pcSessionSecret       = "bench-session-secret-0123456789abcdef" // ≥ 32 bytes
	pcSessionUser         = "bench-person"
)

// pcSessionSpec is pc-session: an oidc provider with a session on the bench's issuer, the route
// signing people in with it, and a claim-matched consumer (a binding without subject) whose
// limit-count counts each person (key: subject).
func (l *lab) pcSessionSpec(local map[string]any) pcSpec {
	limit := map[string]any{"key": "subject"}
	for k, v := range local {
		limit[k] = v
	}
	return pcSpec{name: "pc-session", title: "Portcullis OIDC browser session (sealed cookie, RS256 access token) + limit-count per person", optional: true,
		idp: map[string]any{"name": pcSessionIdP, "type": "oidc", "issuer": l.oidc.issuer, "audience": oidcAudience, "subject_claim": "sub",
			"client_id": pcSessionClientID, "client_secret": pcSessionClientSecret,
			"session": map[string]any{"secrets": []string{pcSessionSecret}, "cookie_secure": false}},
		binding: map[string]any{"idp": pcSessionIdP}, limit: limit, login: true}
}

// portcullisSignIn signs in to the Portcullis contestant c as a browser would and makes the
// session cookie c's header: GET the route asking for HTML → 302 to the issuer's /authorize
// (PKCE S256, state, nonce) → 302 to /.portcullis/<idp>/callback with the code, which Portcullis
// exchanges at /token, verifies and turns into its sealed session cookie → 302 back to the route,
// which the upstream answers 200.
func (l *lab) portcullisSignIn(ctx context.Context, c *contestant, idp string) error {
	u, err := url.Parse(c.url)
	if err != nil {
		return err
	}
	callback := u.Scheme + "://" + u.Host + "/.portcullis/" + idp + "/callback"
	cookie, err := browserSignIn(ctx, c.url, "text/html", http.StatusOK, func(hops []*url.URL) error {
		if len(hops) != 3 {
			return fmt.Errorf("the sign-in went through %v, want /authorize, the callback and the route", hops)
		}
		auth, back := hops[0], hops[1]
		q := auth.Query()
		if auth.Scheme+"://"+auth.Host != l.oidc.issuer || auth.Path != "/authorize" || q.Get("code_challenge_method") != "S256" ||
			q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" || q.Get("client_id") != pcSessionClientID ||
			q.Get("redirect_uri") != callback {
			return fmt.Errorf("the route sent the browser to %s, want the issuer's /authorize with PKCE S256, state, nonce and the callback", auth)
		}
		if back.Scheme+"://"+back.Host+back.Path != callback || back.Query().Get("code") == "" {
			return fmt.Errorf("the issuer sent the browser back to %s, want %s with a code", back, callback)
		}
		if hops[2].String() != c.url {
			return fmt.Errorf("the callback sent the browser to %s, want %s", hops[2], c.url)
		}
		return nil
	}, func(cookies []*http.Cookie) (string, error) {
		return sessionCookie(cookies, "portcullis_"+idp, ".")
	})
	if err != nil {
		return err
	}
	c.header = http.Header{"Cookie": {cookie}}
	c.note = fmt.Sprintf("the session cookie from the sign-in (access token and id_token, AES-256-GCM sealed) is %d bytes.", len(cookie))
	return nil
}

// browserSignIn GETs start with accept as its Accept header (text/html: a browser) through a cookie jar,
// following the redirects, and wants the last answer to have status want. check sees the URLs
// redirected to; session picks the session's Cookie header out of the jar's cookies for start.
func browserSignIn(ctx context.Context, start, accept string, want int,
	check func(hops []*url.URL) error, session func([]*http.Cookie) (string, error)) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	var hops []*url.URL
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("more than 10 redirects")
			}
			hops = append(hops, req.URL)
			return nil
		}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, start, nil)
	if err != nil {
		return "", err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return "", fmt.Errorf("the sign-in ended on %s with status %d, want %d", resp.Request.URL, resp.StatusCode, want)
	}
	if check != nil {
		if err := check(hops); err != nil {
			return "", err
		}
	}
	u, err := url.Parse(start)
	if err != nil {
		return "", err
	}
	return session(jar.Cookies(u))
}

// oauth2ProxySession is oauth2-proxy as the reverse proxy in front of the upstream, every
// request carrying the session cookie of a user signed in through the bench's OIDC issuer.
func (l *lab) oauth2ProxySession(ctx context.Context) (*contestant, error) {
	c := &contestant{name: "oauth2-proxy-session", title: "oauth2-proxy reverse proxy, OIDC session cookie", optional: true}
	if l.cfg.oauth2Proxy == "" {
		c.skip = oauth2ProxyMissing()
		return c, nil
	}
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return c, err
	}
	c.url, c.endpoints = url, eps
	base := "http://" + addr
	c.proc, err = l.startOAuth2Proxy(ctx, c.name, addr,
		"--upstream="+l.upstreamURL()+"/",
		"--standard-logging=false",
	)
	if err != nil {
		return c, err
	}
	cookie, err := oauth2ProxyLogin(ctx, base, http.StatusOK)
	if err != nil {
		return c, fmt.Errorf("signing in to oauth2-proxy: %w", err)
	}
	c.header = http.Header{"Cookie": {cookie}}
	c.note = fmt.Sprintf("the session cookie from the OIDC sign-in (RS256 id_token, cookie session store) is %d bytes.", len(cookie))
	if err := requestOK(l.client, url, c.header, http.StatusOK)(); err != nil {
		return c, err
	}
	// Without the cookie oauth2-proxy refuses: an API call (Accept: application/json) gets 401,
	// a browser a redirect to the issuer.
	if err := requestOK(l.client, url, http.Header{"Accept": {"application/json"}}, http.StatusUnauthorized)(); err != nil {
		return c, err
	}
	return c, redirectsTo(url, l.oidc.issuer+"/authorize")
}

// redirectsTo checks that a browser's GET of u without credentials is redirected to prefix.
func redirectsTo(u, prefix string) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/html")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, prefix) {
		return fmt.Errorf("GET %s without credentials: status %d to %q, want 302 to %s…", u, resp.StatusCode, loc, prefix)
	}
	return nil
}

// sessionTargets compares Portcullis's browser session with key-auth (the same route, limit and
// upstream) and with oauth2-proxy's session; none when neither session contestant was measured.
func sessionTargets(by map[string]summary) []string {
	pc, ok := by["pc-session"]
	_, okO2P := by["oauth2-proxy-session"]
	if !ok && !okO2P {
		return nil
	}
	var out []string
	for _, name := range []string{"pc-session", "oauth2-proxy-session", "pc-key", "pc-oidc"} {
		if s, found := by[name]; found {
			out = append(out, fmt.Sprintf("– %s: %.0f req/s, %.1f CPU µs/req", s.c.name, s.rps, s.cpuUS))
		}
	}
	for _, t := range []struct {
		ref  string
		want float64
	}{{"pc-key", 0.9}, {"oauth2-proxy-session", 1.5}} {
		ref, found := by[t.ref]
		if !ok || !found {
			out = append(out, fmt.Sprintf("– pc-session ≥ %.1f × %s: not measured", t.want, t.ref))
			continue
		}
		got := pairedRatio(pc, ref)
		mark := "✅"
		if got < t.want {
			mark = "❌"
		}
		out = append(out, fmt.Sprintf("%s pc-session ≥ %.1f × %s: %.2f ×%s", mark, t.want, t.ref, got, byRound(pc, ref)))
	}
	if ok {
		if s, found := by["pc-oidc"]; found {
			out = append(out, fmt.Sprintf("– pc-session / pc-oidc (the same token as a bearer header): %.2f ×%s", pairedRatio(pc, s), byRound(pc, s)))
		}
		// CPU per request moves less than req/s when other processes take the CPU for a while.
		for _, name := range []string{"pc-key", "oauth2-proxy-session", "pc-oidc"} {
			if s, found := by[name]; found && pc.cpuUS > 0 {
				out = append(out, fmt.Sprintf("– by CPU per request, %s µs / pc-session µs: %.2f × (requests per CPU second, pc-session over it)", name, s.cpuUS/pc.cpuUS))
			}
		}
	}
	return out
}
