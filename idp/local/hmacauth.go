package local

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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/expiring"
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
	// ClockSkew is the tolerated difference in seconds between the signed date header (date or
	// x-date) and now: nil means 300, 0 disables the check (and then no date is required).
	ClockSkew *int
	// SignedHeaders must all be listed in the signature's headers parameter.
	SignedHeaders []string
	// Compat is HMACCompatStrict (the default, "") or HMACCompatAPISIXLoose: see those.
	Compat string
	// ValidateRequestBody requires "Digest: SHA-256=<base64 sha256(body)>" to match the body, read
	// up to MaxReqBodySize bytes (default 10 MiB); a bigger body is refused with 413.
	ValidateRequestBody bool
	MaxReqBodySize      int64
	// MaxBufferedBodySize bounds the bytes of request bodies the provider holds at once, across
	// all concurrent requests (default 64 MiB, and never less than MaxReqBodySize): a body that
	// does not fit in what is left fails closed with 503 instead of waiting.
	MaxBufferedBodySize int64
	// NonceHeader, when set, must be present and signed in every request, and makes a nonce usable
	// once per replay window (twice the clock skew, or 10 minutes when the skew check is disabled).
	// MaxNonces bounds the remembered nonces (default 1<<20); when full, requests fail closed (503).
	NonceHeader string
	MaxNonces   int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// The values of HMACAuthConfig.Compat.
const (
	// HMACCompatStrict requires every signature to cover @request-target, the date header the
	// clock skew is checked on, and Digest when bodies are validated: a captured signature then
	// cannot be replayed on another path, later, or with another body.
	HMACCompatStrict = "strict"
	// HMACCompatAPISIXLoose accepts what APISIX accepts: signatures that cover neither
	// @request-target nor a date (the skew is then checked on an unsigned Date, else X-Date) and
	// an unsigned Digest. It is for clients that cannot be changed; such signatures can be replayed.
	HMACCompatAPISIXLoose = "apisix-loose"
)

// HMACAuth authenticates a request by an HMAC signature over its request line and headers, in
// the format of APISIX 3.11+ hmac-auth (draft-cavage-http-signatures).
type HMACAuth struct {
	cfg     HMACAuthConfig
	logger  *slog.Logger
	skew    time.Duration
	allowed []string
	// required are the (lowercase) names every signature must cover.
	required []string
	loose    bool
	budget   *bodyBudget
	// afterRequest is context.AfterFunc; tests observe when it has run.
	afterRequest func(ctx context.Context, f func()) (stop func() bool)

	missing  *idp.Denial
	invalid  *idp.Denial
	tooLarge *idp.Denial

	nonceTTL time.Duration
	nonces   *expiring.Map[string, struct{}]
}

var _ idp.Provider = (*HMACAuth)(nil)

// ErrNonceStoreFull is returned by HMACAuth.Verify when every remembered nonce is still live: the
// request cannot be checked for replay, so it fails closed.
var ErrNonceStoreFull = fmt.Errorf("%w: hmac-auth nonce store is full", idp.ErrUnavailable)

// ErrBodyBufferFull is returned by HMACAuth.Verify when the bodies other requests hold leave no
// room for this one's: waiting could hold the request forever, so it fails closed (503).
var ErrBodyBufferFull = fmt.Errorf("%w: hmac-auth body buffer is full", idp.ErrUnavailable)

// The defaults of HMACAuthConfig.MaxReqBodySize and MaxBufferedBodySize.
const (
	DefaultHMACMaxReqBodySize      = 10 << 20
	DefaultHMACMaxBufferedBodySize = 64 << 20
)

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
	if cfg.MaxBufferedBodySize < 0 {
		errs = append(errs, errors.New("hmac-auth max_buffered_body_size must not be negative"))
	}
	maxBody := cfg.MaxReqBodySize
	if maxBody == 0 {
		maxBody = DefaultHMACMaxReqBodySize
	}
	if cfg.MaxBufferedBodySize > 0 && cfg.MaxBufferedBodySize < maxBody {
		errs = append(errs, fmt.Errorf("hmac-auth max_buffered_body_size %d is less than max_req_body_size %d: a body of the largest size could never be checked",
			cfg.MaxBufferedBodySize, maxBody))
	}
	switch cfg.Compat {
	case "", HMACCompatStrict, HMACCompatAPISIXLoose:
	default:
		errs = append(errs, fmt.Errorf("hmac-auth compat: %q is not %q or %q", cfg.Compat, HMACCompatStrict, HMACCompatAPISIXLoose))
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
		cfg.MaxReqBodySize = DefaultHMACMaxReqBodySize
	}
	if cfg.MaxBufferedBodySize == 0 {
		cfg.MaxBufferedBodySize = max(DefaultHMACMaxBufferedBodySize, cfg.MaxReqBodySize)
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
		loose:   cfg.Compat == HMACCompatAPISIXLoose,
		budget:  &bodyBudget{max: cfg.MaxBufferedBodySize},

		afterRequest: context.AfterFunc,
	}
	if len(h.allowed) == 0 {
		h.allowed = HMACAlgorithms()
	}
	require := func(name string) {
		if name = strings.ToLower(name); !slices.Contains(h.required, name) {
			h.required = append(h.required, name)
		}
	}
	if !h.loose {
		require(requestTargetHeader)
		if cfg.ValidateRequestBody {
			require("digest")
		}
	}
	// The nonce is Portcullis's own: no APISIX client sends one, so no mode lets it go unsigned.
	if cfg.NonceHeader != "" {
		require(cfg.NonceHeader)
	}
	for _, s := range cfg.SignedHeaders {
		require(s)
	}
	// APISIX's scheme name: its clients and tests expect it.
	challenge := `hmac realm="` + cfg.Realm + `"`
	h.missing = idp.Unauthorized(hmacGenericMessage+": missing Authorization header", challenge)
	h.invalid = idp.Unauthorized(hmacGenericMessage, challenge)
	h.tooLarge = &idp.Denial{Status: http.StatusRequestEntityTooLarge, Message: hmacGenericMessage}
	if cfg.NonceHeader != "" {
		h.nonceTTL = 2 * h.skew
		if h.nonceTTL == 0 {
			h.nonceTTL = 10 * time.Minute
		}
		h.nonces = expiring.New[string, struct{}](cfg.MaxNonces)
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
func (h *HMACAuth) Compile(spec idp.BindingSpec) (idp.Binding, error) {
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
	// headers are lowercase, as draft-cavage-http-signatures defines them: the coverage checks
	// and the signing string then read the same names.
	headers   []string
	signature string
}

// signatureParamLabel names a parameter in an error. Only the names hmac-auth knows are quoted:
// whatever else a client writes there may be a credential sent with the wrong scheme, and
// errors end up in the access log.
func signatureParamLabel(name string) string {
	switch name {
	case "keyId", "algorithm", "headers", "signature":
		return "parameter " + strconv.Quote(name)
	}
	return "an unknown parameter"
}

// parseSignatureParams parses `keyId="…",algorithm="…",headers="…",signature="…"` (the text after
// the scheme). Values are quoted strings without escapes; unknown parameters are ignored. Errors
// never quote the client's bytes.
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
		if name == "" {
			return p, errors.New("empty parameter name")
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return p, errors.New("a parameter name has a character other than A-Z, a-z, 0-9, '-' and '_'")
			}
		}
		label := signatureParamLabel(name)
		s = strings.TrimLeft(s[eq+1:], " \t")
		if s == "" || s[0] != '"' {
			return p, fmt.Errorf("%s is not a quoted string", label)
		}
		end := strings.IndexByte(s[1:], '"')
		if end < 0 {
			return p, fmt.Errorf("%s has no closing quote", label)
		}
		value := s[1 : 1+end]
		s = strings.TrimLeft(s[end+2:], " \t")
		if s != "" && s[0] != ',' {
			return p, fmt.Errorf("%s is followed by something other than ','", label)
		}
		if seen[name] {
			return p, fmt.Errorf("%s is repeated", label)
		}
		seen[name] = true
		switch name {
		case "keyId":
			p.keyID = value
		case "algorithm":
			p.algorithm = value
		case "headers":
			p.headers = strings.Fields(strings.ToLower(value))
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
func (h *HMACAuth) Extract(_ context.Context, r *http.Request) (*idp.Credential, error) {
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
		if hmacHash(p.algorithm) == nil {
			return nil, h.invalid.WithReason("algorithm is not one of %s", strings.Join(HMACAlgorithms(), ", "))
		}
		return nil, h.invalid.WithReason("algorithm %q not allowed", p.algorithm)
	}
	sig, err := base64.StdEncoding.DecodeString(p.signature)
	if err != nil {
		return nil, h.invalid.WithReason("signature is not base64")
	}
	// A signature over the keyId alone is the same for every request: a password, not a signature.
	if len(p.headers) == 0 {
		return nil, h.invalid.WithReason("headers parameter is empty: the signature covers only the keyId")
	}
	lookup := requestHeaderLookup(r)
	for _, want := range h.required {
		if !slices.Contains(p.headers, want) {
			return nil, h.invalid.WithReason("header %q not signed", want)
		}
		if want != requestTargetHeader {
			if _, present := lookup(want); !present {
				return nil, h.invalid.WithReason("signed header %q absent", want)
			}
		}
	}
	if d := h.checkDate(r, p.headers); d != nil {
		return nil, d
	}
	return &idp.Credential{Lookup: p.keyID, State: &hmacState{params: p, signature: sig}}, nil
}

// hmacDateHeaders are the headers the clock skew is checked on, in APISIX's order of preference.
var hmacDateHeaders = [...]string{"date", "x-date"}

// checkDate enforces the clock skew on every signed date header: an unsigned one proves nothing,
// since whoever replays a signature can write a fresh one. Without a signed date the request is
// refused, except in APISIX's loose mode, which reads Date, else X-Date, as APISIX does.
func (h *HMACAuth) checkDate(r *http.Request, signed []string) *idp.Denial {
	if h.skew == 0 {
		return nil
	}
	checked := false
	for _, name := range hmacDateHeaders {
		if !slices.Contains(signed, name) {
			continue
		}
		checked = true
		// The first value, as the signing string reads it.
		if d := h.checkSkew(name, r.Header.Get(name)); d != nil {
			return d
		}
	}
	if checked {
		return nil
	}
	if !h.loose {
		return h.invalid.WithReason("neither date nor x-date is signed: cannot check clock skew")
	}
	for _, name := range hmacDateHeaders {
		if v := r.Header.Get(name); v != "" {
			return h.checkSkew(name, v)
		}
	}
	return h.invalid.WithReason("Date header missing: cannot check clock skew")
}

// checkSkew checks one date header's value against the clock.
func (h *HMACAuth) checkSkew(name, value string) *idp.Denial {
	if value == "" {
		return h.invalid.WithReason("%s header missing: cannot check clock skew", name)
	}
	t, err := http.ParseTime(value)
	if err != nil {
		return h.invalid.WithReason("%s header is not an HTTP date", name)
	}
	diff := h.cfg.Now().Sub(t)
	if diff < 0 {
		diff = -diff
	}
	if diff > h.skew {
		return h.invalid.WithReason("clock skew %ds > %ds on %s", int64(math.Round(diff.Seconds())), int64(h.skew.Seconds()), name)
	}
	return nil
}

// Verify checks the signature with the binding's secret in constant time, then the body digest
// when configured, then the nonce.
func (h *HMACAuth) Verify(_ context.Context, r *http.Request, cred *idp.Credential, bd idp.Binding) error {
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
		if err := h.checkDigest(r); err != nil {
			return err
		}
	}
	if h.nonces != nil {
		// Extract made sure the nonce header is signed and present.
		nonce := r.Header.Get(h.cfg.NonceHeader)
		if nonce == "" {
			return h.invalid.WithReason("nonce header %q signed but empty", h.cfg.NonceHeader)
		}
		now := h.cfg.Now()
		added, full := h.nonces.AddIfAbsent(b.keyID+"\x00"+nonce, struct{}{}, now.Add(h.nonceTTL), now)
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

// checkDigest reads the body (bounded per request, and in total by the provider's budget),
// restores it for the upstream, and compares its digest.
func (h *HMACAuth) checkDigest(r *http.Request) error {
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
		hold := &bodyHold{budget: h.budget}
		data, err := hold.read(orig, limit, r.ContentLength)
		// Whatever was read goes back in front of the rest, so the upstream sees the whole body.
		hb := &heldBody{r: io.MultiReader(bytes.NewReader(data), orig), orig: orig, hold: hold}
		r.Body = hb
		var d error
		switch {
		case errors.Is(err, errBodyBudget):
			d = fmt.Errorf("buffering request body: %w", ErrBodyBufferFull)
		case errors.Is(err, errBodyTooLarge):
			d = h.tooLarge.WithReason("body exceeds max_req_body_size %d", limit)
		case err != nil:
			d = h.invalid.WithReason("reading body: %v", err)
		case BodyDigest(data) != digest:
			d = h.invalid.WithReason("digest mismatch")
		}
		if d != nil {
			// A refused request is never forwarded: its bytes go when the request does.
			hold.release()
			return d
		}
		// Held until the upstream has read the body, or the request ends, whichever comes first.
		hold.stop = h.afterRequest(r.Context(), hold.release)
		return nil
	}
	if BodyDigest(body) != digest {
		return h.invalid.WithReason("digest mismatch")
	}
	return nil
}

// bodyBudget is the bytes of request bodies a provider may hold at once. Acquiring never waits:
// a request that does not fit fails at once, so a slow client cannot make others queue.
type bodyBudget struct {
	max  int64
	used atomic.Int64
}

func (b *bodyBudget) tryAcquire(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *bodyBudget) release(n int64) { b.used.Add(-n) }

// bodyHold.read's errors: the budget has no room left; the body is longer than the limit.
var (
	errBodyBudget   = errors.New("body buffer budget exhausted")
	errBodyTooLarge = errors.New("body too large")
)

// bodyHold is one request's share of a bodyBudget: the capacity of its buffer.
type bodyHold struct {
	budget *bodyBudget
	held   atomic.Int64
	// stop deregisters release from the request's context once the hold is released otherwise.
	stop func() bool
}

func (hd *bodyHold) acquire(n int64) bool {
	if !hd.budget.tryAcquire(n) {
		return false
	}
	hd.held.Add(n)
	return true
}

// release gives the held bytes back; it is idempotent and safe to call concurrently.
func (hd *bodyHold) release() {
	if n := hd.held.Swap(0); n > 0 {
		hd.budget.release(n)
	}
}

// read reads rd to its end, holding budget for its buffer's capacity before allocating it, and
// never more than limit bytes of it: a longer body is errBodyTooLarge. hint is the
// Content-Length, or -1 when unknown.
func (hd *bodyHold) read(rd io.Reader, limit, hint int64) ([]byte, error) {
	c := min(int64(4096), limit)
	if hint >= 0 {
		c = min(hint, limit)
	}
	if !hd.acquire(c) {
		return nil, errBodyBudget
	}
	buf := make([]byte, 0, c)
	for {
		if len(buf) == cap(buf) {
			// Look one byte ahead before growing: most bodies end exactly here (Content-Length),
			// and a body of limit bytes must fit in a budget of limit bytes.
			var one [1]byte
			n, err := rd.Read(one[:])
			if n == 0 {
				if errors.Is(err, io.EOF) {
					return buf, nil
				}
				if err != nil {
					return buf, err
				}
				continue
			}
			if int64(len(buf)) >= limit {
				return buf, errBodyTooLarge
			}
			grown := min(max(2*int64(cap(buf)), 512), limit)
			if !hd.acquire(grown - int64(cap(buf))) {
				return buf, errBodyBudget
			}
			nb := make([]byte, len(buf), grown)
			copy(nb, buf)
			buf = append(nb, one[0])
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			if err != nil {
				return buf, err
			}
			continue
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// heldBody is a request body restored after digesting; reading it to its end or closing it gives
// its bytes back to the budget.
type heldBody struct {
	r    io.Reader
	orig io.Closer
	hold *bodyHold
}

func (b *heldBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		b.done()
	}
	return n, err
}

func (b *heldBody) Close() error {
	b.done()
	return b.orig.Close()
}

func (b *heldBody) done() {
	if b.hold.stop != nil {
		b.hold.stop()
	}
	b.hold.release()
}

func (h *HMACAuth) Missing() *idp.Denial { return h.missing }
func (h *HMACAuth) Unknown() *idp.Denial { return h.invalid.WithReason("no consumer has this keyId") }

// HideCredentials removes a Signature Authorization header when configured.
func (h *HMACAuth) HideCredentials(r *http.Request) {
	if !h.cfg.HideCredentials {
		return
	}
	credential.HideHeader(r.Header, "Authorization", isSignatureScheme)
}
