package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis/portcullis/idp"
)

// introspection is one cached RFC 7662 answer.
type introspection struct {
	active bool
	claims map[string]any
}

// checkActive asks the issuer (or the cache) whether a locally verified JWT is still active.
func (o *Provider) checkActive(ctx context.Context, st *Token) error {
	in, err := o.introspect(ctx, st.Raw, st.Hash, st.Expiry)
	if err != nil {
		return err
	}
	if !in.active {
		return o.invalid.WithReason("the issuer reports the token inactive (revoked or ended session)")
	}
	return nil
}

// introspectOpaque judges a token that is not a JWS: only introspection can.
func (o *Provider) introspectOpaque(ctx context.Context, tok string) (map[string]any, error) {
	if !o.cfg.Introspection {
		return nil, o.invalid.WithReason("token is not a JWS and introspection is off")
	}
	in, err := o.introspect(ctx, tok, sha256.Sum256([]byte(tok)), time.Time{})
	if err != nil {
		return nil, err
	}
	if !in.active {
		return nil, o.invalid.WithReason("the issuer reports the token inactive")
	}
	if err := o.validateClaims(in.claims, false); err != nil {
		return nil, err
	}
	return in.claims, nil
}

// introspect returns the issuer's answer about tok, cached by its hash until the earlier of
// the token's expiry and IntrospectionTTL. Concurrent requests with the same token share one
// call. Errors wrap ErrUnavailable.
func (o *Provider) introspect(ctx context.Context, tok string, hash [sha256.Size]byte, exp time.Time) (*introspection, error) {
	now := o.now()
	if in, ok := o.introCache.Get(hash, now); ok {
		o.ObserveCache("introspection", true)
		return in, nil
	}
	o.ObserveCache("introspection", false)
	v, err, _ := o.introSF.Do(hex.EncodeToString(hash[:]), func() (any, error) {
		in, err := o.callIntrospection(ctx, tok)
		if err != nil {
			return nil, err
		}
		until := now.Add(o.cfg.IntrospectionTTL)
		if e := claimTime(in.claims["exp"]); !e.IsZero() && (exp.IsZero() || e.Before(exp)) {
			exp = e
		}
		if !exp.IsZero() && exp.Before(until) {
			until = exp
		}
		if until.After(now) {
			o.introCache.Put(hash, in, until, now)
		}
		return in, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*introspection), nil
}

func (o *Provider) callIntrospection(ctx context.Context, tok string) (in *introspection, err error) {
	meta, err := o.keys.discovery(ctx)
	if err != nil {
		return nil, err
	}
	if meta.IntrospectionEndpoint == "" {
		return nil, fmt.Errorf("introspecting at %s: %w: the discovery document has no introspection_endpoint", o.cfg.Issuer, idp.ErrUnavailable)
	}
	start := time.Now()
	defer func() { o.ObserveCall("introspection", start, err) }()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.Timeout)
	defer cancel()
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.IntrospectionEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("introspecting at %s: %w: %w", o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: client_secret_basic with form-encoded id and secret.
	req.SetBasicAuth(url.QueryEscape(o.cfg.ClientID), url.QueryEscape(o.cfg.ClientSecret))
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("introspecting at %s: %w: %w", o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("introspecting at %s: %w: %w", o.cfg.Issuer, idp.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		// A 401 here means the gateway's own client credentials are wrong: a configuration
		// problem the caller cannot fix, so it is "cannot decide", not "invalid token".
		return nil, fmt.Errorf("introspecting at %s: %w: status %d", o.cfg.Issuer, idp.ErrUnavailable, resp.StatusCode)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil || claims == nil {
		return nil, fmt.Errorf("introspecting at %s: %w: answer is not a JSON object", o.cfg.Issuer, idp.ErrUnavailable)
	}
	active, _ := claims["active"].(bool)
	delete(claims, "active")
	return &introspection{active: active, claims: claims}, nil
}
