package oidc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/jwsshape"
)

// SignIn is implemented by providers that sign people in with a browser (an oidc or keycloak
// provider with a session). The gateway routes the endpoints' paths to it before any route, and
// asks LoginRedirect for a browser without credentials on a route whose login names it.
//
// origin is the request's scheme://host as the browser sees it (from X-Forwarded-Proto and
// -Host only when the peer is a trusted proxy). The endpoint methods write their answer on
// success; an error is the answer's failure (a *Denial: refused, with its status; any other
// error: the IdP cannot be asked, 503), written by the gateway.
type SignIn interface {
	idp.Provider
	// SignInPaths returns the callback, logout and back-channel logout paths; ok is false when
	// the provider has no session.
	SignInPaths() (callback, logout, backchannel string, ok bool)
	// LoginRedirect returns where to send a browser to sign in and the cookie that keeps the
	// sign-in's state, nonce, PKCE verifier and r's path and query to return to.
	LoginRedirect(ctx context.Context, r *http.Request, origin string) (location string, flowCookie *http.Cookie, err error)
	// Callback completes a sign-in: state, code exchange with the PKCE verifier, ID token and
	// nonce, then the session cookie and a redirect to the page the browser asked for.
	Callback(w http.ResponseWriter, r *http.Request, origin string) error
	// Logout ends the session and sends the browser to the IdP's end-session endpoint.
	Logout(w http.ResponseWriter, r *http.Request, origin string) error
	// BackchannelLogout verifies a logout token the IdP posts (OpenID Connect Back-Channel
	// Logout 1.0) and ends the sessions it names.
	BackchannelLogout(w http.ResponseWriter, r *http.Request) error
}

var _ SignIn = (*Provider)(nil)

// errSignIn is the refusal of a broken sign-in (a callback without its state, a code the IdP
// does not take): the browser starts again from the page it wanted.
func (o *Provider) errSignIn(status int, reason string) *idp.Denial {
	return &idp.Denial{Status: status, Message: "Sign-in failed", Reason: reason}
}

// SignInPaths returns the session's endpoints.
func (o *Provider) SignInPaths() (callback, logout, backchannel string, ok bool) {
	if o.sess == nil {
		return "", "", "", false
	}
	c := o.sess.cfg
	return c.CallbackPath, c.LogoutPath, c.BackchannelLogoutPath, true
}

// oauthConfig is the code flow's client at the discovered endpoints.
func (o *Provider) oauthConfig(ctx context.Context, origin string) (*oauth2.Config, *oidcMeta, error) {
	meta, err := o.keys.discovery(ctx)
	if err != nil {
		return nil, nil, err
	}
	if meta.AuthorizationEndpoint == "" || meta.TokenEndpoint == "" {
		return nil, nil, fmt.Errorf("signing in with %s: %w: the discovery document has no authorization or token endpoint", o.cfg.Issuer, idp.ErrUnavailable)
	}
	redirect := o.sess.cfg.RedirectURL
	if redirect == "" {
		redirect = origin + o.sess.cfg.CallbackPath
	}
	return &oauth2.Config{
		ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, RedirectURL: redirect, Scopes: o.sess.cfg.Scopes,
		Endpoint: oauth2.Endpoint{AuthURL: meta.AuthorizationEndpoint, TokenURL: meta.TokenEndpoint, AuthStyle: oauth2.AuthStyleInParams},
	}, meta, nil
}

// ReturnPath is the same-origin path and query a browser is sent back to after signing in. It
// is built from the request itself, never from a parameter, and cannot name another origin: a
// path starting with "//" or "/\" (which browsers read as another host) becomes "/".
func ReturnPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.HasPrefix(strings.ToUpper(p), "/%5C") {
		p = "/"
	}
	if r.URL.RawQuery != "" {
		p += "?" + r.URL.RawQuery
	}
	return p
}

// LoginRedirect starts a sign-in.
func (o *Provider) LoginRedirect(ctx context.Context, r *http.Request, origin string) (string, *http.Cookie, error) {
	if o.sess == nil {
		return "", nil, errors.New("provider has no session")
	}
	oc, _, err := o.oauthConfig(ctx, origin)
	if err != nil {
		return "", nil, err
	}
	f := flow{State: randomString(32), Nonce: randomString(32), Verifier: oauth2.GenerateVerifier(),
		Return: ReturnPath(r), Expiry: o.now().Add(flowMaxAge).Unix()}
	pt, _ := json.Marshal(f)
	c := o.sess.cookie(o.sess.cfg.CookieName+"_flow", o.sess.sealer.seal("flow", pt), o.sess.cfg.CallbackPath, int(flowMaxAge/time.Second))
	loc := oc.AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce))
	return loc, c, nil
}

// readFlow opens the sign-in cookie of r.
func (o *Provider) readFlow(r *http.Request) (*flow, bool) {
	c, err := r.Cookie(o.sess.cfg.CookieName + "_flow")
	if err != nil {
		return nil, false
	}
	pt, ok := o.sess.sealer.open("flow", c.Value)
	if !ok {
		return nil, false
	}
	var f flow
	if json.Unmarshal(pt, &f) != nil || f.State == "" || o.now().Unix() > f.Expiry {
		return nil, false
	}
	return &f, true
}

// Callback completes a sign-in.
func (o *Provider) Callback(w http.ResponseWriter, r *http.Request, origin string) (err error) {
	start := o.now()
	defer func() { o.ObserveCall("signin", start, err) }()
	if r.Method != http.MethodGet {
		return o.errSignIn(http.StatusMethodNotAllowed, "the callback takes GET")
	}
	q := r.URL.Query()
	f, ok := o.readFlow(r)
	// The sign-in cookie is single use: gone whatever the outcome, so a replayed callback
	// finds nothing to complete.
	http.SetCookie(w, o.sess.cookie(o.sess.cfg.CookieName+"_flow", "", o.sess.cfg.CallbackPath, -1))
	if !ok {
		return o.errSignIn(http.StatusBadRequest, "no sign-in in progress in this browser (missing, expired or tampered sign-in cookie)")
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.State)) != 1 {
		return o.errSignIn(http.StatusBadRequest, "the state does not match the sign-in in progress")
	}
	if e := q.Get("error"); e != "" {
		return o.errSignIn(http.StatusUnauthorized, "the identity provider refused the sign-in: "+reasonToken(e))
	}
	code := q.Get("code")
	if code == "" {
		return o.errSignIn(http.StatusBadRequest, "the callback has no code")
	}
	oc, _, err := o.oauthConfig(r.Context(), origin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(oauth2ctx(r.Context(), o.client), o.cfg.Timeout)
	defer cancel()
	tok, err := oc.Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return o.errSignIn(http.StatusUnauthorized, "the identity provider does not take the code: "+reasonToken(re.ErrorCode))
		}
		return fmt.Errorf("exchanging the code at %s: %w: %w", o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return o.errSignIn(http.StatusUnauthorized, "the token response has no id_token")
	}
	idt, err := o.idTokenVerifier().Verify(ctx, raw)
	if err != nil {
		if errors.Is(err, idp.ErrUnavailable) {
			return err
		}
		return o.errSignIn(http.StatusUnauthorized, "the ID token does not verify")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return o.errSignIn(http.StatusUnauthorized, "the ID token's nonce does not match the sign-in")
	}
	// The access token is what requests present: it must verify as a bearer token would.
	claims, err := o.verifyJWT(r.Context(), tok.AccessToken)
	if err != nil {
		var d *idp.Denial
		if errors.As(err, &d) {
			return o.errSignIn(http.StatusUnauthorized, "the access token is not one this provider accepts: "+d.Reason)
		}
		return err
	}
	var extra struct {
		SID string `json:"sid"`
	}
	_ = idt.Claims(&extra)
	now := o.now()
	// Its expiry is the token's own, on the IdP's clock, not the token response's expires_in.
	ss := &session{Access: tok.AccessToken, Refresh: tok.RefreshToken, IDToken: raw, Expiry: claimTime(claims["exp"]).Unix(),
		Created: now.Unix(), SID: extra.SID, Subject: idt.Subject}
	resp := &Response{}
	if err := o.sess.save(r.Context(), resp, ss); err != nil {
		if errors.Is(err, idp.ErrUnavailable) {
			return err
		}
		return o.errSignIn(http.StatusInternalServerError, err.Error())
	}
	resp.WriteTo(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, f.Return, http.StatusFound)
	return nil
}

// oauth2ctx makes x/oauth2 call the IdP with the provider's client.
func oauth2ctx(ctx context.Context, c *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c)
}

// idTokenVerifier is go-oidc's ID token verifier over the provider's own key cache.
func (o *Provider) idTokenVerifier() *oidc.IDTokenVerifier {
	algs := make([]string, 0, len(o.algs))
	for a := range o.algs {
		algs = append(algs, a)
	}
	return oidc.NewVerifier(o.cfg.Issuer, keySet{o}, &oidc.Config{ClientID: o.cfg.ClientID, SupportedSigningAlgs: algs, Now: o.now})
}

// keySet lets go-oidc verify signatures with the provider's JWKS cache (rotation, rate limits).
type keySet struct{ o *Provider }

func (k keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	hdr, err := oidcHeader(jwt)
	if err != nil {
		return nil, errors.New("malformed token header")
	}
	if !k.o.algs[hdr.Alg] {
		return nil, errors.New("token algorithm not accepted")
	}
	return k.o.keys.verify(ctx, jwt, hdr)
}

// reasonToken keeps an IdP's error code printable and short for the log.
func reasonToken(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// extractSession is Extract for a request without a bearer token: the session's access token,
// refreshed first when it is about to expire. A session that cannot be opened, has ended, or
// whose refresh the IdP refuses is no credential (its cookies are cleared); a refresh the IdP
// cannot answer while the token has expired fails closed.
func (o *Provider) extractSession(ctx context.Context, r *http.Request) (*idp.Credential, error) {
	now := o.now()
	ss, err := o.sess.load(ctx, r, now)
	if err != nil {
		return nil, err
	}
	resp := responseOf(ctx)
	if ss == nil {
		if _, err := r.Cookie(o.sess.cfg.CookieName); err == nil {
			o.sess.clear(r, resp)
		}
		return nil, nil
	}
	if revoked, err := o.sess.revokedShared(ctx, ss); err != nil {
		return nil, err
	} else if revoked {
		return nil, o.sess.drop(ctx, r, resp, ss)
	}
	if ss.Refresh != "" && !now.Add(o.sess.cfg.RefreshLeeway).Before(time.Unix(ss.Expiry, 0)) {
		fresh, err := o.refresh(ctx, ss)
		switch {
		case err == nil:
			// fresh is shared with the requests that joined the refresh: this one's copy.
			mine := *fresh
			mine.ref = ss.ref
			ss = &mine
			if werr := o.sess.save(ctx, resp, ss); werr != nil {
				o.logger.Warn("re-issuing a refreshed session", "err", werr)
			}
		case errors.Is(err, errSessionEnded):
			return nil, o.sess.drop(ctx, r, resp, ss)
		case now.Before(time.Unix(ss.Expiry, 0)):
			// The IdP cannot be asked, but the token is still good: use it, refresh later.
			o.logger.Warn("refreshing a session failed; its token is still valid", "err", err)
		default:
			return nil, err
		}
	}
	tc, _ := o.checkToken(ss.Access, false) // its shape, and the verified-token cache
	cred, err := o.credential(ctx, ss.Access, tc)
	if err != nil {
		var d *idp.Denial
		if errors.As(err, &d) {
			// A session whose token no longer verifies (expired without a refresh token, keys
			// rotated away) is over.
			return nil, o.sess.drop(ctx, r, resp, ss)
		}
		return nil, err
	}
	return cred, nil
}

// errSessionEnded is a refresh the IdP refused: the session ended there.
var errSessionEnded = errors.New("the identity provider ended the session")

// refresh exchanges the session's refresh token. Concurrent requests of one session share one
// refresh, and requests that raced it (still carrying the old cookie) reuse its answer.
func (o *Provider) refresh(ctx context.Context, ss *session) (*session, error) {
	key := sha256.Sum256([]byte(ss.Access))
	now := o.now()
	if fresh, ok := o.sess.refreshed.Get(key, now); ok {
		return fresh, nil
	}
	v, err, _ := o.refreshSF.Do(string(key[:]), func() (any, error) {
		start := o.now()
		fresh, err := o.doRefresh(ctx, ss)
		o.ObserveCall("refresh", start, err)
		if err == nil {
			o.sess.refreshed.Put(key, fresh, o.now().Add(time.Minute), o.now())
		}
		return fresh, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*session), nil
}

func (o *Provider) doRefresh(ctx context.Context, ss *session) (*session, error) {
	oc, _, err := o.oauthConfig(ctx, "")
	if err != nil {
		return nil, err
	}
	// The refresh serves every waiting request: a caller that goes away must not cancel it.
	ctx, cancel := context.WithTimeout(oauth2ctx(context.WithoutCancel(ctx), o.client), o.cfg.Timeout)
	defer cancel()
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: ss.Refresh, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return nil, fmt.Errorf("%w: %s", errSessionEnded, reasonToken(re.ErrorCode))
		}
		return nil, fmt.Errorf("refreshing a session at %s: %w: %w", o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	claims, err := o.verifyJWT(ctx, tok.AccessToken)
	if err != nil {
		var d *idp.Denial
		if errors.As(err, &d) {
			return nil, fmt.Errorf("%w: the refreshed access token does not verify: %s", errSessionEnded, d.Reason)
		}
		return nil, err
	}
	fresh := *ss
	fresh.Access, fresh.Expiry = tok.AccessToken, claimTime(claims["exp"]).Unix()
	if tok.RefreshToken != "" {
		fresh.Refresh = tok.RefreshToken
	}
	if idt, _ := tok.Extra("id_token").(string); idt != "" {
		fresh.IDToken = idt
	}
	return &fresh, nil
}

// Logout ends the session: its cookies go, its sid is revoked here, and the browser goes to the
// IdP's end-session endpoint with the ID token as hint.
func (o *Provider) Logout(w http.ResponseWriter, r *http.Request, origin string) (err error) {
	start := o.now()
	defer func() { o.ObserveCall("logout", start, err) }()
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return o.errSignIn(http.StatusMethodNotAllowed, "logout takes GET or POST")
	}
	now := o.now()
	ss, _ := o.sess.load(r.Context(), r, now) // a store that cannot be asked still clears the cookie
	resp := &Response{}
	if err := o.sess.drop(r.Context(), r, resp, ss); err != nil {
		o.logger.Warn("logout could not delete the stored session", "err", err)
	}
	resp.WriteTo(w.Header())
	after := o.sess.cfg.PostLogoutRedirectURI
	// Without a configured one, the browser comes back to this origin's "/". Sent to the IdP
	// it is checked against the client's registered URIs; sent to the browser directly it
	// stays a relative path, so that a forged Host can never make it another site.
	target := after
	if after == "" {
		after, target = origin+"/", "/"
	}
	if ss != nil {
		// The cookie is cleared in this browser; a copy of it must not outlive the logout.
		if err := o.sess.revoke(r.Context(), ss.SID, ss.Subject, now); err != nil {
			o.logger.Warn("logout not shared with the other replicas", "err", err)
		}
		meta, err := o.keys.discovery(r.Context())
		if err == nil && meta.EndSessionEndpoint != "" {
			v := url.Values{"post_logout_redirect_uri": {after}, "client_id": {o.cfg.ClientID}}
			if ss.IDToken != "" {
				v.Set("id_token_hint", ss.IDToken)
			}
			sep := "?"
			if strings.Contains(meta.EndSessionEndpoint, "?") {
				sep = "&"
			}
			target = meta.EndSessionEndpoint + sep + v.Encode()
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// backchannelLogoutEvent is the events member of a logout token.
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// maxLogoutToken bounds the posted form.
const maxLogoutToken = 16 << 10

// BackchannelLogout ends the sessions a verified logout token names.
func (o *Provider) BackchannelLogout(w http.ResponseWriter, r *http.Request) (err error) {
	start := o.now()
	defer func() { o.ObserveCall("backchannel_logout", start, err) }()
	if r.Method != http.MethodPost {
		return o.errSignIn(http.StatusMethodNotAllowed, "back-channel logout takes POST")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutToken)
	if err := r.ParseForm(); err != nil {
		return &idp.Denial{Status: http.StatusBadRequest, Message: "invalid_request", Reason: "the logout request is not a form of at most 16 KiB"}
	}
	claims, d := o.verifyLogoutToken(r.Context(), r.PostForm.Get("logout_token"))
	if d != nil {
		return d
	}
	sid, sub := claimString(claims["sid"]), claimString(claims["sub"])
	if err := o.sess.revoke(r.Context(), sid, sub, o.now()); err != nil {
		return err
	}
	o.logger.Info("back-channel logout", "by_sid", sid != "", "by_sub", sid == "")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// verifyLogoutToken checks a logout token (OpenID Connect Back-Channel Logout 1.0, 2.6): the
// signature with the provider's keys, iss, aud (the client id), iat, the back-channel-logout
// event, sid or sub, and no nonce. A refusal is a 400 *Denial; an unreachable IdP an error.
func (o *Provider) verifyLogoutToken(ctx context.Context, tok string) (map[string]any, error) {
	bad := func(reason string) (map[string]any, error) {
		return nil, &idp.Denial{Status: http.StatusBadRequest, Message: "invalid_request", Reason: "logout token: " + reason}
	}
	if tok == "" || !jwsshape.IsCompact(tok, false) {
		return bad("missing or not a compact JWS")
	}
	hdr, err := oidcHeader(tok)
	if err != nil {
		return bad("malformed header")
	}
	if !o.algs[hdr.Alg] {
		return bad("algorithm not accepted")
	}
	payload, err := o.keys.verify(ctx, tok, hdr)
	if err != nil {
		var d *idp.Denial
		if errors.As(err, &d) {
			return bad("signature does not verify")
		}
		return nil, err
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil || claims == nil {
		return bad("payload is not a JSON object")
	}
	if iss, _ := claims["iss"].(string); strings.TrimRight(iss, "/") != o.cfg.Issuer {
		return bad("wrong issuer")
	}
	if !claimContains(claims["aud"], o.cfg.ClientID) {
		return bad("audience is not the client")
	}
	now := o.now()
	iat := claimTime(claims["iat"])
	if iat.IsZero() || iat.After(now.Add(o.cfg.Leeway+time.Minute)) {
		return bad("missing or future iat")
	}
	if exp := claimTime(claims["exp"]); !exp.IsZero() && !now.Before(exp.Add(o.cfg.Leeway)) {
		return bad("expired")
	}
	ev, ok := claims["events"].(map[string]any)
	if !ok {
		return bad("no events claim")
	}
	if _, ok := ev[backchannelLogoutEvent].(map[string]any); !ok {
		return bad("events has no back-channel logout event")
	}
	if _, has := claims["nonce"]; has {
		return bad("a nonce is forbidden")
	}
	if claimString(claims["sid"]) == "" && claimString(claims["sub"]) == "" {
		return bad("neither sid nor sub")
	}
	return claims, nil
}

// hideSessionCookies removes the session's cookies from the request that goes upstream: they
// are the gateway's, and hold tokens.
func (o *Provider) hideSessionCookies(r *http.Request) {
	if o.sess == nil || len(r.Header["Cookie"]) == 0 {
		return
	}
	credential.HideCookies(r.Header, func(name, _ string) bool { return o.sess.isSessionCookie(name) })
}
