package oidc

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/expiring"
)

// SessionConfig turns on browser sign-in for an oidc or keycloak provider: the authorization
// code flow with PKCE, a session cookie, refresh, logout and back-channel logout. The session
// is one more place the provider reads its token from.
type SessionConfig struct {
	// Secrets seal the cookies (AES-256-GCM under SHA-256 of the secret): the first seals, every
	// one opens, so a secret is rotated by putting the new one first. At least 32 bytes each.
	Secrets []string
	// CookieName is the session cookie (default "portcullis_" + the provider's name); a session
	// too large for one cookie continues in CookieName+".1", ".2"…; the sign-in in progress is
	// in CookieName+"_flow".
	CookieName   string
	CookieDomain string
	CookiePath   string // default "/"
	// Insecure leaves Secure off the cookies, for plain-http development only.
	Insecure bool
	// CallbackPath, LogoutPath and BackchannelLogoutPath are the gateway's sign-in endpoints;
	// defaults /.portcullis/<name>/callback, /logout and /backchannel-logout.
	CallbackPath, LogoutPath, BackchannelLogoutPath string
	// RedirectURL is the callback's absolute URL as registered at the IdP; default the
	// request's scheme and host (from X-Forwarded-* of trusted proxies) and CallbackPath.
	RedirectURL string
	// PostLogoutRedirectURI is where the IdP sends the browser after logout; default the
	// request's origin and "/".
	PostLogoutRedirectURI string
	// Scopes asked for; default openid, profile, email.
	Scopes []string
	// RefreshLeeway is how long before the access token expires it is refreshed. Default 30s.
	RefreshLeeway time.Duration
	// MaxAge bounds a session from its sign-in, refreshes included. Default 8h.
	MaxAge time.Duration
	// Revocations, when set and Enabled, shares logouts between replicas: every session
	// request asks it, and a store that cannot be asked fails the request closed.
	Revocations RevocationStore
	// Store, when set, keeps the sessions server side (Redis): the cookie holds only a sealed
	// random id, so that replicas share sessions and a logout deletes the session itself.
	// Nil keeps the whole session in the cookie.
	Store SessionStore
}

// SessionStore keeps sealed sessions by key (Redis). Errors mean the store cannot be asked;
// a session request then fails closed (503).
type SessionStore interface {
	// Get returns the value stored under key; ok is false when there is none.
	Get(ctx context.Context, key string) (value string, ok bool, err error)
	// Set stores value under key for ttl.
	Set(ctx context.Context, key, value string, ttl time.Duration) error
	// Delete removes key.
	Delete(ctx context.Context, key string) error
}

// RevocationStore holds the sessions ended by a logout, shared by the replicas of a gateway
// (Redis). Keys are opaque strings of the provider's; a value is a Unix time.
//
// Errors mean the store cannot be asked (not "not revoked"): the session request fails closed
// with 503, and a logout that cannot be recorded is answered 503 so that the IdP sees it failed.
type RevocationStore interface {
	// Enabled reports whether the store is in use (the policy has a redis block).
	Enabled() bool
	// Revoke records key with value until ttl has passed.
	Revoke(ctx context.Context, key string, value int64, ttl time.Duration) error
	// Lookup returns the values of the keys that are recorded (absent keys are absent).
	Lookup(ctx context.Context, keys ...string) (map[string]int64, error)
}

// Defaults of SessionConfig.
const (
	DefaultRefreshLeeway = 30 * time.Second
	DefaultSessionMaxAge = 8 * time.Hour
	// flowMaxAge bounds a sign-in in progress (the login page and back).
	flowMaxAge = 10 * time.Minute
	// maxCookieChunk is the value size of one session cookie: with its name and attributes it
	// stays under the 4096 bytes every browser keeps.
	maxCookieChunk = 3800
	// maxCookieChunks bounds how many cookies one session may take (and how many are read).
	maxCookieChunks = 8
	// MinSessionSecret is the shortest session secret accepted, in bytes.
	MinSessionSecret = 32
)

// session is what a session cookie holds, sealed.
type session struct {
	Access  string `json:"a"`
	Refresh string `json:"r,omitempty"`
	IDToken string `json:"i,omitempty"`
	// Expiry is the access token's expiry, Created the sign-in time (Unix seconds).
	Expiry  int64  `json:"e"`
	Created int64  `json:"c"`
	SID     string `json:"s,omitempty"`
	Subject string `json:"u,omitempty"`
	// ref is the session's id in the SessionStore ("" in the cookie store).
	ref string
}

// flow is what the sign-in cookie holds between the redirect to the IdP and the callback.
type flow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	// Return is the same-origin path and query the browser asked for.
	Return string `json:"r"`
	Expiry int64  `json:"e"`
}

// sealer seals and opens cookie values with AES-256-GCM. The cookie's purpose is the additional
// data, so that a sign-in cookie never opens as a session.
type sealer struct {
	aeads []cipher.AEAD
}

func newSealer(secrets []string) (*sealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("session needs at least one secret")
	}
	s := &sealer{}
	for i, sec := range secrets {
		if len(sec) < MinSessionSecret {
			return nil, errors.New("session secret " + strconv.Itoa(i) + " is shorter than " + strconv.Itoa(MinSessionSecret) + " bytes")
		}
		key := sha256.Sum256([]byte(sec))
		block, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		s.aeads = append(s.aeads, aead)
	}
	return s, nil
}

// seal returns base64url(nonce ‖ ciphertext) of plaintext, under the first secret.
func (s *sealer) seal(purpose string, plaintext []byte) string {
	aead := s.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plaintext, []byte(purpose)))
}

// open reverses seal with any secret. A value that does not open (tampered, truncated, of
// another purpose or sealed under a retired secret) is no value: ok is false, never an error.
func (s *sealer) open(purpose, v string) ([]byte, bool) {
	if len(v) > maxCookieChunk*maxCookieChunks {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, false
	}
	for _, aead := range s.aeads {
		if len(raw) < aead.NonceSize()+aead.Overhead() {
			return nil, false
		}
		if pt, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(purpose)); err == nil {
			return pt, true
		}
	}
	return nil, false
}

// randomString is n random bytes, base64url.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Response carries what providers set on the response to a request (a re-issued or cleared
// session cookie), for the gateway to write whatever the decision. The gateway puts one in the
// request's context with WithResponse; it is safe for concurrent use.
type Response struct {
	mu      sync.Mutex
	cookies []*http.Cookie
}

type responseKey struct{}

// WithResponse returns ctx carrying a fresh Response.
func WithResponse(ctx context.Context) (context.Context, *Response) {
	resp := &Response{}
	return context.WithValue(ctx, responseKey{}, resp), resp
}

func responseOf(ctx context.Context) *Response {
	r, _ := ctx.Value(responseKey{}).(*Response)
	return r
}

// SetCookie adds a cookie to the response; a nil Response ignores it.
func (r *Response) SetCookie(c *http.Cookie) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.cookies = append(r.cookies, c)
	r.mu.Unlock()
}

// WriteTo adds the cookies to h as Set-Cookie lines.
func (r *Response) WriteTo(h http.Header) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cookies {
		if v := c.String(); v != "" {
			h.Add("Set-Cookie", v)
		}
	}
}

// sessions is the session side of an OIDC provider.
type sessions struct {
	cfg    SessionConfig
	sealer *sealer
	// revoked holds the sessions ended by a logout: by sid until they would have expired
	// anyway, and by subject with the time of the logout (sessions created before it end).
	revokedSID *expiring.Map[string, struct{}]
	revokedSub *expiring.Map[string, int64]
	// refreshed remembers a refresh for a short while, by the refreshed access token's hash, so
	// that the requests of one session that raced the first refresh reuse its answer.
	refreshed *expiring.Map[[sha256.Size]byte, *session]
	// opened remembers opened cookies by their sealed value: opening (base64, AES-GCM, JSON)
	// costs six times a key-auth decision, and a session sends the same cookie for minutes.
	// Revocations and max_age are checked on every request all the same.
	opened *expiring.Map[string, *session]
}

// openedTTL bounds how long an opened cookie is reused.
const openedTTL = time.Minute

// maxRevocations bounds each revocation list.
const maxRevocations = 100_000

func newSessions(name string, cfg SessionConfig) (*sessions, error) {
	sl, err := newSealer(cfg.Secrets)
	if err != nil {
		return nil, err
	}
	if cfg.CookieName == "" {
		cfg.CookieName = "portcullis_" + name
	}
	if cfg.CookiePath == "" {
		cfg.CookiePath = "/"
	}
	prefix := "/.portcullis/" + name
	if cfg.CallbackPath == "" {
		cfg.CallbackPath = prefix + "/callback"
	}
	if cfg.LogoutPath == "" {
		cfg.LogoutPath = prefix + "/logout"
	}
	if cfg.BackchannelLogoutPath == "" {
		cfg.BackchannelLogoutPath = prefix + "/backchannel-logout"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"openid", "profile", "email"}
	} else if !slices.Contains(cfg.Scopes, "openid") {
		cfg.Scopes = append([]string{"openid"}, cfg.Scopes...)
	}
	if cfg.RefreshLeeway == 0 {
		cfg.RefreshLeeway = DefaultRefreshLeeway
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultSessionMaxAge
	}
	if cfg.RefreshLeeway < 0 || cfg.MaxAge < 0 {
		return nil, errors.New("session refresh_leeway and max_age must not be negative")
	}
	return &sessions{cfg: cfg, sealer: sl,
		revokedSID: expiring.New[string, struct{}](maxRevocations),
		revokedSub: expiring.New[string, int64](maxRevocations),
		refreshed:  expiring.New[[sha256.Size]byte, *session](10_000),
		opened:     expiring.New[string, *session](10_000),
	}, nil
}

// cookie is a cookie of this provider's with the configured attributes.
func (s *sessions) cookie(name, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: path, Domain: s.cfg.CookieDomain, MaxAge: maxAge,
		HttpOnly: true, Secure: !s.cfg.Insecure, SameSite: http.SameSiteLaxMode}
}

// read returns the session of r's cookies: nil when there is none, or when it does not open,
// has ended (MaxAge) or was logged out.
func (s *sessions) read(r *http.Request, now time.Time) *session {
	first, err := r.Cookie(s.cfg.CookieName)
	if err != nil || first.Value == "" {
		return nil
	}
	v := first.Value
	if len(v) == maxCookieChunk {
		var b strings.Builder
		b.WriteString(v)
		for i := 1; i < maxCookieChunks; i++ {
			c, err := r.Cookie(s.chunkName(i))
			if err != nil || c.Value == "" {
				break
			}
			b.WriteString(c.Value)
			if len(c.Value) < maxCookieChunk {
				break
			}
		}
		v = b.String()
	}
	ss, ok := s.opened.Get(v, now)
	if !ok {
		if ss = s.open(v); ss == nil {
			return nil
		}
		s.opened.Put(v, ss, now.Add(openedTTL), now)
	}
	if !s.live(ss, now) {
		return nil
	}
	// Shared with the other requests of the session: callers copy before they change it.
	return ss
}

// open unseals a session; nil when v is none (tampered, foreign, not a session).
func (s *sessions) open(v string) *session {
	pt, ok := s.sealer.open("session", v)
	if !ok {
		return nil
	}
	ss := new(session)
	if err := json.Unmarshal(pt, ss); err != nil || ss.Access == "" {
		return nil
	}
	return ss
}

// live reports a session within max_age and not logged out.
func (s *sessions) live(ss *session, now time.Time) bool {
	return now.Sub(time.Unix(ss.Created, 0)) < s.cfg.MaxAge && !s.revoked(ss, now)
}

// load returns the session of r from the cookie or, with a Store, from the store by the
// cookie's id. No session is (nil, nil); an error is a store that cannot be asked.
func (s *sessions) load(ctx context.Context, r *http.Request, now time.Time) (*session, error) {
	if s.cfg.Store == nil {
		return s.read(r, now), nil
	}
	c, err := r.Cookie(s.cfg.CookieName)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	ref, ok := s.sealer.open("session-id", c.Value)
	if !ok {
		return nil, nil
	}
	v, ok, err := s.cfg.Store.Get(ctx, s.sessionKey(string(ref)))
	if err != nil {
		return nil, fmt.Errorf("reading a session: %w: %w", idp.ErrUnavailable, err)
	}
	if !ok {
		return nil, nil
	}
	ss := s.open(v)
	if ss == nil || !s.live(ss, now) {
		return nil, nil
	}
	ss.ref = string(ref)
	return ss, nil
}

// sessionKey names a session in the store: a hash of its id, so that the store's keys are
// no cookie.
func (s *sessions) sessionKey(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return s.cfg.CookieName + ":" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// save writes ss: to the cookies, or to the store (a new session gets an id and its cookie).
func (s *sessions) save(ctx context.Context, resp *Response, ss *session) error {
	if s.cfg.Store == nil {
		return s.write(resp, ss)
	}
	pt, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	ttl := time.Until(time.Unix(ss.Created, 0).Add(s.cfg.MaxAge))
	if ttl < time.Second {
		ttl = time.Second
	}
	newRef := ss.ref == ""
	if newRef {
		ss.ref = randomString(32)
	}
	if err := s.cfg.Store.Set(ctx, s.sessionKey(ss.ref), s.sealer.seal("session", pt), ttl); err != nil {
		return fmt.Errorf("storing a session: %w: %w", idp.ErrUnavailable, err)
	}
	if newRef {
		resp.SetCookie(s.cookie(s.cfg.CookieName, s.sealer.seal("session-id", []byte(ss.ref)), s.cfg.CookiePath, int(ttl/time.Second)))
	}
	return nil
}

// drop ends ss in the store (when it has one) and clears r's session cookies.
func (s *sessions) drop(ctx context.Context, r *http.Request, resp *Response, ss *session) error {
	s.clear(r, resp)
	if s.cfg.Store != nil && ss != nil && ss.ref != "" {
		if err := s.cfg.Store.Delete(ctx, s.sessionKey(ss.ref)); err != nil {
			return fmt.Errorf("deleting a session: %w: %w", idp.ErrUnavailable, err)
		}
	}
	return nil
}

// revoked reports a session ended by a logout.
func (s *sessions) revoked(ss *session, now time.Time) bool {
	if ss.SID != "" {
		if _, ok := s.revokedSID.Get(ss.SID, now); ok {
			return true
		}
	}
	if ss.Subject != "" {
		if at, ok := s.revokedSub.Get(ss.Subject, now); ok && ss.Created <= at {
			return true
		}
	}
	return false
}

// revoke ends the sessions of sid, or, without one, every session of sub begun until now, here
// and in the shared store.
func (s *sessions) revoke(ctx context.Context, sid, sub string, now time.Time) error {
	until := now.Add(s.cfg.MaxAge)
	key, value := "", now.Unix()
	switch {
	case sid != "":
		s.revokedSID.Put(sid, struct{}{}, until, now)
		key = "sid:" + sid
	case sub != "":
		s.revokedSub.Put(sub, value, until, now)
		key = "sub:" + sub
	default:
		return nil
	}
	if st := s.cfg.Revocations; st != nil && st.Enabled() {
		if err := st.Revoke(ctx, s.storeKey(key), value, s.cfg.MaxAge); err != nil {
			return fmt.Errorf("recording a logout: %w: %w", idp.ErrUnavailable, err)
		}
	}
	return nil
}

// storeKey names a revocation in the shared store.
func (s *sessions) storeKey(k string) string { return s.cfg.CookieName + ":" + k }

// revokedShared asks the shared store whether another replica ended ss.
func (s *sessions) revokedShared(ctx context.Context, ss *session) (bool, error) {
	st := s.cfg.Revocations
	if st == nil || !st.Enabled() {
		return false, nil
	}
	keys := make([]string, 0, 2)
	if ss.SID != "" {
		keys = append(keys, s.storeKey("sid:"+ss.SID))
	}
	if ss.Subject != "" {
		keys = append(keys, s.storeKey("sub:"+ss.Subject))
	}
	if len(keys) == 0 {
		return false, nil
	}
	got, err := st.Lookup(ctx, keys...)
	if err != nil {
		return false, fmt.Errorf("asking whether a session was logged out: %w: %w", idp.ErrUnavailable, err)
	}
	if ss.SID != "" {
		if _, ok := got[s.storeKey("sid:"+ss.SID)]; ok {
			return true, nil
		}
	}
	if at, ok := got[s.storeKey("sub:"+ss.Subject)]; ok && ss.Created <= at {
		return true, nil
	}
	return false, nil
}

// write sets ss as the session cookie(s) on resp. The reader goes on to the next chunk after a
// full one, so the chunk after the last is cleared: a larger earlier session's rest never
// continues this one.
func (s *sessions) write(resp *Response, ss *session) error {
	pt, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	v := s.sealer.seal("session", pt)
	if len(v) > maxCookieChunk*(maxCookieChunks-1) {
		return errors.New("the session's tokens are too large for its cookies")
	}
	maxAge := int(time.Until(time.Unix(ss.Created, 0).Add(s.cfg.MaxAge)) / time.Second)
	if maxAge < 1 {
		maxAge = 1
	}
	i := 0
	for ; v != ""; i++ {
		n := min(len(v), maxCookieChunk)
		resp.SetCookie(s.cookie(s.chunkName(i), v[:n], s.cfg.CookiePath, maxAge))
		v = v[n:]
	}
	resp.SetCookie(s.cookie(s.chunkName(i), "", s.cfg.CookiePath, -1))
	return nil
}

func (s *sessions) chunkName(i int) string {
	if i == 0 {
		return s.cfg.CookieName
	}
	return s.cfg.CookieName + "." + strconv.Itoa(i)
}

// clear removes the session cookies.
func (s *sessions) clear(r *http.Request, resp *Response) {
	for i := 0; i < maxCookieChunks; i++ {
		name := s.chunkName(i)
		if _, err := r.Cookie(name); err != nil {
			break
		}
		resp.SetCookie(s.cookie(name, "", s.cfg.CookiePath, -1))
	}
}

// isSessionCookie reports a cookie of the sessions, which never goes upstream.
func (s *sessions) isSessionCookie(name string) bool {
	if name == s.cfg.CookieName || name == s.cfg.CookieName+"_flow" {
		return true
	}
	rest, ok := strings.CutPrefix(name, s.cfg.CookieName+".")
	if !ok {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil
}
