package local

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/expiring"
)

// BasicAuthConfig configures a basic-auth provider (APISIX basic-auth).
type BasicAuthConfig struct {
	Name string
	// HideCredentials removes a Basic Authorization header before the request goes upstream.
	HideCredentials bool
	// Realm is the WWW-Authenticate realm; defaults to the provider name.
	Realm string
	// OtherSchemes are the Authorization schemes other providers of the policy read ("Signature",
	// "Bearer"); OtherBareTokens is set when one reads a token without a scheme there (jwt-auth).
	// An Authorization header that no provider claimed and that is of none of these is answered
	// "Invalid authorization in request", as APISIX does, rather than reported missing.
	OtherSchemes    []string
	OtherBareTokens bool

	// CacheTTL is how long a successful bcrypt check is remembered (default 5m); CacheSize bounds
	// the remembered checks (default 10000). A negative CacheSize disables the cache.
	CacheTTL  time.Duration
	CacheSize int
	// bcrypt checks (a password not cached as good) draw from bounded budgets and are refused at
	// once with ErrPasswordChecksBusy, never queued, when theirs is spent. One username has at
	// most one check running. A username with a wrong password in the last SuspectFor (default
	// 1m, and no right one since) is a suspect: its checks run in a pool of their own of
	// MaxSuspectChecks (default GOMAXPROCS/4, at least 1), so that hammering it costs nobody
	// else a slot. The others share MaxConcurrentChecks (default GOMAXPROCS); of those, checks
	// of usernames without a right password in the last TrustFor (default 24h) may hold at most
	// MaxUnverifiedChecks (default MaxConcurrentChecks minus a quarter), so that first wrong
	// attempts at many usernames leave room for the users who logged in before.
	MaxConcurrentChecks int
	MaxUnverifiedChecks int
	MaxSuspectChecks    int
	SuspectFor          time.Duration
	TrustFor            time.Duration

	// Now is the clock (default time.Now). CompareHash compares a bcrypt hash with a password
	// (default bcrypt.CompareHashAndPassword); tests inject it to count calls.
	Now         func() time.Time
	CompareHash func(hash, password []byte) error
}

// ErrPasswordChecksBusy is returned by BasicAuth.Verify when every bcrypt slot is taken. It wraps
// ErrUnavailable: the gateway answers 503 quickly rather than letting a flood of wrong passwords
// queue without bound in front of valid traffic.
var ErrPasswordChecksBusy = fmt.Errorf("%w: too many concurrent password checks", idp.ErrUnavailable)

// BasicAuth authenticates a request by HTTP Basic credentials. Bindings hold either a bcrypt hash
// or the SHA-256 of a plain password, never the plain password itself.
type BasicAuth struct {
	cfg     BasicAuthConfig
	logger  *slog.Logger
	missing *idp.Denial
	invalid *idp.Denial
	badUser *idp.Denial

	// cacheKey keys the HMAC that names a successful check in the cache, so the cache never holds
	// anything from which a password could be recovered offline.
	cacheKey [32]byte
	macs     sync.Pool // of hmac.New(sha256.New, cacheKey)
	cache    *expiring.Map[[sha256.Size]byte, struct{}]
	flight   singleflight.Group
	// slots are the shared bcrypt budget, unverified the part of it unverified usernames may
	// hold, suspects the suspects' own.
	slots, unverified, suspects chan struct{}

	mu sync.Mutex
	// users are the recent outcomes per binding; bounded by the policy's bindings, since only a
	// username that names a binding reaches a check.
	users map[*basicBinding]*userRecord
}

// userRecord is what the check budgets know of one username.
type userRecord struct {
	running                  bool
	lastSuccess, lastFailure time.Time
}

// budget is the pool a check draws from.
type budget int

const (
	budgetTrusted budget = iota
	budgetUnverified
	budgetSuspect
)

func (bg budget) String() string {
	switch bg {
	case budgetTrusted:
		return "trusted"
	case budgetUnverified:
		return "unverified"
	}
	return "suspect"
}

var (
	_ idp.Provider = (*BasicAuth)(nil)
	_ idp.Peeker   = (*BasicAuth)(nil)
	_ idp.Decliner = (*BasicAuth)(nil)
)

// NewBasicAuth builds a basic-auth provider. It does no I/O.
func NewBasicAuth(cfg BasicAuthConfig, logger *slog.Logger) *BasicAuth {
	if cfg.Realm == "" {
		cfg.Realm = cfg.Name
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 5 * time.Minute
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.MaxConcurrentChecks <= 0 {
		cfg.MaxConcurrentChecks = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxUnverifiedChecks <= 0 || cfg.MaxUnverifiedChecks > cfg.MaxConcurrentChecks {
		cfg.MaxUnverifiedChecks = cfg.MaxConcurrentChecks - cfg.MaxConcurrentChecks/4
	}
	if cfg.MaxSuspectChecks <= 0 {
		cfg.MaxSuspectChecks = max(1, runtime.GOMAXPROCS(0)/4)
	}
	if cfg.SuspectFor <= 0 {
		cfg.SuspectFor = time.Minute
	}
	if cfg.TrustFor <= 0 {
		cfg.TrustFor = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CompareHash == nil {
		cfg.CompareHash = bcrypt.CompareHashAndPassword
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	challenge := `Basic realm="` + cfg.Realm + `"`
	b := &BasicAuth{
		cfg:        cfg,
		logger:     logger,
		missing:    idp.Unauthorized("Missing authorization in request", challenge),
		invalid:    idp.Unauthorized("Invalid authorization in request", challenge),
		badUser:    idp.Unauthorized("Invalid user authorization", challenge),
		slots:      make(chan struct{}, cfg.MaxConcurrentChecks),
		unverified: make(chan struct{}, cfg.MaxUnverifiedChecks),
		suspects:   make(chan struct{}, cfg.MaxSuspectChecks),
		users:      map[*basicBinding]*userRecord{},
	}
	if cfg.CacheSize > 0 {
		b.cache = expiring.New[[sha256.Size]byte, struct{}](cfg.CacheSize)
	}
	// crypto/rand.Read never fails (it aborts the process instead).
	rand.Read(b.cacheKey[:])
	b.macs.New = func() any { return hmac.New(sha256.New, b.cacheKey[:]) }
	return b
}

func (b *BasicAuth) Name() string { return b.cfg.Name }
func (b *BasicAuth) Type() string { return "basic-auth" }

type basicBinding struct {
	username string
	id       string
	// bcryptHash is set for a hashed password; otherwise plainSum is the password's SHA-256.
	bcryptHash []byte
	plainSum   [sha256.Size]byte
}

func (bb *basicBinding) Lookup() string     { return bb.username }
func (bb *basicBinding) Identifier() string { return bb.id }

// isBcryptHash reports whether a configured password is a bcrypt hash rather than a plain one.
func isBcryptHash(p string) bool {
	return strings.HasPrefix(p, "$2a$") || strings.HasPrefix(p, "$2b$") || strings.HasPrefix(p, "$2y$")
}

// Compile checks the username and password; a bcrypt hash is validated, a plain password hashed.
func (b *BasicAuth) Compile(spec idp.BindingSpec) (idp.Binding, error) {
	var errs []error
	if spec.Username == "" {
		errs = append(errs, errors.New("basic-auth binding needs a non-empty username"))
	}
	if strings.ContainsRune(spec.Username, ':') {
		errs = append(errs, errors.New("basic-auth username must not contain ':'"))
	}
	if spec.Password == "" {
		errs = append(errs, errors.New("basic-auth binding needs a non-empty password"))
	}
	spec.IdP = b.cfg.Name
	bb := &basicBinding{username: spec.Username, id: spec.CredentialID(spec.Username)}
	if isBcryptHash(spec.Password) {
		if _, err := bcrypt.Cost([]byte(spec.Password)); err != nil {
			errs = append(errs, fmt.Errorf("basic-auth password looks like a bcrypt hash but is not valid: %w", err))
		}
		bb.bcryptHash = []byte(spec.Password)
	} else {
		bb.plainSum = sha256.Sum256([]byte(spec.Password))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return bb, nil
}

type basicState struct {
	username string
	password string
}

// isBasicScheme reports whether an Authorization value is of the Basic scheme.
func isBasicScheme(v string) bool {
	scheme, _, _ := strings.Cut(v, " ")
	return strings.EqualFold(scheme, "Basic")
}

// parseBasic splits a Basic Authorization value; a non-empty reason says why it is malformed.
func parseBasic(h string) (user, pass, reason string) {
	_, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return "", "", "Basic credentials are empty"
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return "", "", "Basic credentials are not base64"
	}
	// RFC 7617: the user-id cannot contain a colon, the password may.
	user, pass, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", "Basic credentials have no ':' separator"
	}
	if user == "" {
		return "", "", "Basic credentials have an empty username"
	}
	return user, pass, ""
}

// Extract reads a Basic Authorization header. Another scheme is not this provider's; a second
// Basic header is an invalid credential.
func (b *BasicAuth) Extract(_ context.Context, r *http.Request) (*idp.Credential, error) {
	h, n := ownValue(r, "Authorization", isBasicScheme)
	if n == 0 {
		return nil, nil
	}
	if n > 1 {
		return nil, b.invalid.WithReason("%d Basic Authorization headers", n)
	}
	user, pass, reason := parseBasic(h)
	if reason != "" {
		return nil, b.invalid.WithReason("%s", reason)
	}
	return &idp.Credential{Lookup: user, State: &basicState{username: user, password: pass}}, nil
}

// Peek reports the username of the Basic credential in r, for the chain to tell which of two
// basic-auth providers owns it.
func (b *BasicAuth) Peek(r *http.Request) (place, lookup string, ok bool) {
	h, n := ownValue(r, "Authorization", isBasicScheme)
	if n != 1 {
		return "", "", false
	}
	user, _, reason := parseBasic(h)
	if reason != "" {
		return "", "", false
	}
	return placeBasic, user, true
}

// Verify checks the password. Plain passwords compare as SHA-256 sums in constant time. bcrypt
// checks are cached on success, collapsed when concurrent for the same pair, and bounded in
// number: a valid cached pair never waits behind a flood of wrong passwords.
func (b *BasicAuth) Verify(_ context.Context, _ *http.Request, cred *idp.Credential, bd idp.Binding) error {
	st, ok := cred.State.(*basicState)
	bb, ok2 := bd.(*basicBinding)
	if !ok || !ok2 || st.username != bb.username {
		return b.badUser.WithReason("credential does not match the binding")
	}
	if bb.bcryptHash == nil {
		sum := credential.Sum(st.password)
		if subtle.ConstantTimeCompare(sum[:], bb.plainSum[:]) != 1 {
			return b.badUser.WithReason("password does not match")
		}
		return nil
	}

	key := b.checkKey(st.username, st.password, bb.bcryptHash)
	if b.cache != nil {
		if _, hit := b.cache.Get(key, b.cfg.Now()); hit {
			return nil
		}
	}
	_, err, _ := b.flight.Do(string(key[:]), func() (any, error) {
		// A flight that just ended may have cached this pair after the check above.
		if b.cache != nil {
			if _, hit := b.cache.Get(key, b.cfg.Now()); hit {
				return nil, nil
			}
		}
		return nil, b.bcryptCheck(key, bb, st.password)
	})
	return err
}

// bcryptCheck runs one bcrypt comparison within its username's budget and caches its success.
func (b *BasicAuth) bcryptCheck(key [sha256.Size]byte, bb *basicBinding, password string) error {
	bg, ok := b.enter(bb, b.cfg.Now())
	if !ok {
		b.logger.Debug("refusing password check: one is already running for this username", "provider", b.cfg.Name)
		return fmt.Errorf("checking basic-auth password: %w", ErrPasswordChecksBusy)
	}
	var matched, mismatched bool
	defer func() { b.leave(bb, matched, mismatched) }()
	if !b.acquire(bg) {
		b.logger.Debug("refusing password check: bcrypt budget spent", "provider", b.cfg.Name, "budget", bg.String())
		return fmt.Errorf("checking basic-auth password: %w", ErrPasswordChecksBusy)
	}
	defer b.release(bg)
	if err := b.cfg.CompareHash(bb.bcryptHash, []byte(password)); err != nil {
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			mismatched = true
			return b.badUser.WithReason("password does not match")
		}
		return b.badUser.WithReason("password hash comparison failed: %v", err)
	}
	matched = true
	if b.cache != nil {
		now := b.cfg.Now()
		b.cache.Put(key, struct{}{}, now.Add(b.cfg.CacheTTL), now)
	}
	return nil
}

// enter marks a check of bb as running and says which budget it draws from; ok is false when
// one is already running for that username.
func (b *BasicAuth) enter(bb *basicBinding, now time.Time) (bg budget, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.users[bb]
	if u == nil {
		u = &userRecord{}
		b.users[bb] = u
	}
	if u.running {
		return 0, false
	}
	u.running = true
	switch {
	case !u.lastFailure.IsZero() && now.Sub(u.lastFailure) < b.cfg.SuspectFor && !u.lastSuccess.After(u.lastFailure):
		return budgetSuspect, true
	case !u.lastSuccess.IsZero() && now.Sub(u.lastSuccess) < b.cfg.TrustFor:
		return budgetTrusted, true
	}
	return budgetUnverified, true
}

// leave records the outcome of bb's check. Only a wrong password makes a suspect: a check
// refused for lack of budget says nothing about the password.
func (b *BasicAuth) leave(bb *basicBinding, matched, mismatched bool) {
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.users[bb]
	u.running = false
	switch {
	case matched:
		u.lastSuccess = now
	case mismatched:
		u.lastFailure = now
	}
}

// acquire takes a slot of the budget without waiting.
func (b *BasicAuth) acquire(bg budget) bool {
	switch bg {
	case budgetSuspect:
		select {
		case b.suspects <- struct{}{}:
			return true
		default:
			return false
		}
	case budgetUnverified:
		select {
		case b.unverified <- struct{}{}:
		default:
			return false
		}
	}
	select {
	case b.slots <- struct{}{}:
		return true
	default:
		if bg == budgetUnverified {
			<-b.unverified
		}
		return false
	}
}

func (b *BasicAuth) release(bg budget) {
	switch bg {
	case budgetSuspect:
		<-b.suspects
		return
	case budgetUnverified:
		<-b.unverified
	}
	<-b.slots
}

// checkKey names a (user, password, stored hash) triple by a keyed hash. Including the stored
// hash makes a changed password invalidate its cache entries.
// It runs on every request with a cached password: the keyed HMACs are pooled, and the
// length-prefixed parts are written at once from a stack buffer.
func (b *BasicAuth) checkKey(user, password string, storedHash []byte) [sha256.Size]byte {
	m := b.macs.Get().(hash.Hash)
	defer b.macs.Put(m)
	m.Reset()
	var scratch [256]byte
	buf := binary.BigEndian.AppendUint32(scratch[:0], uint32(len(user)))
	buf = append(buf, user...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(password)))
	buf = append(buf, password...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(storedHash)))
	buf = append(buf, storedHash...)
	m.Write(buf)
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// Declined refuses an Authorization header of a scheme that no provider of the policy reads
// (`Authorization: Bad_header …`): the caller sent credentials, which are invalid here. A scheme
// another provider reads (a Bearer token on a route whose consumers use jwt-auth) is left to it.
func (b *BasicAuth) Declined(r *http.Request) *idp.Denial {
	for _, v := range r.Header.Values("Authorization") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		scheme, _, hasScheme := strings.Cut(v, " ")
		if !hasScheme {
			if b.cfg.OtherBareTokens {
				continue
			}
		} else if slices.ContainsFunc(b.cfg.OtherSchemes, func(s string) bool { return strings.EqualFold(s, scheme) }) {
			continue
		}
		// The scheme is the client's text: the reason does not repeat it.
		return b.invalid.WithReason("the Authorization header is of a scheme no provider reads")
	}
	return nil
}

func (b *BasicAuth) Missing() *idp.Denial { return b.missing }
func (b *BasicAuth) Unknown() *idp.Denial {
	return b.badUser.WithReason("no consumer has this username")
}

// HideCredentials removes the Authorization header when it carries Basic credentials and the
// provider is configured to hide them.
func (b *BasicAuth) HideCredentials(r *http.Request) {
	if !b.cfg.HideCredentials {
		return
	}
	credential.HideHeader(r.Header, "Authorization", isBasicScheme)
}
