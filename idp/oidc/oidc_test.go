package oidc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
	"github.com/portcullis/portcullis/internal/idptest"
)

// oidcFixture is a provider wired to an in-process issuer with a fake clock.
type oidcFixture struct {
	is    *oidcIssuer
	clock *oidcClock
	p     *Provider
	calls sync.Map // op -> *atomic.Int64, from OnIdPCall
}

func newOIDCFixture(t *testing.T, mod func(*Config)) *oidcFixture {
	t.Helper()
	keys, ec := oidcTestKeys(t)
	f := &oidcFixture{is: newOIDCIssuer(t), clock: newOIDCClock()}
	f.is.addKey("k1", keys[0], jwa.RS256, true)
	f.is.addKey("k2", keys[1], jwa.RS256, false) // a later key, not yet published
	f.is.addKey("rogue", keys[2], jwa.RS256, false)
	f.is.addKey("ec1", ec, jwa.ES256, true)
	cfg := Config{
		Name:      "corp",
		Issuer:    f.is.URL(),
		Audience:  "gateway",
		Now:       f.clock.Now,
		Timeout:   2 * time.Second,
		OnIdPCall: func(_, op string, _ time.Duration, _ error) { f.counter(op).Add(1) },
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.p = p
	return f
}

func (f *oidcFixture) counter(op string) *atomic.Int64 {
	v, _ := f.calls.LoadOrStore(op, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (f *oidcFixture) token(t *testing.T, kid string, mod func(map[string]any)) string {
	t.Helper()
	c := f.is.claims(f.clock.Now(), "svc-1")
	if mod != nil {
		mod(c)
	}
	return f.is.sign(kid, c)
}

func bearerRequest(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/petstore", nil)
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

// wantDenial asserts err is a *Denial with the status (and, when set, a challenge fragment).
func wantDenial(t *testing.T, err error, status int, challenge string) *idp.Denial {
	t.Helper()
	var d *idp.Denial
	if !errors.As(err, &d) {
		t.Fatalf("err = %v, want a *Denial with status %d", err, status)
	}
	if d.Status != status {
		t.Fatalf("status = %d (%s), want %d", d.Status, d.Error(), status)
	}
	if challenge != "" && !strings.Contains(d.Challenge, challenge) {
		t.Fatalf("challenge = %q, want it to contain %q", d.Challenge, challenge)
	}
	return d
}

func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	var d *idp.Denial
	if errors.As(err, &d) {
		t.Fatalf("err = denial %v, want an ErrUnavailable error", d)
	}
	if !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("err = %v, want it to wrap ErrUnavailable", err)
	}
}

func TestNewDoesNoIO(t *testing.T) {
	f := newOIDCFixture(t, nil)
	if got := f.is.discoveryHits.Load() + f.is.jwksHits.Load(); got != 0 {
		t.Fatalf("issuer hits after New = %d, want 0", got)
	}
	if f.p.Name() != "corp" || f.p.Type() != "oidc" {
		t.Fatalf("Name/Type = %q/%q", f.p.Name(), f.p.Type())
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no name no issuer", Config{}, []string{"needs a name", "needs an issuer"}},
		{"issuer not a URL", Config{Name: "x", Issuer: "corp"}, []string{"not an http(s) URL"}},
		{"hmac algorithm", Config{Name: "x", Issuer: "https://id.example", Algorithms: []string{"HS256"}}, []string{`"HS256" is not accepted`}},
		{"none algorithm", Config{Name: "x", Issuer: "https://id.example", Algorithms: []string{"none"}}, []string{`"none" is not accepted`}},
		{"introspection without secret", Config{Name: "x", Issuer: "https://id.example", Introspection: true, ClientID: "gw"}, []string{"introspection needs"}},
		{"check_azp without audience", Config{Name: "x", Issuer: "https://id.example", CheckAZP: true}, []string{"check_azp needs an audience"}},
		{"negative leeway", Config{Name: "x", Issuer: "https://id.example", Leeway: -time.Second}, []string{"must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestOIDCExtract(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Leeway = 30 * time.Second
		c.Algorithms = []string{"RS256", "ES256"}
	})
	pub, err := f.is.signers["k1"].PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	var rawPub any
	if err := pub.Raw(&rawPub); err != nil {
		t.Fatal(err)
	}

	foreign := newOIDCIssuer(t)
	keys, _ := oidcTestKeys(t)
	foreign.addKey("f1", keys[0], jwa.RS256, true)

	tests := []struct {
		name       string
		authz      string // the whole Authorization header
		wantNil    bool   // not mine
		wantStatus int    // 0: granted
		wantSub    string
	}{
		{"valid RS256", "Bearer " + f.token(t, "k1", nil), false, 0, "svc-1"},
		{"valid ES256", "Bearer " + f.token(t, "ec1", nil), false, 0, "svc-1"},
		{"bearer scheme case-insensitive", "bearer " + f.token(t, "k1", nil), false, 0, "svc-1"},
		{"no header", "", true, 0, ""},
		{"basic scheme is not mine", "Basic YWxpY2U6cHc=", true, 0, ""},
		{"signature scheme is not mine", `Signature keyId="k",algorithm="hmac-sha256"`, true, 0, ""},
		{"opaque bearer without introspection is not mine", "Bearer opaque-token-value", true, 0, ""},
		{"other issuer is not mine", "Bearer " + foreign.sign("f1", foreign.claims(f.clock.Now(), "svc-1")), true, 0, ""},
		{"jwt without iss is not mine", "Bearer " + f.token(t, "k1", func(c map[string]any) { delete(c, "iss") }), true, 0, ""},
		{"unsigned alg none is not mine", "Bearer " + oidcUnsignedJWS(t, map[string]any{"alg": "none"}, f.is.claims(f.clock.Now(), "svc-1"), ""), true, 0, ""},
		{"alg none with a signature part", "Bearer " + oidcUnsignedJWS(t, map[string]any{"alg": "none", "kid": "k1"}, f.is.claims(f.clock.Now(), "svc-1"), "AAAA"), false, 401, ""},
		{"HS256 signed with the public key", "Bearer " + hs256WithPublicKey(t, rawPub, f.is.claims(f.clock.Now(), "svc-1")), false, 401, ""},
		{"RS384 not accepted", "Bearer " + rs384(t, f, "k1"), false, 401, ""},
		{"wrong audience", "Bearer " + f.token(t, "k1", func(c map[string]any) { c["aud"] = "other-api" }), false, 401, ""},
		{"no audience", "Bearer " + f.token(t, "k1", func(c map[string]any) { delete(c, "aud") }), false, 401, ""},
		{"expired", "Bearer " + f.token(t, "k1", func(c map[string]any) { c["exp"] = f.clock.Now().Add(-time.Minute).Unix() }), false, 401, ""},
		{"expired within leeway", "Bearer " + f.token(t, "k1", func(c map[string]any) { c["exp"] = f.clock.Now().Add(-10 * time.Second).Unix() }), false, 0, "svc-1"},
		{"no exp", "Bearer " + f.token(t, "k1", func(c map[string]any) { delete(c, "exp") }), false, 401, ""},
		{"not yet valid", "Bearer " + f.token(t, "k1", func(c map[string]any) { c["nbf"] = f.clock.Now().Add(time.Hour).Unix() }), false, 401, ""},
		{"nbf within leeway", "Bearer " + f.token(t, "k1", func(c map[string]any) { c["nbf"] = f.clock.Now().Add(10 * time.Second).Unix() }), false, 0, "svc-1"},
		{"no subject", "Bearer " + f.token(t, "k1", func(c map[string]any) { delete(c, "sub") }), false, 401, ""},
		{"signed by an unpublished key with a published kid", "Bearer " + signAs(t, f, "rogue", "k1"), false, 401, ""},
		{"tampered payload", "Bearer " + tamper(t, f.token(t, "k1", nil)), false, 401, ""},
		{"critical header", "Bearer " + withHeader(t, f, "k1", "crit", []string{"exp"}), false, 401, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.authz != "" {
				r.Header.Set("Authorization", tc.authz)
			}
			cred, err := f.p.Extract(t.Context(), r)
			switch {
			case tc.wantNil:
				if cred != nil || err != nil {
					t.Fatalf("Extract = %v, %v; want nil, nil (not mine)", cred, err)
				}
			case tc.wantStatus != 0:
				d := wantDenial(t, err, tc.wantStatus, `error="invalid_token"`)
				t.Logf("reason: %s", d.Reason)
			default:
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				if cred.Lookup != tc.wantSub {
					t.Errorf("Lookup = %q, want %q", cred.Lookup, tc.wantSub)
				}
				if got := cred.Claims["azp"]; got != "portal" {
					t.Errorf("claims[azp] = %v, want portal", got)
				}
				st, ok := TokenOf(cred)
				if !ok || st.Hash != sha256.Sum256([]byte(st.Raw)) || st.Expiry.IsZero() {
					t.Errorf("TokenOf = %+v, %v; want the token state", st, ok)
				}
			}
		})
	}
}

func oidcJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hs256WithPublicKey(t *testing.T, pub any, claims map[string]any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, "k1")
	out, err := jws.Sign(oidcJSON(t, claims), jws.WithKey(jwa.HS256, secret, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func rs384(t *testing.T, f *oidcFixture, kid string) string {
	t.Helper()
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	out, err := jws.Sign(oidcJSON(t, f.is.claims(f.clock.Now(), "svc-1")), jws.WithKey(jwa.RS384, f.is.signers[kid], jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// signAs signs with the key of signer but names kid in the header.
func signAs(t *testing.T, f *oidcFixture, signer, kid string) string {
	t.Helper()
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	// The raw key, because a jwk.Key would put its own kid in the header.
	var raw any
	if err := f.is.signers[signer].Raw(&raw); err != nil {
		t.Fatal(err)
	}
	out, err := jws.Sign(oidcJSON(t, f.is.claims(f.clock.Now(), "svc-1")), jws.WithKey(jwa.RS256, raw, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func withHeader(t *testing.T, f *oidcFixture, kid, name string, value any) string {
	t.Helper()
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	_ = hdr.Set(name, value)
	out, err := jws.Sign(oidcJSON(t, f.is.claims(f.clock.Now(), "svc-1")), jws.WithKey(jwa.RS256, f.is.signers[kid], jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// tamper replaces the payload of a signed token with a different one (sub changed).
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	var c map[string]any
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	c["sub"] = "admin"
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(oidcJSON(t, c)) + "." + parts[2]
}

func TestOIDCTokenLocations(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Header = "X-Partner-Token"
		c.Query = "access_token"
		c.Cookie = "partner_token"
	})
	tok := f.token(t, "k1", nil)
	tests := []struct {
		name       string
		build      func(r *http.Request)
		wantSub    string
		wantStatus int
	}{
		{"raw token in own header", func(r *http.Request) { r.Header.Set("X-Partner-Token", tok) }, "svc-1", 0},
		{"bearer token in own header", func(r *http.Request) { r.Header.Set("X-Partner-Token", "Bearer "+tok) }, "svc-1", 0},
		{"query parameter", func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok }, "svc-1", 0},
		{"cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "partner_token", Value: tok}) }, "svc-1", 0},
		{"authorization header is not read", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, "", 0},
		{"garbage in own header is invalid", func(r *http.Request) { r.Header.Set("X-Partner-Token", "garbage") }, "", 401},
		{"expired token in cookie is invalid", func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "partner_token", Value: f.token(t, "k1", func(c map[string]any) { c["exp"] = f.clock.Now().Add(-time.Hour).Unix() })})
		}, "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			tc.build(r)
			cred, err := f.p.Extract(t.Context(), r)
			if tc.wantStatus != 0 {
				wantDenial(t, err, tc.wantStatus, "")
				return
			}
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			got := ""
			if cred != nil {
				got = cred.Lookup
			}
			if got != tc.wantSub {
				t.Fatalf("Lookup = %q, want %q", got, tc.wantSub)
			}
		})
	}
}

// Two tokens of two issuers in two headers: each provider takes its own.
func TestOIDCTwoIssuersTwoHeaders(t *testing.T) {
	corp := newOIDCFixture(t, nil)
	partner := newOIDCFixture(t, func(c *Config) { c.Name = "partner"; c.Header = "X-Partner-Token" })
	r := bearerRequest(corp.token(t, "k1", func(c map[string]any) { c["sub"] = "corp-sub" }))
	r.Header.Set("X-Partner-Token", partner.token(t, "k1", func(c map[string]any) { c["sub"] = "partner-sub" }))
	for _, tc := range []struct {
		p    *Provider
		want string
	}{{corp.p, "corp-sub"}, {partner.p, "partner-sub"}} {
		cred, err := tc.p.Extract(t.Context(), r)
		if err != nil || cred == nil || cred.Lookup != tc.want {
			t.Fatalf("%s: Extract = %+v, %v; want subject %q", tc.p.Name(), cred, err, tc.want)
		}
	}
	// The partner's token in the corp provider's header is "not mine" for corp.
	r2 := bearerRequest(partner.token(t, "k1", nil))
	if cred, err := corp.p.Extract(t.Context(), r2); cred != nil || err != nil {
		t.Fatalf("corp Extract of a partner token = %v, %v; want nil, nil", cred, err)
	}
}

func TestOIDCCheckAZP(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) { c.Audience = "portal"; c.CheckAZP = true })
	tests := []struct {
		name string
		mod  func(map[string]any)
		ok   bool
	}{
		{"azp matches", func(c map[string]any) { c["aud"] = "account" }, true},
		{"aud matches", func(c map[string]any) { c["azp"] = "other"; c["aud"] = "portal" }, true},
		{"neither", func(c map[string]any) { c["azp"] = "other"; c["aud"] = "account" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", tc.mod)))
			if tc.ok && err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if !tc.ok {
				wantDenial(t, err, 401, "")
			}
		})
	}
}

func TestOIDCSubjectClaim(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) { c.SubjectClaim = "azp" })
	cred, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Lookup != "portal" {
		t.Fatalf("Lookup = %q, want the azp claim %q", cred.Lookup, "portal")
	}
}

func TestOIDCKeyRotation(t *testing.T) {
	f := newOIDCFixture(t, nil)
	if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
		t.Fatalf("Extract with k1: %v", err)
	}
	if got := f.is.jwksHits.Load(); got != 1 {
		t.Fatalf("JWKS hits after first token = %d, want 1", got)
	}
	// The issuer rotates: k2 is published and signs new tokens; k1 is retired.
	f.is.publishOnly("k2")
	f.clock.Advance(11 * time.Second)
	for i := range 3 {
		if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k2", nil))); err != nil {
			t.Fatalf("Extract %d with the rotated key: %v", i, err)
		}
	}
	if got := f.is.jwksHits.Load(); got != 2 {
		t.Fatalf("JWKS hits after rotation = %d, want 2 (one refetch for the new kid)", got)
	}
	if got := f.counter("jwks").Load(); got != 2 {
		t.Fatalf("OnIdPCall(jwks) = %d, want 2", got)
	}
	if got := f.counter("discovery").Load(); got != 1 {
		t.Fatalf("OnIdPCall(discovery) = %d, want 1", got)
	}
}

func TestOIDCRandomKidFloodIsRateLimited(t *testing.T) {
	f := newOIDCFixture(t, nil)
	if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(11 * time.Second)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := signAs(t, f, "rogue", "random-"+string(rune('a'+i%26))+strings.Repeat("x", i))
			_, err := f.p.Extract(context.Background(), bearerRequest(tok))
			var d *idp.Denial
			if !errors.As(err, &d) || d.Status != 401 {
				t.Errorf("Extract of a random kid = %v, want 401", err)
			}
		}()
	}
	wg.Wait()
	if got := f.is.jwksHits.Load(); got != 2 {
		t.Fatalf("JWKS hits after 50 random kids = %d, want 2 (initial + one refetch)", got)
	}
	// Valid tokens keep verifying from the cache meanwhile.
	if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
		t.Fatalf("Extract with a known key during the flood: %v", err)
	}
	// Once the interval has passed, one more refetch is allowed.
	f.clock.Advance(11 * time.Second)
	for range 5 {
		_, _ = f.p.Extract(t.Context(), bearerRequest(signAs(t, f, "rogue", "another")))
	}
	if got := f.is.jwksHits.Load(); got != 3 {
		t.Fatalf("JWKS hits after the interval = %d, want 3", got)
	}
}

func TestOIDCUnreachableIssuer(t *testing.T) {
	t.Run("down before first use", func(t *testing.T) {
		f := newOIDCFixture(t, nil)
		f.is.setDown(true)
		_, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil)))
		wantUnavailable(t, err)
		if err := f.p.Ready(t.Context()); !errors.Is(err, idp.ErrUnavailable) {
			t.Fatalf("Ready = %v, want ErrUnavailable", err)
		}
		// Retries of discovery are rate-limited too.
		for range 10 {
			_, _ = f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil)))
		}
		if got := f.is.discoveryHits.Load(); got != 1 {
			t.Fatalf("discovery hits = %d, want 1 within the interval", got)
		}
		// The issuer comes back: the next attempt after the interval succeeds.
		f.is.setDown(false)
		f.clock.Advance(11 * time.Second)
		if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
			t.Fatalf("Extract after the issuer is back: %v", err)
		}
		if err := f.p.Ready(t.Context()); err != nil {
			t.Fatalf("Ready after the issuer is back: %v", err)
		}
	})

	t.Run("cached keys keep verifying", func(t *testing.T) {
		f := newOIDCFixture(t, nil)
		if err := f.p.Ready(t.Context()); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		f.is.setDown(true)
		f.clock.Advance(11 * time.Second)
		if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
			t.Fatalf("Extract with a cached key while the issuer is down: %v", err)
		}
		// An unknown kid cannot be looked up: the provider cannot decide.
		_, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k2", nil)))
		wantUnavailable(t, err)
		if err := f.p.Ready(t.Context()); !errors.Is(err, idp.ErrUnavailable) {
			t.Fatalf("Ready while down = %v, want ErrUnavailable", err)
		}
		// Keys past their max age are refreshed on use; a failed refresh keeps them.
		f.clock.Advance(DefaultJWKSMaxAge)
		if _, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil))); err != nil {
			t.Fatalf("Extract with stale cached keys while the issuer is down: %v", err)
		}
	})

	t.Run("slow jwks times out", func(t *testing.T) {
		f := newOIDCFixture(t, func(c *Config) { c.Timeout = 100 * time.Millisecond })
		f.is.slowJWKS()
		_, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", nil)))
		wantUnavailable(t, err)
	})

	t.Run("refused connection", func(t *testing.T) {
		is := newOIDCIssuer(t)
		url := is.URL()
		is.srv.Close()
		p, err := New(Config{Name: "gone", Issuer: url}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok := oidcUnsignedJWS(t, map[string]any{"alg": "RS256", "kid": "k"}, map[string]any{"iss": url, "sub": "x"}, "AAAA")
		_, err = p.Extract(t.Context(), bearerRequest(tok))
		wantUnavailable(t, err)
	})
}

func TestOIDCIntrospection(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Introspection = true
		c.ClientID, c.ClientSecret = "gw", "gw-secret"
		c.IntrospectionTTL = time.Minute
	})
	var hits, misses atomic.Int64
	f.p.cfg.OnCache = func(_, cache string, hit bool) {
		if cache == "introspection" {
			if hit {
				hits.Add(1)
			} else {
				misses.Add(1)
			}
		}
	}
	live := f.token(t, "k1", func(c map[string]any) { c["jti"] = "live" })
	revoked := f.token(t, "k1", func(c map[string]any) { c["jti"] = "revoked" })
	f.is.setActive(live, true)

	if _, err := f.p.Extract(t.Context(), bearerRequest(live)); err != nil {
		t.Fatalf("active token: %v", err)
	}
	wantDenial(t, func() error { _, err := f.p.Extract(t.Context(), bearerRequest(revoked)); return err }(), 401, `error="invalid_token"`)

	// Cached: no further call for either token.
	before := f.is.introspectionHits.Load()
	for range 3 {
		_, _ = f.p.Extract(t.Context(), bearerRequest(live))
		_, _ = f.p.Extract(t.Context(), bearerRequest(revoked))
	}
	if got := f.is.introspectionHits.Load(); got != before {
		t.Fatalf("introspection calls while cached = %d, want %d", got, before)
	}
	if hits.Load() != 6 {
		t.Fatalf("cache hits = %d, want 6", hits.Load())
	}

	// Revocation at the issuer is seen once the cached answer has expired.
	f.is.setActive(live, false)
	f.clock.Advance(61 * time.Second)
	wantDenial(t, func() error { _, err := f.p.Extract(t.Context(), bearerRequest(live)); return err }(), 401, "")

	// An unreachable introspection endpoint fails closed, even though the keys are cached.
	f.is.setDown(true)
	fresh := f.token(t, "k1", func(c map[string]any) { c["jti"] = "fresh" })
	_, err := f.p.Extract(t.Context(), bearerRequest(fresh))
	wantUnavailable(t, err)
}

func TestOIDCIntrospectionCacheBoundByExpiry(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Introspection = true
		c.ClientID, c.ClientSecret = "gw", "gw-secret"
		c.IntrospectionTTL = time.Hour
		c.Leeway = time.Hour // lets the token pass local checks after exp
	})
	tok := f.token(t, "k1", func(c map[string]any) { c["exp"] = f.clock.Now().Add(30 * time.Second).Unix() })
	f.is.setActive(tok, true)
	if _, err := f.p.Extract(t.Context(), bearerRequest(tok)); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(31 * time.Second)
	_, _ = f.p.Extract(t.Context(), bearerRequest(tok))
	if got := f.is.introspectionHits.Load(); got != 2 {
		t.Fatalf("introspection calls = %d, want 2 (cache entry ends at exp, not the TTL)", got)
	}
}

func TestOIDCIntrospectionOpaque(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Introspection = true
		c.ClientID, c.ClientSecret = "gw", "gw-secret"
	})
	f.is.mu.Lock()
	f.is.extra = map[string]any{"sub": "opaque-sub", "iss": f.is.URL(), "aud": "gateway", "exp": f.clock.Now().Add(time.Minute).Unix(), "scope": "read"}
	f.is.mu.Unlock()
	f.is.setActive("opaque-1", true)
	cred, err := f.p.Extract(t.Context(), bearerRequest("opaque-1"))
	if err != nil {
		t.Fatalf("Extract of an active opaque token: %v", err)
	}
	if cred.Lookup != "opaque-sub" {
		t.Fatalf("Lookup = %q, want opaque-sub", cred.Lookup)
	}
	_, err = f.p.Extract(t.Context(), bearerRequest("opaque-unknown"))
	wantDenial(t, err, 401, "")
}

func TestOIDCIntrospectionBadClientCredentials(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) {
		c.Introspection = true
		c.ClientID, c.ClientSecret = "gw", "wrong"
	})
	tok := f.token(t, "k1", nil)
	f.is.setActive(tok, true)
	_, err := f.p.Extract(t.Context(), bearerRequest(tok))
	wantUnavailable(t, err)
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error %q reveals the client secret", err)
	}
}

func TestOIDCVerify(t *testing.T) {
	f := newOIDCFixture(t, nil)
	cred, err := f.p.Extract(t.Context(), bearerRequest(f.token(t, "k1", func(c map[string]any) {
		c["groups"] = []string{"eng", "ops"}
		c["tier"] = "gold"
		c["level"] = 3
	})))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		spec       idp.BindingSpec
		wantStatus int
	}{
		{"subject only", idp.BindingSpec{Subject: "svc-1"}, 0},
		{"claim exact", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"tier": {"gold"}}}, 0},
		{"claim one of", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"tier": {"silver", "gold"}}}, 0},
		{"list claim contains", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"groups": {"ops"}}}, 0},
		{"number claim", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"level": {"3"}}}, 0},
		{"claim mismatch", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"tier": {"silver"}}}, 403},
		{"claim absent", idp.BindingSpec{Subject: "svc-1", Claims: map[string][]string{"dept": {"x"}}}, 403},
		{"scopes present", idp.BindingSpec{Subject: "svc-1", Scopes: []string{"profile", "email"}}, 0},
		{"scope missing", idp.BindingSpec{Subject: "svc-1", Scopes: []string{"admin"}}, 403},
		{"other subject", idp.BindingSpec{Subject: "svc-2"}, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := f.p.Compile(tc.spec)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			err = f.p.Verify(t.Context(), nil, cred, b)
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			wantDenial(t, err, tc.wantStatus, "")
		})
	}
}

func TestOIDCCompile(t *testing.T) {
	f := newOIDCFixture(t, nil)
	b, err := f.p.Compile(idp.BindingSpec{Subject: "svc-1"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Lookup() != "svc-1" || b.Identifier() != "corp:svc-1" {
		t.Fatalf("Lookup/Identifier = %q/%q", b.Lookup(), b.Identifier())
	}
	cm, err := f.p.Compile(idp.BindingSpec{Consumer: "Staff", Claims: map[string][]string{"team": {"a"}}})
	if err != nil {
		t.Fatalf("a binding without subject: %v", err)
	}
	if !cm.(idp.ClaimMatched).ClaimMatched() || cm.Lookup() != "" || cm.Identifier() != "corp:Staff" {
		t.Fatalf("without subject: ClaimMatched %v, Lookup %q, Identifier %q; want a claim-matched binding named corp:Staff", cm.(idp.ClaimMatched).ClaimMatched(), cm.Lookup(), cm.Identifier())
	}
	bad := []struct {
		name string
		spec idp.BindingSpec
		want string
	}{
		{"realm roles", idp.BindingSpec{Subject: "s", RealmRoles: []string{"r"}}, "keycloak"},
		{"permissions", idp.BindingSpec{Subject: "s", Permissions: []string{"a#b"}}, "keycloak"},
		{"empty claim values", idp.BindingSpec{Subject: "s", Claims: map[string][]string{"x": nil}}, "claims"},
		{"scope with space", idp.BindingSpec{Subject: "s", Scopes: []string{"a b"}}, "scopes"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.p.Compile(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestOIDCDenials(t *testing.T) {
	f := newOIDCFixture(t, nil)
	if d := f.p.Missing(); d.Status != 401 || d.Challenge != `Bearer realm="corp"` {
		t.Fatalf("Missing = %+v", d)
	}
	if d := f.p.Unknown(); d.Status != 401 || d.Challenge != `Bearer realm="corp", error="invalid_token"` {
		t.Fatalf("Unknown = %+v", d)
	}
}

func TestOIDCHideCredentials(t *testing.T) {
	f := newOIDCFixture(t, func(c *Config) { c.HideCredentials = true; c.Cookie = "tok"; c.Query = "tok" })
	foreign := newOIDCIssuer(t)
	keys, _ := oidcTestKeys(t)
	foreign.addKey("f1", keys[0], jwa.RS256, true)
	foreignTok := foreign.sign("f1", foreign.claims(f.clock.Now(), "x"))
	ours := f.token(t, "k1", nil)

	r := httptest.NewRequest(http.MethodGet, "/?tok="+ours+"&keep=1", nil)
	r.Header.Add("Authorization", "Bearer "+ours)
	r.Header.Add("Authorization", "Bearer "+foreignTok)
	r.AddCookie(&http.Cookie{Name: "tok", Value: ours})
	r.AddCookie(&http.Cookie{Name: "session", Value: "s1"})
	f.p.HideCredentials(r)

	if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+foreignTok {
		t.Errorf("Authorization = %v, want only the foreign token", got)
	}
	if r.URL.Query().Has("tok") || r.URL.Query().Get("keep") != "1" {
		t.Errorf("query = %q, want tok removed and keep kept", r.URL.RawQuery)
	}
	if _, err := r.Cookie("tok"); err == nil {
		t.Errorf("cookie tok still present")
	}
	if c, err := r.Cookie("session"); err != nil || c.Value != "s1" {
		t.Errorf("cookie session = %v, %v; want kept", c, err)
	}

	// Without hide_credentials nothing is touched.
	g := newOIDCFixture(t, nil)
	r2 := bearerRequest(ours)
	g.p.HideCredentials(r2)
	if r2.Header.Get("Authorization") == "" {
		t.Error("Authorization removed although hide_credentials is off")
	}
}

func TestOIDCConcurrentFirstUseFetchesOnce(t *testing.T) {
	f := newOIDCFixture(t, nil)
	tok := f.token(t, "k1", nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.p.Extract(context.Background(), bearerRequest(tok)); err != nil {
				t.Errorf("Extract: %v", err)
			}
		}()
	}
	wg.Wait()
	if d, j := f.is.discoveryHits.Load(), f.is.jwksHits.Load(); d != 1 || j != 1 {
		t.Fatalf("discovery/jwks hits = %d/%d, want 1/1", d, j)
	}
}

func BenchmarkOIDCExtract(b *testing.B) {
	keys, _ := oidcTestKeys(b)
	is := newOIDCIssuer(b)
	is.addKey("k1", keys[0], jwa.RS256, true)
	p, err := New(Config{Name: "corp", Issuer: is.URL(), Audience: "gateway"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok := is.sign("k1", is.claims(time.Now(), "svc-1"))
	r := bearerRequest(tok)
	if _, err := p.Extract(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Extract(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOIDCVerifiedTokenCache(t *testing.T) {
	var hits, misses atomic.Int64
	f := newOIDCFixture(t, func(c *Config) {
		c.OnCache = func(_, cache string, hit bool) {
			if cache == "token" {
				if hit {
					hits.Add(1)
				} else {
					misses.Add(1)
				}
			}
		}
	})
	tok := f.token(t, "k1", func(c map[string]any) { c["exp"] = f.clock.Now().Add(time.Minute).Unix() })
	for range 3 {
		if _, err := f.p.Extract(t.Context(), bearerRequest(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if hits.Load() != 2 || misses.Load() != 1 {
		t.Fatalf("token cache hits/misses = %d/%d, want 2/1", hits.Load(), misses.Load())
	}
	// A cached token still expires.
	f.clock.Advance(2 * time.Minute)
	_, err := f.p.Extract(t.Context(), bearerRequest(tok))
	wantDenial(t, err, 401, `error="invalid_token"`)
}

func TestOIDCDeclined(t *testing.T) {
	corp := newOIDCFixture(t, nil)
	partner := newOIDCFixture(t, func(c *Config) { c.Name = "partner" })
	own := newOIDCFixture(t, func(c *Config) { c.Header = "X-Corp-Token"; c.Query = "access_token" })
	partnerTok := partner.token(t, "k1", nil)
	tests := []struct {
		name       string
		p          *Provider
		build      func(r *http.Request)
		wantReason string // "" when nothing is declined
	}{
		{"nothing", corp.p, func(*http.Request) {}, ""},
		{"another scheme", corp.p, func(r *http.Request) { r.Header.Set("Authorization", "Basic YWxpY2U6cHc=") }, ""},
		{"empty bearer", corp.p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }, ""},
		{"token of another issuer", corp.p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+partnerTok) },
			"no identity provider accepts the token's issuer \"" + partner.is.URL() + "\""},
		{"opaque bearer", corp.p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer not-a-token") },
			"no identity provider claims the bearer token"},
		{"another issuer in an own header", own.p, func(r *http.Request) { r.Header.Set("X-Corp-Token", partnerTok) },
			"no identity provider accepts the token's issuer"},
		{"another issuer in an own query parameter", own.p, func(r *http.Request) { r.URL.RawQuery = "access_token=" + partnerTok },
			"no identity provider accepts the token's issuer"},
		{"authorization is not an own header's place", own.p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+partnerTok) }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			tc.build(r)
			d := tc.p.Declined(r)
			if tc.wantReason == "" {
				if d != nil {
					t.Fatalf("Declined = %v, want nil", d)
				}
				return
			}
			if d == nil {
				t.Fatalf("Declined = nil, want a denial with reason %q", tc.wantReason)
			}
			if d.Status != http.StatusUnauthorized || d.Message != "Invalid token" || !strings.Contains(d.Challenge, `error="invalid_token"`) {
				t.Errorf("got %d %q challenge %q, want 401 \"Invalid token\" with error=\"invalid_token\"", d.Status, d.Message, d.Challenge)
			}
			if !strings.Contains(d.Reason, tc.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", d.Reason, tc.wantReason)
			}
		})
	}
}

// A token no provider of the policy claims is an invalid token for the chain, not a missing one;
// a route with an anonymous consumer still serves such a caller as anonymous.
func TestChainDeclinedToken(t *testing.T) {
	corp := newOIDCFixture(t, nil)
	partner := newOIDCFixture(t, func(c *Config) { c.Name = "partner" })
	keys := local.NewKeyAuth(local.KeyAuthConfig{Name: "keys"})
	idx := idptest.NewIndex()
	idx.Add(t, "svc", corp.p, idp.BindingSpec{Subject: "svc-1"})
	chain := idp.NewChain([]idp.Provider{keys, corp.p}, idx)
	tests := []struct {
		name      string
		tok       string
		anonymous string
		wantMsg   string
		wantAnon  bool
	}{
		{name: "own token", tok: corp.token(t, "k1", nil)},
		{name: "no token", wantMsg: "Missing API key in request"},
		{name: "token of an issuer no provider accepts", tok: partner.token(t, "k1", nil), wantMsg: "Invalid token"},
		{name: "opaque token", tok: "opaque", wantMsg: "Invalid token"},
		{name: "anonymous route", tok: partner.token(t, "k1", nil), anonymous: "guest", wantAnon: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &idp.Trace{}
			res, err := chain.Evaluate(t.Context(), bearerRequest(tc.tok), tc.anonymous, tr)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Evaluate: %v", err)
				}
				if res.Anonymous != tc.wantAnon {
					t.Fatalf("Anonymous = %v, want %v", res.Anonymous, tc.wantAnon)
				}
				return
			}
			d := wantDenial(t, err, http.StatusUnauthorized, "")
			if d.Message != tc.wantMsg {
				t.Fatalf("message = %q, want %q", d.Message, tc.wantMsg)
			}
			if last := tr.Steps[len(tr.Steps)-1]; last.OK {
				t.Errorf("last trace step %+v, want a refusal", last)
			}
		})
	}
}

// TestChainClaimMatched: a binding without subject names its consumer for every token meeting
// its conditions; an exact subject binding wins; among claim-matched ones the first in policy
// order whose conditions hold wins; a token meeting none is refused with the first refusal.
func TestChainClaimMatched(t *testing.T) {
	corp := newOIDCFixture(t, nil)
	keys := local.NewKeyAuth(local.KeyAuthConfig{Name: "keys"})
	idx := idptest.NewIndex()
	idx.Add(t, "Service", corp.p, idp.BindingSpec{Consumer: "Service", Subject: "svc-1", Claims: map[string][]string{"team": {"ops"}}})
	idx.Add(t, "Admins", corp.p, idp.BindingSpec{Consumer: "Admins", Claims: map[string][]string{"team": {"admin"}}})
	idx.Add(t, "Staff", corp.p, idp.BindingSpec{Consumer: "Staff", Claims: map[string][]string{"team": {"admin", "dev"}}})
	idx.Add(t, "Signed", corp.p, idp.BindingSpec{Consumer: "Signed", Claims: map[string][]string{"team": {"partner"}}})
	idx.Add(t, "Signed", keys, idp.BindingSpec{Consumer: "Signed", Key: "signed-key"})
	chain := idp.NewChain([]idp.Provider{keys, corp.p}, idx)
	tests := []struct {
		name         string
		sub, team    string
		key          string
		wantConsumer string
		wantStatus   int
	}{
		{name: "exact subject wins over claims", sub: "svc-1", team: "admin", wantStatus: http.StatusForbidden},
		{name: "exact subject with its conditions", sub: "svc-1", team: "ops", wantConsumer: "Service"},
		{name: "first claim-matched in policy order", sub: "alice", team: "admin", wantConsumer: "Admins"},
		{name: "a later claim-matched consumer", sub: "bob", team: "dev", wantConsumer: "Staff"},
		{name: "no conditions met", sub: "eve", team: "guest", wantStatus: http.StatusForbidden},
		{name: "a claim-matched chain with a key", sub: "pat", team: "partner", key: "signed-key", wantConsumer: "Signed"},
		{name: "a claim-matched chain without its key", sub: "pat", team: "partner", wantStatus: http.StatusUnauthorized},
		{name: "a key of another consumer", sub: "pat", team: "partner", key: "nope", wantStatus: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := corp.token(t, "k1", func(c map[string]any) { c["sub"], c["team"] = tc.sub, tc.team })
			r := bearerRequest(tok)
			if tc.key != "" {
				r.Header.Set("apikey", tc.key)
			}
			tr := &idp.Trace{}
			res, err := chain.Evaluate(t.Context(), r, "", tr)
			if tc.wantStatus != 0 {
				wantDenial(t, err, tc.wantStatus, "")
				return
			}
			if err != nil {
				t.Fatalf("Evaluate: %v (trace %+v)", err, tr.Steps)
			}
			if res.Consumer != tc.wantConsumer || res.Subject() != tc.sub {
				t.Errorf("got consumer %q subject %q, want %q %q", res.Consumer, res.Subject(), tc.wantConsumer, tc.sub)
			}
		})
	}
}
