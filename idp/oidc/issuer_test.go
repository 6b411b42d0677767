package oidc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// oidcIssuer is an in-process OpenID Connect issuer: discovery, JWKS and introspection over
// httptest, signing with real keys, with counters and fault injection.
type oidcIssuer struct {
	t   testing.TB
	srv *httptest.Server

	discoveryHits     atomic.Int64
	jwksHits          atomic.Int64
	introspectionHits atomic.Int64

	mu        sync.Mutex
	published []jwk.Key          // public keys served by the JWKS endpoint
	down      bool               // every endpoint answers 503
	block     chan struct{}      // when set, the JWKS endpoint waits on it (a slow IdP)
	active    map[string]bool    // introspection answers by token; absent means inactive
	extra     map[string]any     // extra claims of introspection answers
	clientID  string             // expected introspection client
	secret    string             // expected introspection secret
	signers   map[string]jwk.Key // private keys by kid
	// token, when set, answers the token endpoint (code and refresh grants).
	token     http.HandlerFunc
	tokenHits atomic.Int64
}

func newOIDCIssuer(t testing.TB) *oidcIssuer {
	t.Helper()
	is := &oidcIssuer{t: t, active: map[string]bool{}, signers: map[string]jwk.Key{}, clientID: "gw", secret: "gw-secret"}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.discoveryHits.Add(1)
		if is.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                 is.srv.URL,
			"jwks_uri":               is.srv.URL + "/jwks",
			"token_endpoint":         is.srv.URL + "/token",
			"introspection_endpoint": is.srv.URL + "/introspect",
			"authorization_endpoint": is.srv.URL + "/auth",
			"end_session_endpoint":   is.srv.URL + "/logout",
		})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		is.tokenHits.Add(1)
		if is.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		is.mu.Lock()
		h := is.token
		is.mu.Unlock()
		if h == nil {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return
		}
		h(w, r)
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.jwksHits.Add(1)
		is.mu.Lock()
		block := is.block
		is.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		if is.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		is.mu.Lock()
		set := jwk.NewSet()
		for _, k := range is.published {
			_ = set.AddKey(k)
		}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) {
		is.introspectionHits.Add(1)
		if is.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		id, secret, ok := r.BasicAuth()
		is.mu.Lock()
		wantID, wantSecret := is.clientID, is.secret
		is.mu.Unlock()
		if !ok || id != wantID || secret != wantSecret {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		tok := r.PostFormValue("token")
		is.mu.Lock()
		ans := map[string]any{"active": is.active[tok]}
		if is.active[tok] {
			for k, v := range is.extra {
				ans[k] = v
			}
		}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		is.unblock()
		is.srv.Close()
	})
	return is
}

func (is *oidcIssuer) URL() string { return is.srv.URL }

func (is *oidcIssuer) isDown() bool {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.down
}

func (is *oidcIssuer) setDown(down bool) {
	is.mu.Lock()
	is.down = down
	is.mu.Unlock()
}

// slowJWKS makes the JWKS endpoint hang until unblock (or until the client gives up).
func (is *oidcIssuer) slowJWKS() {
	is.mu.Lock()
	is.block = make(chan struct{})
	is.mu.Unlock()
}

func (is *oidcIssuer) unblock() {
	is.mu.Lock()
	if is.block != nil {
		close(is.block)
		is.block = nil
	}
	is.mu.Unlock()
}

func (is *oidcIssuer) setActive(tok string, active bool) {
	is.mu.Lock()
	is.active[tok] = active
	is.mu.Unlock()
}

// rsaKey and ecKey generate keys once per test binary: RSA generation is slow.
var (
	oidcKeysOnce sync.Once
	oidcRSAKeys  []*rsa.PrivateKey
	oidcECKey    *ecdsa.PrivateKey
)

func oidcTestKeys(t testing.TB) ([]*rsa.PrivateKey, *ecdsa.PrivateKey) {
	t.Helper()
	oidcKeysOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			oidcRSAKeys = append(oidcRSAKeys, k)
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		oidcECKey = k
	})
	return oidcRSAKeys, oidcECKey
}

// addKey makes a private key available for signing under kid; publish controls whether the
// JWKS serves its public half.
func (is *oidcIssuer) addKey(kid string, priv any, alg jwa.SignatureAlgorithm, publish bool) {
	is.t.Helper()
	k, err := jwk.FromRaw(priv)
	if err != nil {
		is.t.Fatalf("jwk from key: %v", err)
	}
	_ = k.Set(jwk.KeyIDKey, kid)
	_ = k.Set(jwk.AlgorithmKey, alg)
	pub, err := k.PublicKey()
	if err != nil {
		is.t.Fatalf("public key: %v", err)
	}
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	is.mu.Lock()
	defer is.mu.Unlock()
	is.signers[kid] = k
	if publish {
		is.published = append(is.published, pub)
	}
}

// publishOnly replaces the JWKS with the keys of the given kids (key rotation).
func (is *oidcIssuer) publishOnly(kids ...string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published = nil
	for _, kid := range kids {
		pub, _ := is.signers[kid].PublicKey()
		_ = pub.Set(jwk.KeyUsageKey, "sig")
		is.published = append(is.published, pub)
	}
}

// sign signs claims with the key of kid.
func (is *oidcIssuer) sign(kid string, claims map[string]any) string {
	is.t.Helper()
	is.mu.Lock()
	k, ok := is.signers[kid]
	is.mu.Unlock()
	if !ok {
		is.t.Fatalf("no signer %q", kid)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		is.t.Fatal(err)
	}
	alg := k.Algorithm().(jwa.SignatureAlgorithm)
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	_ = hdr.Set(jws.TypeKey, "JWT")
	out, err := jws.Sign(payload, jws.WithKey(alg, k, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		is.t.Fatalf("signing: %v", err)
	}
	return string(out)
}

// claims returns a valid claim set of this issuer for sub, valid for 5 minutes from now.
func (is *oidcIssuer) claims(now time.Time, sub string) map[string]any {
	return map[string]any{
		"iss":   is.srv.URL,
		"sub":   sub,
		"aud":   []string{"gateway", "account"},
		"azp":   "portal",
		"exp":   now.Add(5 * time.Minute).Unix(),
		"iat":   now.Unix(),
		"scope": "openid profile email",
	}
}

// oidcUnsignedJWS builds a compact JWS from raw header and claims with an arbitrary signature part.
func oidcUnsignedJWS(t testing.TB, header, claims map[string]any, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

// oidcClock is a settable clock.
type oidcClock struct {
	mu  sync.Mutex
	now time.Time
}

func newOIDCClock() *oidcClock { return &oidcClock{now: time.Unix(1_800_000_000, 0)} }

func (c *oidcClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *oidcClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
