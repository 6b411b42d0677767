package local

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/expiring"
	"github.com/portcullis/portcullis/internal/jwsshape"
)

// JWTAuthConfig configures a jwt-auth provider (APISIX jwt-auth).
type JWTAuthConfig struct {
	Name string
	// Header, Query and Cookie name where the token is read, in that order. Defaults:
	// "Authorization", "jwt", "jwt". The header value may carry a "Bearer " prefix.
	Header string
	Query  string
	Cookie string
	// HideCredentials removes the token from where it was found before the request goes upstream.
	HideCredentials bool
	// Realm is the WWW-Authenticate realm; defaults to the provider name.
	Realm string
	// KeyClaim is the claim naming the consumer's binding (default "key").
	KeyClaim string
	// Leeway tolerates clock differences when checking exp and nbf.
	Leeway time.Duration
	// ForeignIssuers are the issuers of the policy's OIDC and Keycloak providers: a token issued
	// by one of them belongs to that provider and is not this provider's credential.
	ForeignIssuers []string

	// CacheSize bounds the verified tokens remembered (default 10000; negative disables);
	// CacheMaxTTL caps how long one is remembered (default 5m), also for tokens without exp.
	CacheSize   int
	CacheMaxTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// JWTAuth authenticates a request by a JWS-signed JWT whose key claim names the consumer; the
// consumer's binding pins the algorithm and the secret or public key.
type JWTAuth struct {
	cfg     JWTAuthConfig
	logger  *slog.Logger
	foreign map[string]struct{}
	// headerPlace is where a header token was read, as Peek reports it.
	headerPlace string

	missing   *idp.Denial
	malformed *idp.Denial
	noKey     *idp.Denial
	unknown   *idp.Denial
	failed    *idp.Denial

	cache *expiring.Map[[sha256.Size]byte, jwtVerified]
}

var (
	_ idp.Provider = (*JWTAuth)(nil)
	_ idp.Peeker   = (*JWTAuth)(nil)
)

// NewJWTAuth builds a jwt-auth provider. It does no I/O; an error names an invalid setting.
func NewJWTAuth(cfg JWTAuthConfig, logger *slog.Logger) (*JWTAuth, error) {
	var errs []error
	if cfg.Leeway < 0 {
		errs = append(errs, errors.New("jwt-auth leeway must not be negative"))
	}
	if cfg.CacheMaxTTL < 0 {
		errs = append(errs, errors.New("jwt-auth cache TTL must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Header == "" {
		cfg.Header = "Authorization"
	}
	if cfg.Query == "" {
		cfg.Query = "jwt"
	}
	if cfg.Cookie == "" {
		cfg.Cookie = "jwt"
	}
	if cfg.Realm == "" {
		cfg.Realm = cfg.Name
	}
	if cfg.KeyClaim == "" {
		cfg.KeyClaim = "key"
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.CacheMaxTTL == 0 {
		cfg.CacheMaxTTL = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	challenge := `Bearer realm="` + cfg.Realm + `"`
	j := &JWTAuth{
		cfg:         cfg,
		logger:      logger,
		foreign:     make(map[string]struct{}, len(cfg.ForeignIssuers)),
		headerPlace: "header " + http.CanonicalHeaderKey(cfg.Header) + " JWT",
		missing:     idp.Unauthorized("Missing JWT token in request", challenge),
		malformed:   idp.Unauthorized("JWT token invalid", challenge),
		noKey:       idp.Unauthorized("missing user key in JWT token", challenge),
		unknown:     idp.Unauthorized("Invalid user key in JWT token", challenge),
		failed:      idp.Unauthorized("failed to verify jwt", challenge),
	}
	for _, iss := range cfg.ForeignIssuers {
		j.foreign[iss] = struct{}{}
	}
	if cfg.CacheSize > 0 {
		j.cache = expiring.New[[sha256.Size]byte, jwtVerified](cfg.CacheSize)
	}
	return j, nil
}

func (j *JWTAuth) Name() string { return j.cfg.Name }
func (j *JWTAuth) Type() string { return "jwt-auth" }

type jwtBinding struct {
	key      string
	id       string
	alg      jwa.SignatureAlgorithm
	verifier jws.Verifier
	// verifyKey is the HMAC secret ([]byte) or the raw public key.
	verifyKey any
	// warnings say what is weak about the binding's key.
	warnings []string
}

var _ idp.Warner = (*jwtBinding)(nil)

func (b *jwtBinding) Warnings() []string { return b.warnings }

func (b *jwtBinding) Lookup() string     { return b.key }
func (b *jwtBinding) Identifier() string { return b.id }

// Compile pins the binding's algorithm and parses its key; a key that does not fit the algorithm
// is a policy error, so algorithm confusion is impossible at request time.
func (j *JWTAuth) Compile(spec idp.BindingSpec) (idp.Binding, error) {
	var errs []error
	if spec.Key == "" {
		errs = append(errs, errors.New("jwt-auth binding needs a non-empty key"))
	}
	alg := spec.Algorithm
	if alg == "" {
		alg = "HS256"
	}
	spec.IdP = j.cfg.Name
	b := &jwtBinding{key: spec.Key, id: spec.CredentialID(spec.Key), alg: jwa.SignatureAlgorithm(alg)}
	switch alg {
	case "HS256", "HS384", "HS512":
		if spec.Secret == "" {
			errs = append(errs, fmt.Errorf("jwt-auth algorithm %s needs a secret", alg))
		}
		if spec.PublicKey != "" {
			errs = append(errs, fmt.Errorf("jwt-auth algorithm %s takes a secret, not a public_key", alg))
		}
		b.verifyKey = []byte(spec.Secret)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		if spec.Secret != "" {
			errs = append(errs, fmt.Errorf("jwt-auth algorithm %s takes a public_key, not a secret", alg))
		}
		if spec.PublicKey == "" {
			errs = append(errs, fmt.Errorf("jwt-auth algorithm %s needs a public_key", alg))
			break
		}
		raw, err := parseJWTPublicKey(alg, spec.PublicKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("jwt-auth public_key: %w", err))
			break
		}
		if rk, ok := raw.(*rsa.PublicKey); ok {
			switch bits := rk.N.BitLen(); {
			case bits < minRSABits:
				// Go's crypto/rsa refuses to verify with such a key: every token would fail.
				errs = append(errs, fmt.Errorf("jwt-auth public_key: is a %d-bit RSA key; RSA keys under %d bits cannot verify any token (use %d bits or more)", bits, minRSABits, weakRSABits))
			case bits < weakRSABits:
				b.warnings = append(b.warnings, fmt.Sprintf("jwt-auth public_key is a %d-bit RSA key; keys under %d bits are weak (NIST SP 800-131A)", bits, weakRSABits))
			}
		}
		b.verifyKey = raw
	default:
		errs = append(errs, fmt.Errorf("jwt-auth algorithm %q is not supported", alg))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	v, err := jws.NewVerifier(b.alg)
	if err != nil {
		return nil, fmt.Errorf("creating %s verifier: %w", alg, err)
	}
	b.verifier = v
	return b, nil
}

// RSA key sizes: Go's crypto/rsa verifies nothing with a key under minRSABits; keys under
// weakRSABits load with a warning.
const (
	minRSABits  = 1024
	weakRSABits = 2048
)

// parseJWTPublicKey parses a PEM public key and checks that its type fits alg.
func parseJWTPublicKey(alg, pemText string) (any, error) {
	k, err := jwk.ParseKey([]byte(pemText), jwk.WithPEM(true))
	if err != nil {
		return nil, fmt.Errorf("parsing PEM: %w", err)
	}
	if private, err := jwk.IsPrivateKey(k); err != nil {
		return nil, fmt.Errorf("checking key: %w", err)
	} else if private {
		return nil, errors.New("is a private key; configure the public key only")
	}
	want := jwa.RSA
	crv := ""
	switch alg {
	case "ES256":
		want, crv = jwa.EC, "P-256"
	case "ES384":
		want, crv = jwa.EC, "P-384"
	case "ES512":
		want, crv = jwa.EC, "P-521"
	case "EdDSA":
		want, crv = jwa.OKP, "Ed25519"
	}
	if k.KeyType() != want {
		return nil, fmt.Errorf("is a %s key, algorithm %s needs %s", k.KeyType(), alg, want)
	}
	switch kk := k.(type) {
	case jwk.ECDSAPublicKey:
		if got := kk.Crv().String(); got != crv {
			return nil, fmt.Errorf("is on curve %s, algorithm %s needs %s", got, alg, crv)
		}
	case jwk.OKPPublicKey:
		if got := kk.Crv().String(); got != crv {
			return nil, fmt.Errorf("is on curve %s, algorithm %s needs %s", got, alg, crv)
		}
	}
	var raw any
	if err := k.Raw(&raw); err != nil {
		return nil, fmt.Errorf("exporting key: %w", err)
	}
	return raw, nil
}

// jwtVerified is a token that verified against a binding, remembered until it expires.
type jwtVerified struct {
	lookup  string
	binding idp.Binding
}

type jwtState struct {
	sum [sha256.Size]byte
	// cached is set when the token was found verified in the cache: Verify needs nothing else.
	cached *jwtVerified

	alg          string
	crit         bool
	signingInput string
	signature    []byte
	// badSignature is set when the signature part is not base64url: Verify refuses the token.
	badSignature bool
	exp, nbf     *float64
}

// jwtStripBearer removes an optional case-insensitive "Bearer " prefix.
func jwtStripBearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimLeft(v[7:], " ")
	}
	return v
}

// source is where a token was found.
type jwtSource int

const (
	jwtFromNone jwtSource = iota
	jwtFromHeader
	jwtFromQuery
	jwtFromCookie
)

// find returns this provider's token from the header, the query, then the cookie: JWS-shaped
// and not issued by a foreign issuer. Values of another shape are skipped. dup is set when the
// request carries more than one such token: a place holding two, or two places holding
// different ones. Which of them the chain checked and which the upstream reads would otherwise
// be two different questions.
func (j *JWTAuth) find(r *http.Request) (tok string, src jwtSource, dup bool) {
	take := func(v string, from jwtSource) {
		switch {
		case src == jwtFromNone:
			tok, src = v, from
		case src == from || v != tok:
			dup = true
		}
	}
	seen := jwtFromNone
	for _, v := range r.Header.Values(j.cfg.Header) {
		if t := jwtStripBearer(v); j.ours(t) {
			if seen == jwtFromHeader {
				dup = true
			}
			seen = jwtFromHeader
			take(t, jwtFromHeader)
		}
	}
	if r.URL != nil && r.URL.RawQuery != "" {
		seen = jwtFromNone
		for _, v := range r.URL.Query()[j.cfg.Query] {
			if j.ours(v) {
				if seen == jwtFromQuery {
					dup = true
				}
				seen = jwtFromQuery
				take(v, jwtFromQuery)
			}
		}
	}
	if _, hasCookie := r.Header["Cookie"]; hasCookie {
		seen = jwtFromNone
		for _, c := range r.CookiesNamed(j.cfg.Cookie) {
			if j.ours(c.Value) {
				if seen == jwtFromCookie {
					dup = true
				}
				seen = jwtFromCookie
				take(c.Value, jwtFromCookie)
			}
		}
	}
	return tok, src, dup
}

// jwtShaped reports whether tok has the shape jwt-auth claims: three dot-separated parts, the
// first two base64url and non-empty. The signature part may be anything without a dot: a token
// whose signature does not decode is present and fails to verify, not missing.
func jwtShaped(tok string) bool {
	first := strings.IndexByte(tok, '.')
	if first <= 0 {
		return false
	}
	rest := tok[first+1:]
	second := strings.IndexByte(rest, '.')
	if second <= 0 || strings.IndexByte(rest[second+1:], '.') >= 0 {
		return false
	}
	return jwsshape.IsBase64URL(tok[:first]) && jwsshape.IsBase64URL(rest[:second])
}

// ours reports whether tok is a JWS that is not a foreign issuer's.
func (j *JWTAuth) ours(tok string) bool {
	if !jwtShaped(tok) {
		return false
	}
	if len(j.foreign) == 0 {
		return true
	}
	_, claims, reason := parseJWS(tok)
	if reason != "" {
		// A malformed token is claimed so that it is refused, not passed on.
		return true
	}
	iss, _ := claims["iss"].(string)
	_, foreign := j.foreign[iss]
	return !foreign
}

// Extract finds the token and reads, without verifying it, the key claim that names its binding.
// A token issued by a foreign (OIDC) issuer is not this provider's.
func (j *JWTAuth) Extract(_ context.Context, r *http.Request) (*idp.Credential, error) {
	tok, src, dup := j.find(r)
	if src == jwtFromNone {
		return nil, nil
	}
	if dup {
		return nil, j.malformed.WithReason("the request carries more than one token for this provider")
	}
	sum := credential.Sum(tok)
	if j.cache != nil {
		if v, ok := j.cache.Get(sum, j.cfg.Now()); ok {
			return &idp.Credential{Lookup: v.lookup, State: &jwtState{sum: sum, cached: &v}}, nil
		}
	}
	st, claims, d := parseJWS(tok)
	if d != "" {
		return nil, j.malformed.WithReason("%s", d)
	}
	st.sum = sum
	raw, ok := claims[j.cfg.KeyClaim]
	if !ok {
		return nil, j.noKey.WithReason("token has no %q claim", j.cfg.KeyClaim)
	}
	key, ok := raw.(string)
	if !ok || key == "" {
		return nil, j.noKey.WithReason("claim %q is not a non-empty string", j.cfg.KeyClaim)
	}
	for _, name := range [...]string{"exp", "nbf"} {
		v, present := claims[name]
		if !present {
			continue
		}
		f, isNum := v.(float64)
		if !isNum {
			return nil, j.malformed.WithReason("claim %q is not a number", name)
		}
		if name == "exp" {
			st.exp = &f
		} else {
			st.nbf = &f
		}
	}
	return &idp.Credential{Lookup: key, State: st}, nil
}

// Peek reports where r carries this provider's token and the value of its key claim, read
// without verifying anything, for the chain to tell which of two jwt-auth providers on one place
// owns it.
func (j *JWTAuth) Peek(r *http.Request) (place, lookup string, ok bool) {
	tok, src, dup := j.find(r)
	if src == jwtFromNone || dup {
		return "", "", false
	}
	_, claims, reason := parseJWS(tok)
	if reason != "" {
		return "", "", false
	}
	key, _ := claims[j.cfg.KeyClaim].(string)
	if key == "" {
		return "", "", false
	}
	switch src {
	case jwtFromHeader:
		place = j.headerPlace
	case jwtFromQuery:
		place = "query " + j.cfg.Query
	default:
		place = "cookie " + j.cfg.Cookie
	}
	return place, key, true
}

// parseJWS decodes a compact JWS's header and claims without verifying it. A non-empty reason
// says why the token is malformed.
func parseJWS(tok string) (*jwtState, map[string]any, string) {
	h64, rest, _ := strings.Cut(tok, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	hdrJSON, err := base64.RawURLEncoding.DecodeString(h64)
	if err != nil {
		return nil, nil, "header is not base64url"
	}
	var hdr struct {
		Alg  string          `json:"alg"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, nil, "header is not a JSON object"
	}
	payload, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return nil, nil, "payload is not base64url"
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, nil, "payload is not a JSON object"
	}
	st := &jwtState{
		alg:          hdr.Alg,
		crit:         len(hdr.Crit) > 0,
		signingInput: tok[:len(h64)+1+len(p64)],
	}
	// A signature that does not decode is a token that fails to verify, as in APISIX, whose
	// parser reads the header and the payload only: the key claim still names the binding.
	if st.signature, err = base64.RawURLEncoding.DecodeString(s64); err != nil {
		st.badSignature = true
	}
	return st, claims, ""
}

// Verify checks the token against the binding: the pinned algorithm, the signature, then exp and
// nbf with the leeway. A verified token is remembered until it expires.
func (j *JWTAuth) Verify(_ context.Context, _ *http.Request, cred *idp.Credential, bd idp.Binding) error {
	st, ok := cred.State.(*jwtState)
	b, ok2 := bd.(*jwtBinding)
	if !ok || !ok2 {
		return j.failed.WithReason("credential does not match the binding")
	}
	if st.cached != nil {
		if st.cached.binding == bd {
			return nil
		}
		return j.failed.WithReason("token was verified for another binding")
	}
	if st.badSignature {
		return j.failed.WithReason("signature is not base64url")
	}
	if st.alg != string(b.alg) {
		return j.failed.WithReason("token algorithm %s, binding requires %s", jwsshape.ReasonAlg(st.alg), b.alg)
	}
	if st.crit {
		return j.failed.WithReason("token has critical header extensions, none is supported")
	}
	if err := b.verifier.Verify([]byte(st.signingInput), st.signature, b.verifyKey); err != nil {
		return j.failed.WithReason("signature does not verify with the %s binding key", b.alg)
	}
	now := j.cfg.Now()
	nowSec := float64(now.UnixNano()) / 1e9
	leeway := j.cfg.Leeway.Seconds()
	if st.exp != nil && nowSec > *st.exp+leeway {
		return j.failed.WithReason("token expired %.0fs ago", nowSec-*st.exp)
	}
	if st.nbf != nil && nowSec+leeway < *st.nbf {
		return j.failed.WithReason("token not valid for another %.0fs (nbf)", *st.nbf-nowSec)
	}
	if j.cache != nil {
		until := now.Add(j.cfg.CacheMaxTTL)
		// Comparing in seconds first keeps a huge exp from overflowing the conversion.
		if st.exp != nil {
			if e := *st.exp + leeway; e < float64(until.UnixNano())/1e9 {
				until = time.Unix(0, int64(e*1e9))
			}
		}
		j.cache.Put(st.sum, jwtVerified{lookup: b.key, binding: bd}, until, now)
	}
	return nil
}

func (j *JWTAuth) Missing() *idp.Denial { return j.missing }
func (j *JWTAuth) Unknown() *idp.Denial { return j.unknown.WithReason("no consumer has this key") }

// HideCredentials removes the token from every place it was found, when configured: the same
// token in the header and the query is one credential, and neither copy goes upstream.
func (j *JWTAuth) HideCredentials(r *http.Request) {
	if !j.cfg.HideCredentials {
		return
	}
	_, src, _ := j.find(r)
	if src == jwtFromNone {
		return
	}
	credential.HideHeader(r.Header, j.cfg.Header, func(v string) bool { return j.ours(jwtStripBearer(v)) })
	credential.HideQuery(r.URL, j.cfg.Query, j.ours)
	if j.cfg.Cookie != "" {
		credential.HideCookies(r.Header, func(name, value string) bool { return name == j.cfg.Cookie && j.ours(value) })
	}
}
