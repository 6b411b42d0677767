package main

// The forward-auth contestants (issue 14): nginx in front of the upstream asking an auth server
// with auth_request, Portcullis or oauth2-proxy, each on the contestant's CPU with nginx. nginx's
// own map check (nginx-key-limit) is their yardstick.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// The oauth2-proxy client and the user it logs in. They guard nothing but this benchmark.
const (
	o2pClientID     = "oauth2-proxy"
	o2pClientSecret = "bench-oauth2-proxy-secret"
	o2pCookieSecret = "bench-cookie-secret-0123456789ab" // 32 bytes: AES-256
	o2pCookieName   = "_oauth2_proxy"
	o2pUser         = "bench-user"
	o2pEmail        = "bench@example.com"
	// pcAuthLocation and o2pAuthLocation are nginx's internal locations of the subrequest.
	pcAuthLocation  = "/.portcullis-auth"
	o2pAuthLocation = "/oauth2/auth"
)

// oidcLogin is the issuer's authorization-code flow: /authorize approves the benchmark's user at
// once (no login page) and redirects back with a one-time code; /token exchanges the code for an
// id_token signed with the issuer's key (and, for Portcullis's session sign-in, an RS256 access
// token). Only the sign-ins before measuring use it: oauth2-proxy's, and Portcullis's (PKCE
// S256, session.go).
type oidcLogin struct {
	clients map[string]string // client_id → client_secret

	mu    sync.Mutex
	codes map[string]authCode
}

// authCode is one code's grant: the client and redirect_uri it was issued to, the nonce to
// echo in the id_token, and the PKCE challenge its redemption must answer (none without PKCE).
type authCode struct{ client, redirect, nonce, challenge string }

func newOIDCLogin() *oidcLogin {
	return &oidcLogin{clients: map[string]string{o2pClientID: o2pClientSecret, pcSessionClientID: pcSessionClientSecret},
		codes: map[string]authCode{}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func (o *oidcIssuer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	client, redirect := q.Get("client_id"), q.Get("redirect_uri")
	back, err := url.Parse(redirect)
	if _, known := o.login.clients[client]; !known || err != nil || redirect == "" || q.Get("response_type") != "code" {
		http.Error(w, "unknown client, bad redirect_uri or response_type", http.StatusBadRequest)
		return
	}
	// PKCE (RFC 7636): S256 only; the plain method is refused, as it is by most IdPs now.
	challenge := q.Get("code_challenge")
	if challenge != "" && q.Get("code_challenge_method") != "S256" {
		http.Error(w, "code_challenge_method must be S256", http.StatusBadRequest)
		return
	}
	code := randomHex(16)
	o.login.mu.Lock()
	o.login.codes[code] = authCode{client: client, redirect: redirect, nonce: q.Get("nonce"), challenge: challenge}
	o.login.mu.Unlock()
	v := back.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (o *oidcIssuer) tokenEndpoint(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 §2.3.1: the client credentials are form-encoded inside Basic.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	oauthError := func(code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
	}
	if want, known := o.login.clients[id]; !known || secret != want {
		oauthError("invalid_client")
		return
	}
	code := r.PostForm.Get("code")
	o.login.mu.Lock()
	grant, found := o.login.codes[code]
	delete(o.login.codes, code)
	o.login.mu.Unlock()
	if r.PostForm.Get("grant_type") != "authorization_code" || !found || grant.client != id || grant.redirect != r.PostForm.Get("redirect_uri") ||
		!pkceMatches(grant.challenge, r.PostForm.Get("code_verifier")) {
		oauthError("invalid_grant")
		return
	}
	answer, err := o.tokens(id, grant.nonce)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(answer)
}

// pkceMatches checks a code_verifier against the code's S256 challenge (RFC 7636 §4.6): a code
// issued without a challenge takes no verifier, one issued with it needs the right one.
func pkceMatches(challenge, verifier string) bool {
	if challenge == "" {
		return verifier == ""
	}
	sum := sha256.Sum256([]byte(verifier))
	return verifier != "" && subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// tokens is /token's answer to client for a grant with nonce. oauth2-proxy's user gets an
// id_token with the email claims it wants and an opaque access token (it keeps both in its
// cookie, and checks only the id_token); Portcullis's gets an RS256 access token for the
// provider's audience (the session's access token is verified like a bearer token on every
// request) and an id_token with a sid. Both live 3 hours: longer than any run, so no refresh.
func (o *oidcIssuer) tokens(client, nonce string) (map[string]any, error) {
	var claims map[string]any
	access := randomHex(32)
	if client == pcSessionClientID {
		claims = map[string]any{"iss": o.issuer, "aud": client, "sub": pcSessionUser, "sid": randomHex(16)}
		tok, err := signJWT(jwa.RS256, o.key, map[string]any{"iss": o.issuer, "aud": oidcAudience, "sub": pcSessionUser,
			"sid": claims["sid"], "azp": client})
		if err != nil {
			return nil, err
		}
		access = tok
	} else {
		claims = map[string]any{"iss": o.issuer, "aud": client, "sub": o2pUser, "email": o2pEmail, "email_verified": true,
			"preferred_username": o2pUser}
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	idToken, err := signJWT(jwa.RS256, o.key, claims)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": int((3 * time.Hour).Seconds()), "id_token": idToken,
	}, nil
}

// fwdNginxConf renders nginx in front of the upstream, asking the auth server at authAddr with
// auth_request, in the shape of examples/forward-auth/nginx.conf: a keep-alive upstream to the
// auth server (64 idle connections, as many as wrk's, where the example has 16), HTTP/1.1, no
// request body, the original method and URI in X-Original-Method and X-Original-URI, Host
// passed on. authPass is the subrequest's proxy_pass target, location the internal location,
// and answer the nginx directives that take the auth server's answer into the request to the
// upstream (and into the client's response); refused, if not empty, a location the refusals go
// to.
func (l *lab) fwdNginxConf(name, listen, authAddr, location, authPass, answer, refused string) string {
	return l.nginxBase(name) + fmt.Sprintf(`  upstream up {
    server %[1]s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  upstream auth {
    server %[2]s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen %[3]s;
    location / {
      auth_request %[4]s;
%[6]s
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = %[4]s {
      internal;
      proxy_pass http://auth%[5]s;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI    $request_uri;
      proxy_set_header X-Original-URL    "";
      proxy_set_header Host              $host;
      proxy_set_header X-Forwarded-For   $remote_addr;
    }
%[7]s
  }
}
`, strings.TrimPrefix(l.upstreamURL(), "http://"), authAddr, listen, location, authPass, indent(answer, "      "), indent(refused, "    "))
}

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, line := range lines {
		if line != "" {
			lines[i] = prefix + line
		}
	}
	return strings.Join(lines, "\n")
}

// pcFwdCopy and pcFwdRefused are examples/forward-auth/nginx.conf's: the consumer's identity to
// the upstream, the limit headers and Portcullis's refusal to the client.
const pcFwdCopy = `auth_request_set $portcullis_consumer   $upstream_http_x_consumer_username;
auth_request_set $portcullis_groups     $upstream_http_x_consumer_groups;
auth_request_set $portcullis_credential $upstream_http_x_credential_identifier;
auth_request_set $portcullis_userinfo   $upstream_http_x_userinfo;
proxy_set_header X-Consumer-Username     $portcullis_consumer;
proxy_set_header X-Consumer-Groups       $portcullis_groups;
proxy_set_header X-Credential-Identifier $portcullis_credential;
proxy_set_header X-Userinfo              $portcullis_userinfo;
auth_request_set $portcullis_status      $upstream_status;
auth_request_set $portcullis_body        $upstream_http_x_portcullis_body;
auth_request_set $portcullis_challenge   $upstream_http_www_authenticate;
auth_request_set $portcullis_retry_after $upstream_http_retry_after;
auth_request_set $portcullis_limit       $upstream_http_x_ratelimit_limit;
auth_request_set $portcullis_remaining   $upstream_http_x_ratelimit_remaining;
auth_request_set $portcullis_reset       $upstream_http_x_ratelimit_reset;
add_header X-RateLimit-Limit     $portcullis_limit always;
add_header X-RateLimit-Remaining $portcullis_remaining always;
add_header X-RateLimit-Reset     $portcullis_reset always;
error_page 401 403 500 = @portcullis_refused;`

const pcFwdRefused = `location @portcullis_refused {
  default_type application/json;
  add_header WWW-Authenticate      $portcullis_challenge always;
  add_header Retry-After           $portcullis_retry_after always;
  add_header X-RateLimit-Limit     $portcullis_limit always;
  add_header X-RateLimit-Remaining $portcullis_remaining always;
  add_header X-RateLimit-Reset     $portcullis_reset always;
  if ($portcullis_status = 400) { return 400 $portcullis_body; }
  if ($portcullis_status = 401) { return 401 $portcullis_body; }
  if ($portcullis_status = 403) { return 403 $portcullis_body; }
  if ($portcullis_status = 404) { return 404 $portcullis_body; }
  if ($portcullis_status = 429) { return 429 $portcullis_body; }
  if ($portcullis_status = 503) { return 503 $portcullis_body; }
  return 503 '{"message":"forward auth unavailable"}';
}`

// o2pFwdCopy is oauth2-proxy's nginx recipe (--set-xauthrequest): the user and email it
// answers with, to the upstream, in Portcullis's header names. A 401 reaches the client as is.
const o2pFwdCopy = `auth_request_set $o2p_user  $upstream_http_x_auth_request_user;
auth_request_set $o2p_email $upstream_http_x_auth_request_email;
proxy_set_header X-Consumer-Username $o2p_user;
proxy_set_header X-Consumer-Email    $o2p_email;`

// nginxFwdPC is nginx + auth_request → Portcullis (key-auth + the consumer's limit-count) in
// front of the upstream.
func (l *lab) nginxFwdPC(ctx context.Context) (*contestant, error) {
	c := &contestant{name: "nginx-fwd-pc", title: "nginx `auth_request` → Portcullis key-auth + limit-count",
		header: http.Header{"Apikey": {benchKey}}}
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return c, err
	}
	c.url = url
	pcPort, err := freePort()
	if err != nil {
		return c, err
	}
	pcAddr := netip.AddrPortFrom(loopback, uint16(pcPort))
	c.endpoints = append(eps, pcAddr)
	spec := pcSpec{idp: map[string]any{"name": "keys", "type": "key-auth", "header": "apikey"},
		binding: map[string]any{"idp": "keys", "key": benchKey}, limit: map[string]any{"count": limitCount, "time_window": 60}, forwardAuth: true}
	pc, err := l.startPortcullis(ctx, spec, c.name+"-portcullis", pcAddr.String())
	if pc != nil {
		c.also = []*proc{pc}
	}
	if err != nil {
		return c, err
	}
	// Portcullis decides the described request itself: the key gets 200, none 401.
	auth := "http://" + pcAddr.String() + "/.portcullis/auth/nginx"
	describe := func(h http.Header) http.Header {
		h = h.Clone()
		h.Set("X-Original-Method", http.MethodGet)
		h.Set("X-Original-URI", benchPath)
		return h
	}
	if err := errors.Join(requestOK(l.client, auth, describe(c.header), http.StatusOK)(),
		requestOK(l.client, auth, describe(http.Header{}), http.StatusUnauthorized)()); err != nil {
		return c, fmt.Errorf("forward-auth endpoint: %w", err)
	}
	conf := l.fwdNginxConf(c.name, addr, pcAddr.String(), pcAuthLocation, "/.portcullis/auth/nginx", pcFwdCopy, pcFwdRefused)
	if c.proc, err = l.startNginx(ctx, c.name, l.cfg.contestantCPU, conf, url, c.header, http.StatusOK); err != nil {
		return c, err
	}
	return c, requestOK(l.client, url, nil, http.StatusUnauthorized)()
}

// nginxFwdOAuth2Proxy is nginx + auth_request → oauth2-proxy's /oauth2/auth in front of the
// upstream, every request carrying the session cookie of a user signed in through the bench's
// OIDC issuer.
func (l *lab) nginxFwdOAuth2Proxy(ctx context.Context) (*contestant, error) {
	c := &contestant{name: "nginx-fwd-oauth2-proxy", title: "nginx `auth_request` → oauth2-proxy session cookie (OIDC)", optional: true}
	if l.cfg.oauth2Proxy == "" {
		c.skip = oauth2ProxyMissing()
		return c, nil
	}
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return c, err
	}
	c.url = url
	port, err := freePort()
	if err != nil {
		return c, err
	}
	o2pAddr := netip.AddrPortFrom(loopback, uint16(port))
	c.endpoints = append(eps, o2pAddr)
	base := "http://" + o2pAddr.String()
	o2p, err := l.startOAuth2Proxy(ctx, c.name+"-oauth2-proxy", o2pAddr.String(),
		"--upstream=static://202",
		"--set-xauthrequest",
	)
	if o2p != nil {
		c.also = []*proc{o2p}
	}
	if err != nil {
		return c, err
	}
	cookie, err := oauth2ProxyLogin(ctx, base, http.StatusAccepted)
	if err != nil {
		return c, fmt.Errorf("signing in to oauth2-proxy: %w", err)
	}
	c.header = http.Header{"Cookie": {cookie}}
	c.note = fmt.Sprintf("the session cookie from the OIDC sign-in (RS256 id_token, cookie session store) is %d bytes.", len(cookie))
	// oauth2-proxy decides the cookie itself: 202 with it, 401 without.
	if err := errors.Join(requestOK(l.client, base+"/oauth2/auth", c.header, http.StatusAccepted)(),
		requestOK(l.client, base+"/oauth2/auth", nil, http.StatusUnauthorized)()); err != nil {
		return c, fmt.Errorf("oauth2-proxy /oauth2/auth: %w", err)
	}
	conf := l.fwdNginxConf(c.name, addr, o2pAddr.String(), o2pAuthLocation, "/oauth2/auth", o2pFwdCopy, "")
	if c.proc, err = l.startNginx(ctx, c.name, l.cfg.contestantCPU, conf, url, c.header, http.StatusOK); err != nil {
		return c, err
	}
	return c, requestOK(l.client, url, nil, http.StatusUnauthorized)()
}

// oauth2ProxyMissing is why the oauth2-proxy contestants are skipped when it is not installed.
func oauth2ProxyMissing() string {
	return "oauth2-proxy not installed (make bench-tools tries `go install github.com/oauth2-proxy/oauth2-proxy/v7@" + oauth2ProxyVersion + "` into " + cacheDir() + "/bin)"
}

// startOAuth2Proxy starts oauth2-proxy as name on addr, on the contestant's CPU, signing people
// in through the bench's OIDC issuer, with the flags extra (its upstream among them), and waits
// for its /ping. Its per-request logs are off, as Portcullis runs with -access-log=false. The
// process is returned also when it did not become ready, for the caller to stop.
func (l *lab) startOAuth2Proxy(ctx context.Context, name, addr string, extra ...string) (*proc, error) {
	base := "http://" + addr
	args := append([]string{
		"--provider=oidc",
		"--oidc-issuer-url=" + l.oidc.issuer,
		"--client-id=" + o2pClientID,
		"--client-secret=" + o2pClientSecret,
		"--cookie-secret=" + o2pCookieSecret,
		"--cookie-name=" + o2pCookieName,
		"--cookie-secure=false",
		"--email-domain=*",
		"--http-address=" + addr,
		"--redirect-url=" + base + "/oauth2/callback",
		"--skip-provider-button",
		"--request-logging=false",
		"--auth-logging=false",
		"--silence-ping-logging",
	}, extra...)
	p, err := l.procs.start(name, l.cfg.contestantCPU, []string{"GOMAXPROCS=1"}, l.cfg.oauth2Proxy, args...)
	if err != nil {
		return p, err
	}
	return p, waitReady(ctx, p, 20*time.Second, httpOK(l.client, base+"/ping", http.StatusOK))
}

// oauth2ProxyLogin signs in to the oauth2-proxy at base as a browser would: /oauth2/start
// redirects to the issuer's /authorize, which redirects back to /oauth2/callback with a code,
// which oauth2-proxy exchanges at the issuer's /token for an id_token and turns into its
// session cookie, then redirects to / (answered with status want: 202 by the static upstream of
// the forward-auth contestant, 200 by the bench's upstream). It returns the Cookie header that
// carries the session (one cookie, or the parts _0, _1, … oauth2-proxy splits a long one into).
func oauth2ProxyLogin(ctx context.Context, base string, want int) (string, error) {
	return browserSignIn(ctx, base+"/oauth2/start?rd=%2F", "", want, nil, func(cookies []*http.Cookie) (string, error) {
		return sessionCookie(cookies, o2pCookieName, "_")
	})
}

// sessionCookie renders the session cookies named name (or split into name+sep+"0", …) as a
// Cookie header, without any other cookie (oauth2-proxy's CSRF cookie, Portcullis's sign-in
// cookie).
func sessionCookie(cookies []*http.Cookie, name, sep string) (string, error) {
	var parts []string
	for _, ck := range cookies {
		if ck.Name == name || strings.HasPrefix(ck.Name, name+sep) && isDigits(strings.TrimPrefix(ck.Name, name+sep)) {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("no %s cookie after the sign-in", name)
	}
	return strings.Join(parts, "; "), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	_, err := strconv.Atoi(s)
	return err == nil && !strings.ContainsAny(s, "+-")
}
