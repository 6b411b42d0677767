package local

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/portcullis/portcullis/idp"
)

// jwtTestKeys are generated once per test binary: RSA generation is slow.
var jwtTestKeys = sync.OnceValue(func() map[string]crypto.Signer {
	keys := map[string]crypto.Signer{}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	keys["RSA"] = rk
	for name, c := range map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	keys["Ed25519"] = ek
	return keys
})

func jwtPublicPEM(t testing.TB, k crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func jwtPrivatePEM(t testing.TB, k crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// jwtSign signs claims with alg and key (a []byte secret or a private key).
func jwtSign(t testing.TB, alg string, key any, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(alg), key))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// jwtUnsigned builds a token with an arbitrary header and no signature.
func jwtUnsigned(header, claims map[string]any) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

func jwtRequest(header string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	return r
}

// errLocalNotMine marks a credential the provider did not claim.
var errLocalNotMine = errors.New("not mine")

// jwtCheck runs Extract then Verify against bd.
func jwtCheck(p *JWTAuth, r *http.Request, bd idp.Binding) error {
	cred, err := p.Extract(context.Background(), r)
	if err != nil {
		return err
	}
	if cred == nil {
		return errLocalNotMine
	}
	if cred.Lookup != bd.Lookup() {
		return p.Unknown()
	}
	return p.Verify(context.Background(), r, cred, bd)
}

var jwtNow = time.Unix(1_700_000_000, 0)

func newTestJWT(t testing.TB, cfg JWTAuthConfig) *JWTAuth {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "jwt"
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return jwtNow }
	}
	p, err := NewJWTAuth(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJWTAuthAlgorithms(t *testing.T) {
	keys := jwtTestKeys()
	claims := map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Hour).Unix()}
	tests := []struct {
		alg     string
		signKey any
		spec    idp.BindingSpec
	}{
		{alg: "HS256", signKey: []byte("s3cret"), spec: idp.BindingSpec{Secret: "s3cret"}},
		{alg: "HS384", signKey: []byte("s3cret"), spec: idp.BindingSpec{Secret: "s3cret"}},
		{alg: "HS512", signKey: []byte("s3cret"), spec: idp.BindingSpec{Secret: "s3cret"}},
		{alg: "RS256", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "RS384", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "RS512", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "PS256", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "PS384", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "PS512", signKey: keys["RSA"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["RSA"])}},
		{alg: "ES256", signKey: keys["P-256"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["P-256"])}},
		{alg: "ES384", signKey: keys["P-384"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["P-384"])}},
		{alg: "ES512", signKey: keys["P-521"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["P-521"])}},
		{alg: "EdDSA", signKey: keys["Ed25519"], spec: idp.BindingSpec{PublicKey: jwtPublicPEM(t, keys["Ed25519"])}},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			p := newTestJWT(t, JWTAuthConfig{CacheSize: -1})
			spec := tt.spec
			spec.Key, spec.Algorithm = "user-key", tt.alg
			bd, err := p.Compile(spec)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			tok := jwtSign(t, tt.alg, tt.signKey, claims)
			if err := jwtCheck(p, jwtRequest("Bearer "+tok), bd); err != nil {
				t.Fatalf("valid token: got %v, want granted", err)
			}
			// Change one character of the signature to another base64url character.
			sig := []byte(tok[strings.LastIndexByte(tok, '.')+1:])
			if sig[3] == 'A' {
				sig[3] = 'B'
			} else {
				sig[3] = 'A'
			}
			bad := tok[:strings.LastIndexByte(tok, '.')+1] + string(sig)
			localDenial(t, jwtCheck(p, jwtRequest("Bearer "+bad), bd), http.StatusUnauthorized, "failed to verify jwt")
		})
	}
}

func TestJWTAuthExtractAndVerify(t *testing.T) {
	keys := jwtTestKeys()
	rsaPEM := jwtPublicPEM(t, keys["RSA"])
	secret := []byte("s3cret")
	p := newTestJWT(t, JWTAuthConfig{Leeway: 30 * time.Second, ForeignIssuers: []string{"https://idp.example"}, CacheSize: -1})
	hs, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: string(secret)})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Compile(idp.BindingSpec{Key: "rsa-key", PublicKey: rsaPEM, Algorithm: "RS256"})
	if err != nil {
		t.Fatal(err)
	}
	valid := jwtSign(t, "HS256", secret, map[string]any{"key": "user-key"})
	tamperedPayload := func() string {
		parts := strings.Split(valid, ".")
		parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"key":"user-key","admin":true}`))
		return strings.Join(parts, ".")
	}()
	at := func(d time.Duration) int64 { return jwtNow.Add(d).Unix() }

	tests := []struct {
		name       string
		header     string
		binding    idp.Binding
		wantErr    error
		wantDenial string
		wantReason string
	}{
		{name: "no token", header: "", binding: hs, wantErr: errLocalNotMine},
		{name: "basic is not mine", header: basicHeader("a", "b"), binding: hs, wantErr: errLocalNotMine},
		{name: "signature is not mine", header: `Signature keyId="k",signature="x"`, binding: hs, wantErr: errLocalNotMine},
		{name: "two parts is not mine", header: "Bearer abc.def", binding: hs, wantErr: errLocalNotMine},
		{name: "opaque bearer is not mine", header: "Bearer opaque-token", binding: hs, wantErr: errLocalNotMine},
		{name: "bearer", header: "Bearer " + valid, binding: hs},
		{name: "bearer lowercase", header: "bearer " + valid, binding: hs},
		{name: "without bearer", header: valid, binding: hs},
		{name: "unparseable three parts", header: "Bearer abc.def.ghi", binding: hs, wantDenial: "JWT token invalid"},
		{name: "payload not an object", header: "Bearer " + jwtUnsigned(map[string]any{"alg": "HS256"}, nil), binding: hs, wantDenial: "JWT token invalid"},
		{name: "exp not a number", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "exp": "soon"}), binding: hs, wantDenial: "JWT token invalid"},
		{name: "no key claim", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"sub": "x"}), binding: hs, wantDenial: "missing user key in JWT token"},
		{name: "key claim not a string", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": 42}), binding: hs, wantDenial: "missing user key in JWT token"},
		{name: "foreign issuer is not mine", header: "Bearer " + jwtSign(t, "RS256", keys["RSA"], map[string]any{"iss": "https://idp.example", "sub": "x"}), binding: hs, wantErr: errLocalNotMine},
		{name: "other issuer is mine", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"iss": "https://other.example", "key": "user-key"}), binding: hs},
		{name: "unknown key", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "nobody"}), binding: hs, wantDenial: "Invalid user key in JWT token"},
		{name: "wrong secret", header: "Bearer " + jwtSign(t, "HS256", []byte("other"), map[string]any{"key": "user-key"}), binding: hs,
			wantDenial: "failed to verify jwt", wantReason: "signature does not verify with the HS256 binding key"},
		{name: "tampered payload", header: "Bearer " + tamperedPayload, binding: hs, wantDenial: "failed to verify jwt"},
		{name: "wrong algorithm", header: "Bearer " + jwtSign(t, "HS384", secret, map[string]any{"key": "user-key"}), binding: hs,
			wantDenial: "failed to verify jwt", wantReason: `token algorithm "HS384", binding requires HS256`},
		{name: "alg none", header: "Bearer " + jwtUnsigned(map[string]any{"alg": "none"}, map[string]any{"key": "user-key"}), binding: hs,
			wantDenial: "failed to verify jwt", wantReason: `token algorithm "none", binding requires HS256`},
		{name: "alg none against rsa", header: "Bearer " + jwtUnsigned(map[string]any{"alg": "none"}, map[string]any{"key": "rsa-key"}), binding: rs, wantDenial: "failed to verify jwt"},
		{name: "alg confusion: HS256 signed with the RSA public key", header: "Bearer " + jwtSign(t, "HS256", []byte(rsaPEM), map[string]any{"key": "rsa-key"}), binding: rs,
			wantDenial: "failed to verify jwt", wantReason: `token algorithm "HS256", binding requires RS256`},
		{name: "crit header", header: "Bearer " + jwtUnsigned(map[string]any{"alg": "HS256", "crit": []string{"x"}}, map[string]any{"key": "user-key"}), binding: hs, wantDenial: "failed to verify jwt"},
		{name: "rs256 ok", header: "Bearer " + jwtSign(t, "RS256", keys["RSA"], map[string]any{"key": "rsa-key"}), binding: rs},
		{name: "expired", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "exp": at(-time.Minute)}), binding: hs,
			wantDenial: "failed to verify jwt", wantReason: "token expired 60s ago"},
		{name: "expired within leeway", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "exp": at(-20 * time.Second)}), binding: hs},
		{name: "not yet valid", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "nbf": at(time.Minute)}), binding: hs,
			wantDenial: "failed to verify jwt", wantReason: "token not valid for another 60s (nbf)"},
		{name: "nbf within leeway", header: "Bearer " + jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "nbf": at(20 * time.Second)}), binding: hs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := jwtCheck(p, jwtRequest(tt.header), tt.binding)
			switch {
			case tt.wantDenial != "":
				d := localDenial(t, err, http.StatusUnauthorized, tt.wantDenial)
				if tt.wantReason != "" && d.Reason != tt.wantReason {
					t.Errorf("got reason %q, want %q", d.Reason, tt.wantReason)
				}
				if d.Challenge != `Bearer realm="jwt"` {
					t.Errorf("got challenge %q, want %q", d.Challenge, `Bearer realm="jwt"`)
				}
			case !errors.Is(err, tt.wantErr):
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
	localDenial(t, p.Missing(), http.StatusUnauthorized, "Missing JWT token in request")
}

func TestJWTAuthSources(t *testing.T) {
	secret := []byte("s3cret")
	tok := jwtSign(t, "HS256", secret, map[string]any{"key": "user-key"})
	tests := []struct {
		name  string
		cfg   JWTAuthConfig
		build func(r *http.Request)
	}{
		{name: "query", build: func(r *http.Request) { r.URL.RawQuery = "jwt=" + tok }},
		{name: "cookie", build: func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "jwt", Value: tok}) }},
		{name: "custom header", cfg: JWTAuthConfig{Header: "X-Token"}, build: func(r *http.Request) { r.Header.Set("X-Token", tok) }},
		{name: "custom query", cfg: JWTAuthConfig{Query: "t"}, build: func(r *http.Request) { r.URL.RawQuery = "t=" + tok }},
		{name: "custom cookie", cfg: JWTAuthConfig{Cookie: "c"}, build: func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "c", Value: tok}) }},
		{name: "query after a basic header", build: func(r *http.Request) {
			r.Header.Set("Authorization", basicHeader("a", "b"))
			r.URL.RawQuery = "jwt=" + tok
		}},
		{name: "custom key claim", cfg: JWTAuthConfig{KeyClaim: "client"}, build: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+jwtSign(t, "HS256", secret, map[string]any{"client": "user-key"}))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.CacheSize = -1
			p := newTestJWT(t, cfg)
			bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: string(secret)})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			tt.build(r)
			if err := jwtCheck(p, r, bd); err != nil {
				t.Fatalf("got %v, want granted", err)
			}
		})
	}
}

func TestJWTAuthCompile(t *testing.T) {
	keys := jwtTestKeys()
	p := newTestJWT(t, JWTAuthConfig{})
	tests := []struct {
		name    string
		spec    idp.BindingSpec
		wantErr string
	}{
		{name: "hs256 default", spec: idp.BindingSpec{Key: "k", Secret: "s"}},
		{name: "es256", spec: idp.BindingSpec{Key: "k", Algorithm: "ES256", PublicKey: jwtPublicPEM(t, keys["P-256"])}},
		{name: "no key", spec: idp.BindingSpec{Secret: "s"}, wantErr: "non-empty key"},
		{name: "hs without secret", spec: idp.BindingSpec{Key: "k", Algorithm: "HS512"}, wantErr: "needs a secret"},
		{name: "hs with public key", spec: idp.BindingSpec{Key: "k", Secret: "s", PublicKey: jwtPublicPEM(t, keys["RSA"])}, wantErr: "not a public_key"},
		{name: "rs without public key", spec: idp.BindingSpec{Key: "k", Algorithm: "RS256"}, wantErr: "needs a public_key"},
		{name: "rs with secret", spec: idp.BindingSpec{Key: "k", Algorithm: "RS256", Secret: "s", PublicKey: jwtPublicPEM(t, keys["RSA"])}, wantErr: "not a secret"},
		{name: "rs with ec key", spec: idp.BindingSpec{Key: "k", Algorithm: "RS256", PublicKey: jwtPublicPEM(t, keys["P-256"])}, wantErr: "needs RSA"},
		{name: "es256 with p-384 key", spec: idp.BindingSpec{Key: "k", Algorithm: "ES256", PublicKey: jwtPublicPEM(t, keys["P-384"])}, wantErr: "needs P-256"},
		{name: "eddsa with rsa key", spec: idp.BindingSpec{Key: "k", Algorithm: "EdDSA", PublicKey: jwtPublicPEM(t, keys["RSA"])}, wantErr: "needs OKP"},
		{name: "private key", spec: idp.BindingSpec{Key: "k", Algorithm: "RS256", PublicKey: jwtPrivatePEM(t, keys["RSA"])}, wantErr: "private key"},
		{name: "not pem", spec: idp.BindingSpec{Key: "k", Algorithm: "RS256", PublicKey: "hello"}, wantErr: "parsing PEM"},
		{name: "alg none", spec: idp.BindingSpec{Key: "k", Algorithm: "none", Secret: "s"}, wantErr: "not supported"},
		{name: "several problems", spec: idp.BindingSpec{Algorithm: "HS256"}, wantErr: "non-empty key\njwt-auth algorithm HS256 needs a secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Compile(tt.spec)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewJWTAuthInvalid(t *testing.T) {
	if _, err := NewJWTAuth(JWTAuthConfig{Name: "jwt", Leeway: -time.Second}, nil); err == nil {
		t.Fatal("got no error for a negative leeway, want one")
	}
}

func TestJWTAuthCache(t *testing.T) {
	clock := &localClock{now: jwtNow}
	p := newTestJWT(t, JWTAuthConfig{Now: clock.Now})
	secret := []byte("s3cret")
	bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: string(secret)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: "another"})
	if err != nil {
		t.Fatal(err)
	}
	tok := jwtSign(t, "HS256", secret, map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Minute).Unix()})
	cached := func() bool {
		cred, err := p.Extract(context.Background(), jwtRequest("Bearer "+tok))
		if err != nil || cred == nil {
			t.Fatalf("extract: got %v, %v", cred, err)
		}
		return cred.State.(*jwtState).cached != nil
	}
	if cached() {
		t.Fatal("got a cached token before any verification")
	}
	if err := jwtCheck(p, jwtRequest("Bearer "+tok), bd); err != nil {
		t.Fatalf("first check: got %v, want granted", err)
	}
	if !cached() {
		t.Fatal("got no cached token after a verification, want one")
	}
	if err := jwtCheck(p, jwtRequest("Bearer "+tok), bd); err != nil {
		t.Fatalf("cached check: got %v, want granted", err)
	}
	t.Run("cached for its binding only", func(t *testing.T) {
		localDenial(t, jwtCheck(p, jwtRequest("Bearer "+tok), other), http.StatusUnauthorized, "failed to verify jwt")
	})
	t.Run("not past exp", func(t *testing.T) {
		clock.Advance(time.Minute + time.Second)
		if cached() {
			t.Fatal("got a cached token after exp")
		}
		localDenial(t, jwtCheck(p, jwtRequest("Bearer "+tok), bd), http.StatusUnauthorized, "failed to verify jwt")
	})
}

func TestJWTAuthHideCredentials(t *testing.T) {
	secret := []byte("s3cret")
	tok := jwtSign(t, "HS256", secret, map[string]any{"key": "user-key"})
	foreign := jwtSign(t, "HS256", secret, map[string]any{"iss": "https://idp.example"})
	p := newTestJWT(t, JWTAuthConfig{HideCredentials: true, ForeignIssuers: []string{"https://idp.example"}})
	tests := []struct {
		name  string
		build func(r *http.Request)
		check func(t *testing.T, r *http.Request)
	}{
		{name: "header", build: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, check: func(t *testing.T, r *http.Request) {
			if v := r.Header.Get("Authorization"); v != "" {
				t.Errorf("got Authorization %q, want none", v)
			}
		}},
		{name: "foreign header kept", build: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+foreign) }, check: func(t *testing.T, r *http.Request) {
			if v := r.Header.Get("Authorization"); v != "Bearer "+foreign {
				t.Errorf("got Authorization %q, want the foreign token kept", v)
			}
		}},
		{name: "query", build: func(r *http.Request) { r.URL.RawQuery = "a=1&jwt=" + tok }, check: func(t *testing.T, r *http.Request) {
			if got := r.URL.RawQuery; got != "a=1" {
				t.Errorf("got query %q, want %q", got, "a=1")
			}
		}},
		{name: "cookie", build: func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "jwt", Value: tok})
			r.AddCookie(&http.Cookie{Name: "session", Value: "s"})
		}, check: func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Cookie"); got != "session=s" {
				t.Errorf("got Cookie %q, want %q", got, "session=s")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			tt.build(r)
			p.HideCredentials(r)
			tt.check(t, r)
		})
	}
}

func FuzzJWTExtract(f *testing.F) {
	secret := []byte("s3cret")
	valid := jwtSign(f, "HS256", secret, map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Hour).Unix()})
	for _, s := range []string{"", "Bearer ", valid, "Bearer " + valid, "a.b.c", "..", "a..", ".b.", "Bearer a.b.",
		jwtUnsigned(map[string]any{"alg": "none"}, map[string]any{"key": "user-key"}),
		jwtUnsigned(map[string]any{"alg": "HS256"}, map[string]any{"key": "user-key", "exp": 1e300, "nbf": -1e300}),
		jwtUnsigned(map[string]any{"alg": "HS256"}, map[string]any{"iss": "https://idp.example"}),
		"eyJhbGciOiJIUzI1NiJ9.bnVsbA.", "Basic YTpi", "header.payload.@@@@", "Bearer a.b.@@@@",
		valid[:len(valid)-2] + "@@", valid + "=="} {
		f.Add(s, url.QueryEscape(s))
	}
	p := newTestJWT(f, JWTAuthConfig{ForeignIssuers: []string{"https://idp.example"}})
	bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: string(secret)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header, query string) {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header["Authorization"] = []string{header}
		r.URL.RawQuery = "jwt=" + query
		cred, err := p.Extract(context.Background(), r)
		if err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) {
				t.Fatalf("got non-denial error %v", err)
			}
			return
		}
		if cred == nil {
			return
		}
		if err := p.Verify(context.Background(), r, cred, bd); err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) {
				t.Fatalf("got non-denial error %v", err)
			}
		}
		p.HideCredentials(r)
	})
}

func benchmarkJWT(b *testing.B, p *JWTAuth, bd idp.Binding, tok string) {
	r := jwtRequest("Bearer " + tok)
	if err := jwtCheck(p, r, bd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := jwtCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJWTHS256(b *testing.B) {
	p := newTestJWT(b, JWTAuthConfig{CacheSize: -1})
	bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Secret: "s3cret"})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkJWT(b, p, bd, jwtSign(b, "HS256", []byte("s3cret"), map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Hour).Unix()}))
}

func BenchmarkJWTRS256(b *testing.B) {
	k := jwtTestKeys()["RSA"]
	p := newTestJWT(b, JWTAuthConfig{CacheSize: -1})
	bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Algorithm: "RS256", PublicKey: jwtPublicPEM(b, k)})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkJWT(b, p, bd, jwtSign(b, "RS256", k, map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Hour).Unix()}))
}

func BenchmarkJWTCached(b *testing.B) {
	k := jwtTestKeys()["RSA"]
	p := newTestJWT(b, JWTAuthConfig{})
	bd, err := p.Compile(idp.BindingSpec{Key: "user-key", Algorithm: "RS256", PublicKey: jwtPublicPEM(b, k)})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkJWT(b, p, bd, jwtSign(b, "RS256", k, map[string]any{"key": "user-key", "exp": jwtNow.Add(time.Hour).Unix()}))
}
