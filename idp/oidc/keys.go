package oidc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"golang.org/x/sync/singleflight"

	"github.com/portcullis/portcullis/idp"
)

// oidcMeta is the part of the discovery document the providers use.
type oidcMeta struct {
	JWKSURI               string `json:"jwks_uri"`
	TokenEndpoint         string `json:"token_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	EndSessionEndpoint    string `json:"end_session_endpoint"`
}

// oidcKey is one verification key of the issuer.
type oidcKey struct {
	alg string // the key's alg parameter, "" when the JWKS does not pin one
	raw any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// oidcKeys holds the discovery document and the JWKS of one issuer. Both are fetched on demand;
// every fetch attempt (successful or not) is at least JWKSRefreshMinInterval after the previous
// one, so neither unknown kids nor an unreachable issuer turn requests into a flood of fetches.
type oidcKeys struct {
	o  *Provider
	sf singleflight.Group

	mu          sync.Mutex
	meta        *oidcMeta
	discAttempt time.Time
	discErr     error
	byKid       map[string][]oidcKey
	noKid       []oidcKey
	fetched     time.Time // last successful JWKS fetch
	attempt     time.Time // last JWKS fetch attempt
	fetchErr    error     // error of the last attempt, nil when it succeeded
}

// discovery returns the discovery document, fetching it when no fetch has succeeded yet and the
// last attempt is old enough. Errors wrap ErrUnavailable.
func (k *oidcKeys) discovery(ctx context.Context) (*oidcMeta, error) {
	k.mu.Lock()
	if k.meta != nil {
		m := k.meta
		k.mu.Unlock()
		return m, nil
	}
	k.mu.Unlock()
	_, err, _ := k.sf.Do("discovery", func() (any, error) {
		k.mu.Lock()
		now := k.o.now()
		if k.meta != nil {
			k.mu.Unlock()
			return nil, nil
		}
		if !k.discAttempt.IsZero() && now.Sub(k.discAttempt) < k.o.cfg.JWKSRefreshMinInterval {
			err := k.discErr
			k.mu.Unlock()
			return nil, err
		}
		k.discAttempt = now
		k.mu.Unlock()

		m, err := k.discover(ctx)
		k.mu.Lock()
		defer k.mu.Unlock()
		if err != nil {
			k.discErr = err
			return nil, err
		}
		k.meta, k.discErr = m, nil
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.meta == nil {
		return nil, fmt.Errorf("discovering %s: %w", k.o.cfg.Issuer, idp.ErrUnavailable)
	}
	return k.meta, nil
}

func (k *oidcKeys) discover(ctx context.Context) (m *oidcMeta, err error) {
	start := time.Now()
	defer func() { k.o.ObserveCall("discovery", start, err) }()
	// The fetch serves every waiting request: a caller that goes away must not cancel it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.o.cfg.Timeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, k.o.client), k.o.cfg.Issuer)
	if err != nil {
		k.o.logger.Warn("oidc discovery failed", "issuer", k.o.cfg.Issuer, "err", err)
		return nil, fmt.Errorf("discovering %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	var meta oidcMeta
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("discovering %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("discovering %s: %w: the discovery document has no jwks_uri", k.o.cfg.Issuer, idp.ErrUnavailable)
	}
	k.o.logger.Info("oidc discovery done", "issuer", k.o.cfg.Issuer, "jwks_uri", meta.JWKSURI)
	return &meta, nil
}

// refresh fetches the JWKS unless the last attempt is younger than the minimum interval (then it
// does nothing). Concurrent callers share one fetch.
func (k *oidcKeys) refresh(ctx context.Context, meta *oidcMeta) {
	_, _, _ = k.sf.Do("jwks", func() (any, error) {
		k.mu.Lock()
		now := k.o.now()
		if !k.attempt.IsZero() && now.Sub(k.attempt) < k.o.cfg.JWKSRefreshMinInterval {
			k.mu.Unlock()
			return nil, nil
		}
		k.attempt = now
		k.mu.Unlock()

		byKid, noKid, err := k.fetch(ctx, meta.JWKSURI)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.fetchErr = err
		if err != nil {
			return nil, nil
		}
		k.byKid, k.noKid, k.fetched = byKid, noKid, k.o.now()
		return nil, nil
	})
}

func (k *oidcKeys) fetch(ctx context.Context, uri string) (byKid map[string][]oidcKey, noKid []oidcKey, err error) {
	start := time.Now()
	defer func() {
		k.o.ObserveCall("jwks", start, err)
		if err != nil {
			k.o.logger.Warn("jwks fetch failed", "issuer", k.o.cfg.Issuer, "err", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.o.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching jwks of %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.o.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching jwks of %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("fetching jwks of %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetching jwks of %s: %w: status %d", k.o.cfg.Issuer, idp.ErrUnavailable, resp.StatusCode)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing jwks of %s: %w: %w", k.o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	byKid = make(map[string][]oidcKey, set.Len())
	for i := range set.Len() {
		key, _ := set.Key(i)
		if key.KeyUsage() == "enc" || key.KeyType() == "oct" {
			continue
		}
		raw, err := jwk.PublicRawKeyOf(key)
		if err != nil {
			continue
		}
		ok := oidcKey{raw: raw}
		if a := key.Algorithm(); a != nil {
			ok.alg = a.String()
		}
		if kid := key.KeyID(); kid != "" {
			byKid[kid] = append(byKid[kid], ok)
		} else {
			noKid = append(noKid, ok)
		}
	}
	return byKid, noKid, nil
}

// candidates returns the keys that may have signed a token with this header.
func (k *oidcKeys) candidates(h oidcJOSEHeader) []oidcKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	if h.Kid != "" {
		return k.byKid[h.Kid]
	}
	out := make([]oidcKey, 0, len(k.noKid))
	out = append(out, k.noKid...)
	for _, ks := range k.byKid {
		out = append(out, ks...)
	}
	return out
}

// verify checks a token's signature and returns its payload. An unknown kid triggers one JWKS
// refresh (rate-limited); keys older than JWKSMaxAge are refreshed on use, keeping the old ones
// when the issuer cannot be reached.
func (k *oidcKeys) verify(ctx context.Context, tok string, h oidcJOSEHeader) ([]byte, error) {
	meta, err := k.discovery(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	stale := k.fetched.IsZero() || k.o.now().Sub(k.fetched) >= k.o.cfg.JWKSMaxAge
	k.mu.Unlock()
	if stale {
		k.refresh(ctx, meta)
	}
	keys := k.candidates(h)
	k.o.ObserveCache("jwks", len(keys) > 0)
	if len(keys) == 0 {
		k.refresh(ctx, meta)
		keys = k.candidates(h)
	}
	if len(keys) == 0 {
		k.mu.Lock()
		fetchErr, fetched := k.fetchErr, !k.fetched.IsZero()
		k.mu.Unlock()
		if fetchErr != nil || !fetched {
			// The key may be one the issuer published while we could not ask it.
			if fetchErr == nil {
				fetchErr = fmt.Errorf("fetching jwks of %s: %w", k.o.cfg.Issuer, idp.ErrUnavailable)
			}
			return nil, fetchErr
		}
		return nil, k.o.invalid.WithReason("token signing key %q is not in the issuer's JWKS", h.Kid)
	}
	for _, key := range keys {
		if key.alg != "" && key.alg != h.Alg {
			continue
		}
		payload, err := jws.Verify([]byte(tok), jws.WithKey(jwa.SignatureAlgorithm(h.Alg), key.raw))
		if err == nil {
			return payload, nil
		}
	}
	return nil, k.o.invalid.WithReason("token signature does not verify")
}

// ready runs discovery and a JWKS refresh (rate-limited) and reports whether the last attempt
// reached the issuer.
func (k *oidcKeys) ready(ctx context.Context) error {
	meta, err := k.discovery(ctx)
	if err != nil {
		return err
	}
	k.refresh(ctx, meta)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fetchErr != nil {
		return k.fetchErr
	}
	if k.fetched.IsZero() {
		return fmt.Errorf("jwks of %s not fetched yet: %w", k.o.cfg.Issuer, idp.ErrUnavailable)
	}
	return nil
}
