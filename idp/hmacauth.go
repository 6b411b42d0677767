package idp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

// HMACAuthConfig configures an hmac-auth provider (APISIX 3.11+ hmac-auth).
type HMACAuthConfig struct {
	Name string
	// HideCredentials removes a Signature Authorization header before the request goes upstream.
	HideCredentials bool
	// Realm is the WWW-Authenticate realm; defaults to the provider name.
	Realm string

	// AllowedAlgorithms are the accepted algorithms (default: all of HMACAlgorithms).
	AllowedAlgorithms []string
	// ClockSkew is the tolerated difference in seconds between the Date header and now: nil means
	// 300, 0 disables the check (and then no Date header is required).
	ClockSkew *int
	// SignedHeaders must all be listed in the signature's headers parameter.
	SignedHeaders []string
	// ValidateRequestBody requires "Digest: SHA-256=<base64 sha256(body)>" to match the body, read
	// up to MaxReqBodySize bytes (default 10 MiB); a bigger body is refused with 413.
	ValidateRequestBody bool
	MaxReqBodySize      int64
	// NonceHeader, when set and covered by a signature, makes a nonce usable once per replay
	// window (twice the clock skew, or 10 minutes when the skew check is disabled). MaxNonces
	// bounds the remembered nonces (default 1<<20); when full, requests fail closed (503).
	NonceHeader string
	MaxNonces   int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// HMACAuth authenticates a request by an HMAC signature over its request line and headers, in
// the format of APISIX 3.11+ hmac-auth (draft-cavage-http-signatures).
type HMACAuth struct {
	cfg     HMACAuthConfig
	logger  *slog.Logger
	skew    time.Duration
	allowed []string
	signed  []string

	missing  *Denial
	invalid  *Denial
	tooLarge *Denial

	nonceTTL time.Duration
	nonces   *expiringMap[string, struct{}]
}

var _ Provider = (*HMACAuth)(nil)

// ErrNonceStoreFull is returned by HMACAuth.Verify when every remembered nonce is still live: the
// request cannot be checked for replay, so it fails closed.
var ErrNonceStoreFull = fmt.Errorf("%w: hmac-auth nonce store is full", ErrUnavailable)

// hmacGenericMessage is the only message hmac-auth gives a client about an invalid request, as in
// APISIX; the precise reason goes to the Denial's Reason.
const hmacGenericMessage = "client request can't be validated"

// NewHMACAuth builds an hmac-auth provider. It does no I/O; an error names every invalid setting.
func NewHMACAuth(cfg HMACAuthConfig, logger *slog.Logger) (*HMACAuth, error) {
	var errs []error
	for _, a := range cfg.AllowedAlgorithms {
		if hmacHash(a) == nil {
			errs = append(errs, fmt.Errorf("hmac-auth allowed_algorithms: %q is not one of %s", a, strings.Join(HMACAlgorithms(), ", ")))
		}
	}
	skew := 300
	if cfg.ClockSkew != nil {
		skew = *cfg.ClockSkew
		if skew < 0 {
			errs = append(errs, errors.New("hmac-auth clock_skew must not be negative"))
		}
	}
	for _, h := range cfg.SignedHeaders {
		if h == "" || strings.ContainsAny(h, " \"") {
			errs = append(errs, fmt.Errorf("hmac-auth signed_headers: %q is not a header name", h))
		}
	}
	if cfg.MaxReqBodySize < 0 {
		errs = append(errs, errors.New("hmac-auth max_req_body_size must not be negative"))
	}
	if strings.ContainsAny(cfg.NonceHeader, " \"") {
		errs = append(errs, fmt.Errorf("hmac-auth nonce_header: %q is not a header name", cfg.NonceHeader))
	}
	if cfg.MaxNonces < 0 {
		errs = append(errs, errors.New("hmac-auth nonce store size must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	if cfg.Realm == "" {
		cfg.Realm = cfg.Name
	}
	if cfg.MaxReqBodySize == 0 {
		cfg.MaxReqBodySize = 10 << 20
	}
	if cfg.MaxNonces == 0 {
		cfg.MaxNonces = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &HMACAuth{
		cfg:     cfg,
		logger:  logger,
		skew:    time.Duration(skew) * time.Second,
		allowed: cfg.AllowedAlgorithms,
	}
	if len(h.allowed) == 0 {
		h.allowed = HMACAlgorithms()
	}
	for _, s := range cfg.SignedHeaders {
		h.signed = append(h.signed, strings.ToLower(s))
	}
	challenge := `Signature realm="` + cfg.Realm + `"`
	h.missing = Unauthorized(hmacGenericMessage+": missing Authorization header", challenge)
	h.invalid = Unauthorized(hmacGenericMessage, challenge)
	h.tooLarge = &Denial{Status: http.StatusRequestEntityTooLarge, Message: hmacGenericMessage}
	if cfg.NonceHeader != "" {
		h.nonceTTL = 2 * h.skew
		if h.nonceTTL == 0 {
			h.nonceTTL = 10 * time.Minute
		}
		h.nonces = newExpiringMap[string, struct{}](cfg.MaxNonces)
	}
	return h, nil
}

func (h *HMACAuth) Name() string { return h.cfg.Name }
func (h *HMACAuth) Type() string { return "hmac-auth" }

type hmacBinding struct {
	keyID  string
	id     string
	secret []byte
}

func (b *hmacBinding) Lookup() string     { return b.keyID }
func (b *hmacBinding) Identifier() string { return b.id }

// Compile checks the key id and secret.
func (h *HMACAuth) Compile(spec BindingSpec) (Binding, error) {
	var errs []error
	if spec.KeyID == "" {
		errs = append(errs, errors.New("hmac-auth binding needs a non-empty key_id"))
	}
	if strings.ContainsAny(spec.KeyID, "\"\n") {
		errs = append(errs, errors.New("hmac-auth key_id must not contain quotes or newlines"))
	}
	if spec.Secret == "" {
		errs = append(errs, errors.New("hmac-auth binding needs a non-empty secret"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	spec.IdP = h.cfg.Name
	return &hmacBinding{keyID: spec.KeyID, id: spec.CredentialID(spec.KeyID), secret: []byte(spec.Secret)}, nil
}

// signatureParams are the parameters of a Signature Authorization header.
type signatureParams struct {
	keyID     string
	algorithm string
	headers   []string
	signature string
}

// parseSignatureParams parses `keyId="…",algorithm="…",headers="…",signature="…"` (the text after
// the scheme). Values are quoted strings without escapes; unknown parameters are ignored.
func parseSignatureParams(s string) (signatureParams, error) {
	var p signatureParams
	seen := map[string]bool{}
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] == ',' {
			s = s[1:]
			continue
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return p, errors.New("parameter without '='")
		}
		name := strings.TrimRight(s[:eq], " \t")
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return p, fmt.Errorf("parameter name %q is invalid", name)
			}
		}
		if name == "" {
			return p, errors.New("empty parameter name")
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		if s == "" || s[0] != '"' {
			return p, fmt.Errorf("parameter %q is not a quoted string", name)
		}
		end := strings.IndexByte(s[1:], '"')
		if end < 0 {
			return p, fmt.Errorf("parameter %q has no closing quote", name)
		}
		value := s[1 : 1+end]
		s = strings.TrimLeft(s[end+2:], " \t")
		if s != "" && s[0] != ',' {
			return p, fmt.Errorf("parameter %q is followed by %q instead of ','", name, s[:1])
		}
		if seen[name] {
			return p, fmt.Errorf("parameter %q is repeated", name)
		}
		seen[name] = true
		switch name {
		case "keyId":
			p.keyID = value
		case "algorithm":
			p.algorithm = value
		case "headers":
			p.headers = strings.Fields(value)
		case "signature":
			p.signature = value
		}
	}
	return p, nil
}

type hmacState struct {
	params    signatureParams
	signature []byte
}

// isSignatureScheme reports whether an Authorization value is of the Signature scheme.
func isSignatureScheme(v string) bool {
	scheme, _, _ := strings.Cut(v, " ")
	return strings.EqualFold(scheme, "Signature")
}

// Extract parses a Signature Authorization header and checks what needs no secret: the
// parameters, the algorithm, the signed-header coverage and the clock skew.
func (h *HMACAuth) Extract(_ context.Context, r *http.Request) (*Credential, error) {
	v, n := ownValue(r, "Authorization", isSignatureScheme)
	if n == 0 {
		return nil, nil
	}
	if n > 1 {
		return nil, h.invalid.WithReason("%d Signature Authorization headers", n)
	}
	_, rest, _ := strings.Cut(v, " ")
	p, err := parseSignatureParams(rest)
	if err != nil {
		return nil, h.invalid.WithReason("malformed Signature parameters: %v", err)
	}
	if p.keyID == "" || p.signature == "" {
		return nil, h.invalid.WithReason("keyId or signature missing")
	}
	if p.algorithm == "" {
		return nil, h.invalid.WithReason("algorithm missing")
	}
	if !slices.Contains(h.allowed, p.algorithm) {
		return nil, h.invalid.WithReason("algorithm %q not allowed", p.algorithm)
	}
	sig, err := base64.StdEncoding.DecodeString(p.signature)
	if err != nil {
		return nil, h.invalid.WithReason("signature is not base64")
	}
	if d := h.checkDate(r); d != nil {
		return nil, d
	}
	for _, want := range h.signed {
		if !slices.ContainsFunc(p.headers, func(got string) bool { return strings.EqualFold(got, want) }) {
			return nil, h.invalid.WithReason("header %q not signed", want)
		}
		if want != requestTargetHeader {
			if _, present := requestHeaderLookup(r)(want); !present {
				return nil, h.invalid.WithReason("signed header %q absent", want)
			}
		}
	}
	return &Credential{Lookup: p.keyID, State: &hmacState{params: p, signature: sig}}, nil
}

// checkDate enforces the clock skew on the Date header (X-Date as a fallback, as in APISIX).
func (h *HMACAuth) checkDate(r *http.Request) *Denial {
	if h.skew == 0 {
		return nil
	}
	date := r.Header.Get("Date")
	if date == "" {
		date = r.Header.Get("X-Date")
	}
	if date == "" {
		return h.invalid.WithReason("Date header missing: cannot check clock skew")
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return h.invalid.WithReason("Date header is not an HTTP date")
	}
	diff := h.cfg.Now().Sub(t)
	if diff < 0 {
		diff = -diff
	}
	if diff > h.skew {
		return h.invalid.WithReason("clock skew %ds > %ds", int64(math.Round(diff.Seconds())), int64(h.skew.Seconds()))
	}
	return nil
}

// Verify checks the signature with the binding's secret in constant time, then the body digest
// when configured, then the nonce.
func (h *HMACAuth) Verify(_ context.Context, r *http.Request, cred *Credential, bd Binding) error {
	st, ok := cred.State.(*hmacState)
	b, ok2 := bd.(*hmacBinding)
	if !ok || !ok2 || st.params.keyID != b.keyID {
		return h.invalid.WithReason("credential does not match the binding")
	}
	var buf [512]byte
	s := appendSigningString(buf[:0], st.params.keyID, st.params.headers, r.Method, requestTarget(r), requestHeaderLookup(r))
	mac := hmac.New(hmacHash(st.params.algorithm), b.secret)
	mac.Write(s)
	var sum [64]byte
	if !hmac.Equal(mac.Sum(sum[:0]), st.signature) {
		return h.invalid.WithReason("signature mismatch")
	}
	if h.cfg.ValidateRequestBody {
		if d := h.checkDigest(r); d != nil {
			return d
		}
	}
	if h.nonces != nil && slices.ContainsFunc(st.params.headers, func(n string) bool { return strings.EqualFold(n, h.cfg.NonceHeader) }) {
		nonce := r.Header.Get(h.cfg.NonceHeader)
		if nonce == "" {
			return h.invalid.WithReason("nonce header %q signed but empty", h.cfg.NonceHeader)
		}
		now := h.cfg.Now()
		added, full := h.nonces.addIfAbsent(b.keyID+"\x00"+nonce, struct{}{}, now.Add(h.nonceTTL), now)
		if full {
			h.logger.Warn("hmac-auth nonce store full; refusing signed requests", "provider", h.cfg.Name)
			return fmt.Errorf("checking nonce: %w", ErrNonceStoreFull)
		}
		if !added {
			return h.invalid.WithReason("nonce replayed")
		}
	}
	return nil
}

// checkDigest reads the body (bounded), restores it for the upstream, and compares its digest.
func (h *HMACAuth) checkDigest(r *http.Request) *Denial {
	digest := r.Header.Get("Digest")
	if digest == "" {
		return h.invalid.WithReason("digest header missing")
	}
	limit := h.cfg.MaxReqBodySize
	if r.ContentLength > limit {
		return h.tooLarge.WithReason("body of %d bytes exceeds max_req_body_size %d", r.ContentLength, limit)
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		orig := r.Body
		data, err := io.ReadAll(io.LimitReader(orig, limit+1))
		// Whatever was read goes back in front of the rest, so the upstream sees the whole body.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), orig), orig}
		if err != nil {
			return h.invalid.WithReason("reading body: %v", err)
		}
		if int64(len(data)) > limit {
			return h.tooLarge.WithReason("body exceeds max_req_body_size %d", limit)
		}
		body = data
	}
	if BodyDigest(body) != digest {
		return h.invalid.WithReason("digest mismatch")
	}
	return nil
}

func (h *HMACAuth) Missing() *Denial { return h.missing }
func (h *HMACAuth) Unknown() *Denial { return h.invalid.WithReason("no consumer has this keyId") }

// HideCredentials removes a Signature Authorization header when configured.
func (h *HMACAuth) HideCredentials(r *http.Request) {
	if !h.cfg.HideCredentials {
		return
	}
	deleteHeaderValues(r, "Authorization", isSignatureScheme)
}
