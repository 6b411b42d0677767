package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/expiring"
	"github.com/portcullis/portcullis/internal/jwsshape"
)

// Config configures an oidc provider: bearer tokens of one OpenID Connect issuer, verified
// locally against the issuer's JWKS and optionally introspected (RFC 7662).
type Config struct {
	Name string
	// Issuer is the issuer URL; its /.well-known/openid-configuration is fetched lazily.
	Issuer string
	// Audience, when set, must be in the token's aud claim. With CheckAZP a token whose azp
	// (authorized party) equals Audience is accepted as well: Keycloak puts the requesting
	// client in azp and may leave it out of aud.
	Audience string
	CheckAZP bool
	// SubjectClaim names the claim that maps a token to a consumer (the binding's subject).
	// Default "sub"; "azp" or "preferred_username" are common with Keycloak.
	SubjectClaim string
	// Algorithms are the accepted signature algorithms. Default RS256. Only asymmetric
	// algorithms are allowed: a JWKS holds public keys, and accepting HS* would let a public key
	// be used as an HMAC secret.
	Algorithms []string
	// Leeway is the clock skew tolerated on exp and nbf.
	Leeway time.Duration

	// Header is where the token is read first. Default "Authorization", where the "Bearer"
	// scheme is required; any other header may hold the raw token or "Bearer <token>".
	Header string
	// Query and Cookie, when set, are read when the header carries no token.
	Query  string
	Cookie string
	// HideCredentials removes the token from the request before it goes upstream.
	HideCredentials bool
	// Realm is the WWW-Authenticate realm; defaults to Name.
	Realm string

	// ClientID and ClientSecret authenticate the gateway at the issuer (introspection, and
	// Keycloak's Authorization Services). They are never logged.
	ClientID     string
	ClientSecret string
	// Introspection asks the issuer's RFC 7662 introspection endpoint about every token (after
	// local verification of JWTs), so that revoked tokens and opaque tokens are judged by the
	// issuer. Answers are cached by token hash until the earlier of the token's expiry and
	// IntrospectionTTL (default 30s).
	Introspection    bool
	IntrospectionTTL time.Duration

	// Timeout bounds each call to the issuer. Default 5s.
	Timeout time.Duration
	// JWKSRefreshMinInterval is the least time between two fetches of the JWKS (and between two
	// attempts at discovery), so that tokens with random kids cannot make the gateway hammer the
	// issuer. Default 10s.
	JWKSRefreshMinInterval time.Duration
	// JWKSMaxAge is how long fetched keys are used before they are refreshed on the next use, so
	// that keys the issuer retired stop verifying. A failed refresh keeps the old keys.
	// Default 15m.
	JWKSMaxAge time.Duration
	// CacheSize bounds the verified-token and introspection caches (entries each). Default 10000.
	CacheSize int

	// HTTPClient calls the issuer. Default: a client with Timeout.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnIdPCall, when set, records every call to the issuer (op: "discovery", "jwks",
	// "introspection", and "uma" for Keycloak). err is nil on success.
	OnIdPCall func(provider, op string, d time.Duration, err error)
	// OnCache, when set, records cache lookups (cache: "token", "jwks", "introspection", "uma").
	OnCache func(provider, cache string, hit bool)

	// Session, when set, signs people in with a browser (see SessionConfig); it needs ClientID.
	Session *SessionConfig
}

// Defaults of Config.
const (
	DefaultTimeout                = 5 * time.Second
	DefaultJWKSRefreshMinInterval = 10 * time.Second
	DefaultJWKSMaxAge             = 15 * time.Minute
	DefaultIntrospectionTTL       = 30 * time.Second
	defaultOIDCCacheSize          = 10000
)

// oidcAlgorithms are the signature algorithms an oidc provider may accept.
var oidcAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// OIDC is the generic OpenID Connect provider. It is safe for concurrent use, does no network
// I/O when built and starts no goroutines: discovery and the JWKS are fetched on first use (or by
// Ready), and failed fetches are retried on later uses, rate-limited.
type Provider struct {
	cfg    Config
	logger *slog.Logger
	client *http.Client
	now    func() time.Time

	authHeader bool // cfg.Header is Authorization: the Bearer scheme is required
	algs       map[string]bool

	missing   *idp.Denial
	invalid   *idp.Denial
	forbidden *idp.Denial

	keys *oidcKeys

	tokenCache *expiring.Map[[sha256.Size]byte, *verifiedToken]
	introCache *expiring.Map[[sha256.Size]byte, *introspection]
	introSF    singleflight.Group

	// sess is the browser sign-in; nil without a session block. refreshSF joins the refreshes
	// of one session.
	sess      *sessions
	refreshSF singleflight.Group
}

var (
	_ idp.Provider = (*Provider)(nil)
	_ idp.Decliner = (*Provider)(nil)
	_ idp.Readier  = (*Provider)(nil)
)

// New validates cfg and builds the provider. It does no network I/O.
func New(cfg Config, logger *slog.Logger) (*Provider, error) {
	algs, sess, err := validate(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuring oidc provider %q: %w", cfg.Name, err)
	}
	cfg = withDefaults(cfg)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.Timeout}
	}

	challenge := `Bearer realm="` + cfg.Realm + `"`
	o := &Provider{
		cfg:        cfg,
		logger:     logger.With("provider", cfg.Name),
		client:     client,
		now:        cfg.Now,
		authHeader: strings.EqualFold(cfg.Header, "Authorization"),
		algs:       algs,
		missing:    idp.Unauthorized("Missing bearer token in request", challenge),
		invalid:    idp.Unauthorized("Invalid token", challenge+`, error="invalid_token"`),
		forbidden:  idp.Forbidden("Token does not grant access to this resource"),
		tokenCache: expiring.New[[sha256.Size]byte, *verifiedToken](cfg.CacheSize),
		introCache: expiring.New[[sha256.Size]byte, *introspection](cfg.CacheSize),
		sess:       sess,
	}
	o.keys = &oidcKeys{o: o}
	return o, nil
}

// defaultAlgorithms are the token algorithms accepted when the configuration names none.
var defaultAlgorithms = []string{"RS256"}

// validate collects every problem of cfg, and builds what checking it already made: the
// accepted algorithms and the session sealer.
func validate(cfg Config) (algs map[string]bool, sess *sessions, err error) {
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, errors.New("oidc provider needs a name"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("oidc provider needs an issuer"))
	} else if u, err := url.Parse(cfg.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("issuer %q is not an http(s) URL", cfg.Issuer))
	}
	if cfg.CheckAZP && cfg.Audience == "" {
		errs = append(errs, errors.New("check_azp needs an audience"))
	}
	algList := cfg.Algorithms
	if len(algList) == 0 {
		algList = defaultAlgorithms
	}
	algs = make(map[string]bool, len(algList))
	for _, a := range algList {
		if !slices.Contains(oidcAlgorithms, a) {
			errs = append(errs, fmt.Errorf("algorithm %q is not accepted (one of %s)", a, strings.Join(oidcAlgorithms, ", ")))
			continue
		}
		algs[a] = true
	}
	if cfg.Introspection && (cfg.ClientID == "" || cfg.ClientSecret == "") {
		errs = append(errs, errors.New("introspection needs client_id and client_secret"))
	}
	if cfg.Leeway < 0 || cfg.Timeout < 0 || cfg.JWKSRefreshMinInterval < 0 || cfg.IntrospectionTTL < 0 || cfg.JWKSMaxAge < 0 {
		errs = append(errs, errors.New("leeway, timeout, jwks_refresh_min_interval and introspection_ttl must not be negative"))
	}
	if cfg.Session != nil {
		if cfg.ClientID == "" {
			errs = append(errs, errors.New("a session needs client_id (the client people sign in with)"))
		}
		var err error
		if sess, err = newSessions(cfg.Name, *cfg.Session); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return algs, sess, nil
}

// withDefaults fills in what cfg leaves out.
func withDefaults(cfg Config) Config {
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = slices.Clone(defaultAlgorithms)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.SubjectClaim == "" {
		cfg.SubjectClaim = "sub"
	}
	if cfg.Header == "" {
		cfg.Header = "Authorization"
	}
	if cfg.Realm == "" {
		cfg.Realm = cfg.Name
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.JWKSRefreshMinInterval == 0 {
		cfg.JWKSRefreshMinInterval = DefaultJWKSRefreshMinInterval
	}
	if cfg.JWKSMaxAge == 0 {
		cfg.JWKSMaxAge = DefaultJWKSMaxAge
	}
	if cfg.IntrospectionTTL == 0 {
		cfg.IntrospectionTTL = DefaultIntrospectionTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = defaultOIDCCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

func (o *Provider) Name() string { return o.cfg.Name }
func (o *Provider) Type() string { return "oidc" }

// Issuer is the configured issuer without a trailing slash.
func (o *Provider) Issuer() string { return o.cfg.Issuer }

// Config returns the configuration with defaults applied.
func (o *Provider) Config() Config { return o.cfg }

// HTTPClient is the client used to call the issuer.
func (o *Provider) HTTPClient() *http.Client { return o.client }

// Logger is the provider's logger.
func (o *Provider) Logger() *slog.Logger { return o.logger }

// Now reads the provider's clock.
func (o *Provider) Now() time.Time { return o.now() }

// Missing is the 401 answer when the chain needs this provider and the request has no token.
func (o *Provider) Missing() *idp.Denial { return o.missing }

// Unknown is the 401 answer for a valid token whose subject no consumer is bound to.
func (o *Provider) Unknown() *idp.Denial {
	return o.invalid.WithReason("no consumer is bound to this token's %s", o.cfg.SubjectClaim)
}

// Invalid returns the 401 invalid_token denial with a reason.
func (o *Provider) Invalid(format string, args ...any) *idp.Denial {
	return o.invalid.WithReason(format, args...)
}

// Forbidden returns the 403 denial with a reason.
func (o *Provider) Forbidden(format string, args ...any) *idp.Denial {
	return o.forbidden.WithReason(format, args...)
}

// ObserveCall reports an IdP call to the OnIdPCall hook.
func (o *Provider) ObserveCall(op string, start time.Time, err error) {
	if o.cfg.OnIdPCall != nil {
		o.cfg.OnIdPCall(o.cfg.Name, op, time.Since(start), err)
	}
}

// ObserveCache reports a cache lookup to the OnCache hook.
func (o *Provider) ObserveCache(cache string, hit bool) {
	if o.cfg.OnCache != nil {
		o.cfg.OnCache(o.cfg.Name, cache, hit)
	}
}

// Binding is a consumer's binding to an oidc provider: the token subject that names the
// consumer, and conditions the token must meet.
type Binding struct {
	// Subject is the value of the provider's subject claim.
	Subject string
	// Claims maps a claim name to its accepted values: the claim (or, for a list claim, one of
	// its elements) must equal one of them.
	Claims map[string][]string
	// Scopes must all be in the token's scope claim.
	Scopes []string
	id     string
}

func (b *Binding) Lookup() string     { return b.Subject }
func (b *Binding) Identifier() string { return b.id }

// ClaimMatched reports a binding without subject: it names its consumer for every verified
// token of the provider that meets its conditions.
func (b *Binding) ClaimMatched() bool { return b.Subject == "" }

var _ idp.ClaimMatched = (*Binding)(nil)

// CompileBinding compiles the subject, claims and scopes of spec for provider name. It
// ignores the Keycloak-only fields (the keycloak provider reads those).
func CompileBinding(name string, spec idp.BindingSpec) (*Binding, error) {
	var errs []error
	claims := make(map[string][]string, len(spec.Claims))
	for k, vs := range spec.Claims {
		if k == "" || len(vs) == 0 {
			errs = append(errs, fmt.Errorf("claims: %q needs a claim name and at least one value", k))
			continue
		}
		claims[k] = slices.Clone(vs)
	}
	for _, s := range spec.Scopes {
		if s == "" || strings.ContainsAny(s, " \t") {
			errs = append(errs, fmt.Errorf("scopes: %q is not a scope", s))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// A claim-matched binding is named by its consumer: the person is in X-Consumer-Subject.
	idName := spec.Subject
	if idName == "" {
		idName = spec.Consumer
	}
	return &Binding{Subject: spec.Subject, Claims: claims, Scopes: slices.Clone(spec.Scopes), id: idp.BindingSpec{IdP: name, ID: spec.ID}.CredentialID(idName)}, nil
}

// Compile compiles a binding. The Keycloak-only conditions are refused here.
func (o *Provider) Compile(spec idp.BindingSpec) (idp.Binding, error) {
	var errs []error
	if len(spec.RealmRoles) > 0 {
		errs = append(errs, errors.New("realm_roles needs a keycloak provider"))
	}
	if len(spec.ClientRoles) > 0 {
		errs = append(errs, errors.New("client_roles needs a keycloak provider"))
	}
	if len(spec.Groups) > 0 {
		errs = append(errs, errors.New("groups needs a keycloak provider (or a claims condition on the groups claim)"))
	}
	if len(spec.Permissions) > 0 {
		errs = append(errs, errors.New("permissions needs a keycloak provider"))
	}
	b, err := CompileBinding(o.cfg.Name, spec)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b, nil
}

// Token is the state of a verified token, kept in Credential.State between Extract and
// Verify. Providers built on OIDC (Keycloak) read it with TokenOf.
type Token struct {
	// Raw is the token as presented. It is a secret: never log it.
	Raw string
	// Hash is sha256(Raw), the key of every per-token cache.
	Hash [sha256.Size]byte
	// Expiry is the token's exp (zero when it has none).
	Expiry time.Time
	// Claims are the verified claims (for an opaque token: the introspection answer).
	Claims map[string]any
}

// TokenOf returns the verified token of a credential this provider extracted.
func TokenOf(cred *idp.Credential) (*Token, bool) {
	if cred == nil {
		return nil, false
	}
	t, ok := cred.State.(*Token)
	return t, ok
}

// Extract finds the bearer token, and when it is this issuer's, verifies it.
//
// A compact JWS whose (unverified) iss is another issuer's is "not mine", so that several
// providers, and jwt-auth, can read the same header. A value that is not a JWS is not mine in the
// Authorization header unless introspection is on (opaque tokens); in a header, query parameter
// or cookie of its own it is an invalid token.
func (o *Provider) Extract(ctx context.Context, r *http.Request) (*idp.Credential, error) {
	tok, tc, ok := o.find(r)
	if !ok {
		if o.sess != nil {
			return o.extractSession(ctx, r)
		}
		return nil, nil
	}
	return o.credential(ctx, tok, tc)
}

// credential verifies a token found in a request (or a session) and builds its credential.
func (o *Provider) credential(ctx context.Context, tok string, tc tokenCheck) (*idp.Credential, error) {
	if !tc.hashed {
		tc.hash = credential.Sum(tok)
	}
	var claims map[string]any
	var userinfo string
	var err error
	switch {
	case tc.cached != nil:
		o.ObserveCache("token", true)
		claims, userinfo = tc.cached.claims, tc.cached.userinfo
	case tc.compact:
		var vt *verifiedToken
		vt, err = o.verifyJWTCached(ctx, tok, tc.hash)
		if vt != nil {
			claims, userinfo = vt.claims, vt.userinfo
		}
	default:
		claims, err = o.introspectOpaque(ctx, tok)
	}
	if err != nil {
		return nil, err
	}
	st := &Token{Raw: tok, Hash: tc.hash, Claims: claims, Expiry: claimTime(claims["exp"])}
	if o.cfg.Introspection && tc.compact {
		if err := o.checkActive(ctx, st); err != nil {
			return nil, err
		}
	}
	sub := claimString(claims[o.cfg.SubjectClaim])
	if sub == "" {
		return nil, o.invalid.WithReason("token has no %s claim", o.cfg.SubjectClaim)
	}
	return &idp.Credential{Lookup: sub, Subject: sub, Claims: claims, Userinfo: userinfo, State: st}, nil
}

// Declined refuses a token in this provider's places that no provider claimed: one of an issuer
// no provider of the policy accepts, or an opaque one nobody introspects. Such a caller has a
// token, an invalid one here, and RFC 6750 calls that invalid_token, not a missing token.
func (o *Provider) Declined(r *http.Request) *idp.Denial {
	for _, v := range r.Header.Values(o.cfg.Header) {
		t, ok := oidcCutBearer(v)
		if !ok {
			if o.authHeader {
				continue // another scheme (Basic, HMAC): not a bearer token
			}
			t = strings.TrimSpace(v) // an own header may carry the bare token
		}
		if t != "" {
			return o.declined(t)
		}
	}
	if o.cfg.Query != "" && r.URL.RawQuery != "" {
		if v := r.URL.Query().Get(o.cfg.Query); v != "" {
			return o.declined(v)
		}
	}
	if o.cfg.Cookie != "" {
		if c, err := r.Cookie(o.cfg.Cookie); err == nil && c.Value != "" {
			return o.declined(c.Value)
		}
	}
	return nil
}

func (o *Provider) declined(tok string) *idp.Denial {
	if jwsshape.IsCompact(tok, false) {
		if iss, ok := oidcUnverifiedIssuer(tok); ok {
			if len(iss) > 200 {
				iss = iss[:200] + "…" // the caller wrote it: keep the log line bounded
			}
			return o.invalid.WithReason("no identity provider accepts the token's issuer %q", iss)
		}
	}
	return o.invalid.WithReason("no identity provider claims the bearer token")
}

// tokenCheck is what deciding whether a token is ours learnt about it, so that Extract does
// not learn it again: its shape, its hash, and its verification when it was found cached.
type tokenCheck struct {
	compact bool
	hashed  bool
	hash    [sha256.Size]byte
	cached  *verifiedToken
}

// find returns the first token of this provider: header, then query, then cookie.
func (o *Provider) find(r *http.Request) (string, tokenCheck, bool) {
	for _, v := range r.Header.Values(o.cfg.Header) {
		if tok, tc, ok := o.headerToken(v); ok {
			return tok, tc, true
		}
	}
	if o.cfg.Query != "" && r.URL.RawQuery != "" {
		if v := r.URL.Query().Get(o.cfg.Query); v != "" {
			if tc, ok := o.checkToken(v, false); ok {
				return v, tc, true
			}
		}
	}
	if o.cfg.Cookie != "" {
		if c, err := r.Cookie(o.cfg.Cookie); err == nil && c.Value != "" {
			if tc, ok := o.checkToken(c.Value, false); ok {
				return c.Value, tc, true
			}
		}
	}
	return "", tokenCheck{}, false
}

// headerToken returns the token of a header value when it is this provider's.
func (o *Provider) headerToken(v string) (string, tokenCheck, bool) {
	if o.authHeader {
		t, ok := oidcCutBearer(v)
		if !ok {
			return "", tokenCheck{}, false
		}
		tc, ok := o.checkToken(t, true)
		return t, tc, ok
	}
	t := o.stripBearer(v)
	tc, ok := o.checkToken(t, false)
	return t, tc, ok
}

// headerOurs reports whether a header value carries this provider's token.
func (o *Provider) headerOurs(v string) bool {
	_, _, ok := o.headerToken(v)
	return ok
}

func (o *Provider) stripBearer(v string) string {
	if t, ok := oidcCutBearer(v); ok {
		return t
	}
	return strings.TrimSpace(v)
}

// tokenOurs applies the chain rule to a token found where this provider reads.
func (o *Provider) tokenOurs(tok string, shared bool) bool {
	_, ok := o.checkToken(tok, shared)
	return ok
}

// checkToken is tokenOurs, with what it learnt about the token.
func (o *Provider) checkToken(tok string, shared bool) (tokenCheck, bool) {
	var tc tokenCheck
	if tok == "" {
		return tc, false
	}
	if tc.compact = jwsshape.IsCompact(tok, false); !tc.compact {
		return tc, o.cfg.Introspection || !shared
	}
	// A token this provider verified before is ours without decoding it again.
	tc.hash, tc.hashed = credential.Sum(tok), true
	if vt, ok := o.tokenCache.Get(tc.hash, o.now()); ok {
		tc.cached = vt
		return tc, true
	}
	iss, ok := oidcUnverifiedIssuer(tok)
	// A JWS without a readable iss cannot be attributed; in a shared header it is left to
	// jwt-auth, in our own location it is ours (and invalid).
	if !ok {
		return tc, !shared
	}
	return tc, strings.TrimRight(iss, "/") == o.cfg.Issuer
}

// oidcCutBearer returns the token of an "Bearer <token>" value (scheme case-insensitive).
func oidcCutBearer(v string) (string, bool) {
	const p = "bearer "
	if len(v) <= len(p) || !strings.EqualFold(v[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(v[len(p):]), true
}

// oidcUnverifiedIssuer reads the iss claim of a compact JWS without verifying it. It is only
// used to decide which provider a token belongs to, never to trust it.
func oidcUnverifiedIssuer(tok string) (string, bool) {
	first := strings.IndexByte(tok, '.')
	last := strings.LastIndexByte(tok, '.')
	payload, err := base64.RawURLEncoding.DecodeString(tok[first+1 : last])
	if err != nil {
		return "", false
	}
	var p struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &p); err != nil || p.Iss == "" {
		return "", false
	}
	return p.Iss, true
}

// verifyJWTCached remembers verified tokens by hash until their expiry (at most
// verifiedTokenTTL), so that a client reusing its token costs a hash, not a signature check.
// The cached claims are shared: nobody may modify Credential.Claims.
func (o *Provider) verifyJWTCached(ctx context.Context, tok string, hash [sha256.Size]byte) (*verifiedToken, error) {
	now := o.now()
	if vt, ok := o.tokenCache.Get(hash, now); ok {
		o.ObserveCache("token", true)
		return vt, nil
	}
	o.ObserveCache("token", false)
	claims, err := o.verifyJWT(ctx, tok)
	if err != nil {
		return nil, err
	}
	until := now.Add(verifiedTokenTTL)
	if exp := claimTime(claims["exp"]).Add(o.cfg.Leeway); exp.Before(until) {
		until = exp
	}
	vt := &verifiedToken{claims: claims, userinfo: idp.EncodeUserinfo(claims)}
	o.tokenCache.Put(hash, vt, until, now)
	return vt, nil
}

// verifiedToken is a cached verified token: its claims and their X-Userinfo encoding, so that a
// client reusing its token costs neither a signature check nor a JSON encoding.
type verifiedToken struct {
	claims   map[string]any
	userinfo string
}

// verifiedTokenTTL bounds how long a verified token is trusted without checking its signature
// again, so that a key the issuer withdrew stops verifying soon even for long-lived tokens.
const verifiedTokenTTL = 5 * time.Minute

// verifyJWT checks a compact JWS: algorithm, signature against the issuer's keys, iss, aud, exp,
// nbf. It returns the verified claims, a *Denial, or an error wrapping ErrUnavailable.
func (o *Provider) verifyJWT(ctx context.Context, tok string) (map[string]any, error) {
	hdr, err := oidcHeader(tok)
	if err != nil {
		// Not err: a JSON error may quote the header's bytes.
		return nil, o.invalid.WithReason("malformed token header: not base64url of a JSON object with a string alg")
	}
	if !o.algs[hdr.Alg] {
		return nil, o.invalid.WithReason("token algorithm %s is not accepted", jwsshape.ReasonAlg(hdr.Alg))
	}
	if len(hdr.Crit) > 0 {
		return nil, o.invalid.WithReason("token has critical header parameters, none is supported")
	}
	payload, err := o.keys.verify(ctx, tok, hdr)
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, o.invalid.WithReason("token payload is not a JSON object")
	}
	if err := o.validateClaims(claims, true); err != nil {
		return nil, err
	}
	return claims, nil
}

type oidcJOSEHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Crit []string `json:"crit"`
}

func oidcHeader(tok string) (oidcJOSEHeader, error) {
	var h oidcJOSEHeader
	raw, err := base64.RawURLEncoding.DecodeString(tok[:strings.IndexByte(tok, '.')])
	if err != nil {
		return h, err
	}
	err = json.Unmarshal(raw, &h)
	return h, err
}

// validateClaims checks iss, aud (or azp), exp and nbf. requireExp is false for introspection
// answers, whose active flag already says the token is live.
func (o *Provider) validateClaims(claims map[string]any, requireExp bool) error {
	if iss, ok := claims["iss"].(string); ok || requireExp {
		if strings.TrimRight(iss, "/") != o.cfg.Issuer {
			return o.invalid.WithReason("token issuer %q is not %q", iss, o.cfg.Issuer)
		}
	}
	if o.cfg.Audience != "" {
		okAud := claimContains(claims["aud"], o.cfg.Audience)
		if !okAud && o.cfg.CheckAZP {
			okAud = claimString(claims["azp"]) == o.cfg.Audience
		}
		if !okAud {
			return o.invalid.WithReason("token audience does not include %q", o.cfg.Audience)
		}
	}
	now := o.now()
	exp := claimTime(claims["exp"])
	switch {
	case exp.IsZero() && requireExp:
		return o.invalid.WithReason("token has no exp claim")
	case !exp.IsZero() && !now.Before(exp.Add(o.cfg.Leeway)):
		return o.invalid.WithReason("token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if nbf := claimTime(claims["nbf"]); !nbf.IsZero() && now.Add(o.cfg.Leeway).Before(nbf) {
		return o.invalid.WithReason("token is not valid before %s", nbf.UTC().Format(time.RFC3339))
	}
	return nil
}

// Verify checks the binding's conditions: the subject (already matched by the index lookup),
// claims and scopes. An unmet condition is a 403.
func (o *Provider) Verify(_ context.Context, _ *http.Request, cred *idp.Credential, b idp.Binding) error {
	ob, ok := b.(*Binding)
	if !ok {
		return fmt.Errorf("verifying %s: binding of type %T is not an oidc binding", o.cfg.Name, b)
	}
	return o.VerifyConditions(cred, ob)
}

// VerifyConditions checks an OIDC binding against a credential's claims.
func (o *Provider) VerifyConditions(cred *idp.Credential, b *Binding) error {
	if b.Subject != "" && cred.Lookup != b.Subject {
		return o.invalid.WithReason("token subject does not match the binding")
	}
	for name, want := range b.Claims {
		if !claimMatches(cred.Claims[name], want) {
			return o.forbidden.WithReason("claim %q is not one of %v", name, want)
		}
	}
	if len(b.Scopes) > 0 {
		have := tokenScopes(cred.Claims)
		for _, s := range b.Scopes {
			if !slices.Contains(have, s) {
				return o.forbidden.WithReason("token lacks scope %q", s)
			}
		}
	}
	return nil
}

// HideCredentials removes this provider's token from the request when configured to.
// The session's cookies never go upstream, whether or not hide_credentials is set.
func (o *Provider) HideCredentials(r *http.Request) {
	o.hideSessionCookies(r)
	if !o.cfg.HideCredentials {
		return
	}
	credential.HideHeader(r.Header, o.cfg.Header, o.headerOurs)
	credential.HideQuery(r.URL, o.cfg.Query, func(v string) bool { return o.tokenOurs(v, false) })
	if o.cfg.Cookie != "" {
		credential.HideCookies(r.Header, func(name, value string) bool { return name == o.cfg.Cookie && o.tokenOurs(value, false) })
	}
}

// Ready reports whether the issuer can be reached: discovery has succeeded and the JWKS was
// fetched (a refresh is attempted, rate-limited). It returns an error wrapping ErrUnavailable
// otherwise; cached keys still verify tokens meanwhile.
func (o *Provider) Ready(ctx context.Context) error {
	return o.keys.ready(ctx)
}

// Endpoints are the issuer's endpoints from discovery.
type Endpoints struct {
	Token         string
	Introspection string
	JWKS          string
}

// Endpoints returns the discovered endpoints, running discovery if it has not succeeded yet
// (rate-limited). The error wraps ErrUnavailable.
func (o *Provider) Endpoints(ctx context.Context) (Endpoints, error) {
	m, err := o.keys.discovery(ctx)
	if err != nil {
		return Endpoints{}, err
	}
	return Endpoints{Token: m.TokenEndpoint, Introspection: m.IntrospectionEndpoint, JWKS: m.JWKSURI}, nil
}

// claimString returns a string claim, or a number claim as text.
func claimString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// claimContains reports whether a string or list claim holds want.
func claimContains(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s == want {
				return true
			}
		}
	case []string:
		return slices.Contains(x, want)
	}
	return false
}

// claimMatches reports whether a claim (or one element of a list claim) is one of want.
func claimMatches(v any, want []string) bool {
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if s := claimString(e); s != "" && slices.Contains(want, s) {
				return true
			}
		}
		return false
	}
	s := claimString(v)
	return s != "" && slices.Contains(want, s)
}

// tokenScopes returns the scopes of a token: the space-separated scope claim, or an scp list.
func tokenScopes(claims map[string]any) []string {
	if s, ok := claims["scope"].(string); ok {
		return strings.Fields(s)
	}
	var out []string
	switch x := claims["scp"].(type) {
	case string:
		out = strings.Fields(x)
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// claimTime reads a NumericDate claim.
func claimTime(v any) time.Time {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return time.Time{}
		}
	default:
		return time.Time{}
	}
	if f <= 0 {
		return time.Time{}
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9))
}
