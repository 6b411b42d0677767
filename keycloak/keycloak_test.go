package keycloak

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/internal/idptest"
)

// These tests run the provider's Keycloak logic (realm and client roles, groups, UMA decisions
// and their cache) against a fake realm served by httptest, so that `go test ./keycloak` needs
// no Java. The same behaviour against a real Keycloak is tested in integration/keycloakprovider.

// fakeRealm is one Keycloak realm: discovery, its JWKS, and the token endpoint's answers to
// UMA decision requests (response_mode=decision), with tokens signed by its RSA key.
type fakeRealm struct {
	srv   *httptest.Server
	realm string
	key   *rsa.PrivateKey
	// grants maps "subject permission" to Keycloak's decision; a permission it does not know
	// is a 400 invalid_resource, as Keycloak answers for a resource the server does not define.
	mu       sync.Mutex
	grants   map[string]bool
	umaCalls atomic.Int64
	down     atomic.Bool // the token endpoint answers 503
}

func newFakeRealm(t *testing.T) *fakeRealm {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRealm{realm: "corp", key: key, grants: map[string]bool{}}
	mux := http.NewServeMux()
	base := "/realms/corp"
	mux.HandleFunc("GET "+base+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		iss := f.issuer()
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": iss, "jwks_uri": iss + "/protocol/openid-connect/certs",
			"token_endpoint":         iss + "/protocol/openid-connect/token",
			"introspection_endpoint": iss + "/protocol/openid-connect/token/introspect",
			"authorization_endpoint": iss + "/protocol/openid-connect/auth",
		})
	})
	mux.HandleFunc("GET "+base+"/protocol/openid-connect/certs", func(w http.ResponseWriter, r *http.Request) {
		pub := f.key.PublicKey
		writeJSON(w, http.StatusOK, map[string]any{"keys": []any{map[string]any{
			"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("POST "+base+"/protocol/openid-connect/token", func(w http.ResponseWriter, r *http.Request) {
		f.umaCalls.Add(1)
		if f.down.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "unavailable"})
			return
		}
		if r.PostFormValue("grant_type") != umaGrantType || r.PostFormValue("response_mode") != "decision" || r.PostFormValue("audience") != "gateway" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
			return
		}
		sub, ok := f.subjectOf(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_grant"})
			return
		}
		f.mu.Lock()
		granted, known := f.grants[sub+" "+r.PostFormValue("permission")]
		f.mu.Unlock()
		switch {
		case !known:
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_resource"})
		case granted:
			writeJSON(w, http.StatusOK, map[string]any{"result": true})
		default:
			writeJSON(w, http.StatusForbidden, map[string]any{"error": "access_denied", "error_description": "not_authorized"})
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRealm) issuer() string { return f.srv.URL + "/realms/" + f.realm }

func (f *fakeRealm) grant(sub, permission string, granted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[sub+" "+permission] = granted
}

// token signs claims (over defaults for the gateway client, valid for five minutes).
func (f *fakeRealm) token(t *testing.T, sub string, claims map[string]any) string {
	t.Helper()
	now := time.Now()
	c := map[string]any{"iss": f.issuer(), "sub": sub, "aud": "gateway", "azp": "gateway", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	h, _ := json.Marshal(map[string]any{"alg": "RS256", "kid": "k1", "typ": "JWT"})
	p, _ := json.Marshal(c)
	in := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64(sig)
}

// subjectOf reads a token's sub; the fake trusts its own tokens, as Keycloak checks them itself.
func (f *fakeRealm) subjectOf(tok string) (string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c struct {
		Sub string `json:"sub"`
	}
	return c.Sub, json.Unmarshal(raw, &c) == nil && c.Sub != ""
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeRealm) provider(t *testing.T) *Provider {
	t.Helper()
	p, err := New(Config{Config: oidc.Config{Name: "corp", ClientID: "gateway", ClientSecret: "s3cret"}, URL: f.srv.URL, Realm: f.realm}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/petstore", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// evaluate runs a one-provider chain where consumer is bound to p with spec.
func evaluate(t *testing.T, p *Provider, spec idp.BindingSpec, tok string) (*idp.Result, error) {
	t.Helper()
	idx := idptest.NewIndex()
	idx.Add(t, "Consumer", p, spec)
	return idp.NewChain([]idp.Provider{p}, idx).Evaluate(t.Context(), bearer(tok), "", nil)
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var d *idp.Denial
	if !errors.As(err, &d) {
		t.Fatalf("got %v, want a %d denial", err, status)
	}
	if d.Status != status {
		t.Fatalf("got status %d (%v), want %d", d.Status, d, status)
	}
}

func TestBindingConditions(t *testing.T) {
	f := newFakeRealm(t)
	p := f.provider(t)
	bot := f.token(t, "fetch-bot", map[string]any{
		"realm_access":    map[string]any{"roles": []string{"api-user", "offline_access"}},
		"resource_access": map[string]any{"gateway": map[string]any{"roles": []string{"pet-viewer"}}},
		"groups":          []string{"/bots"},
		"scope":           "openid profile",
		"team":            "ops",
	})
	tests := []struct {
		name   string
		spec   idp.BindingSpec
		status int // 0 grants
	}{
		{"subject only", idp.BindingSpec{}, 0},
		{"realm role held", idp.BindingSpec{RealmRoles: []string{"api-user"}}, 0},
		{"realm role missing", idp.BindingSpec{RealmRoles: []string{"admin"}}, http.StatusForbidden},
		{"client role held", idp.BindingSpec{ClientRoles: map[string][]string{"gateway": {"pet-viewer"}}}, 0},
		{"client role missing", idp.BindingSpec{ClientRoles: map[string][]string{"gateway": {"pet-admin"}}}, http.StatusForbidden},
		{"client role of another client", idp.BindingSpec{ClientRoles: map[string][]string{"billing": {"pet-viewer"}}}, http.StatusForbidden},
		{"group by name, token has the full path", idp.BindingSpec{Groups: []string{"bots"}}, 0},
		{"group by full path", idp.BindingSpec{Groups: []string{"/bots"}}, 0},
		{"group missing", idp.BindingSpec{Groups: []string{"engineering"}}, http.StatusForbidden},
		{"claims and scopes", idp.BindingSpec{Claims: map[string][]string{"team": {"ops"}}, Scopes: []string{"profile"}}, 0},
		{"scope missing", idp.BindingSpec{Scopes: []string{"offline_access"}}, http.StatusForbidden},
		{"another subject", idp.BindingSpec{Subject: "partner-svc"}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.IdP = "corp"
			if spec.Subject == "" {
				spec.Subject = "fetch-bot"
			}
			res, err := evaluate(t, p, spec, bot)
			if tt.status != 0 {
				wantStatus(t, err, tt.status)
				return
			}
			if err != nil {
				t.Fatalf("got %v, want granted", err)
			}
			if res.Consumer != "Consumer" {
				t.Errorf("got consumer %q, want Consumer", res.Consumer)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	f := newFakeRealm(t)
	f.grant("alice", "pets#read", true)
	f.grant("alice", "pets#write", false)
	tests := []struct {
		name       string
		permission string
		status     int // 0 grants
	}{
		{"granted", "pets#read", 0},
		{"denied", "pets#write", http.StatusForbidden},
		{"a resource the server does not define", "no-such-resource#read", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := f.provider(t)
			_, err := evaluate(t, p, idp.BindingSpec{IdP: "corp", Subject: "alice", Permissions: []string{tt.permission}}, f.token(t, "alice", nil))
			if tt.status != 0 {
				wantStatus(t, err, tt.status)
				return
			}
			if err != nil {
				t.Fatalf("got %v, want granted", err)
			}
		})
	}
}

// TestDecisionCache: a decision is asked once per token and permission and then served from
// the cache, also while Keycloak cannot answer; a decision Keycloak cannot give is ErrUnavailable
// (503 at the gateway), never a grant.
func TestDecisionCache(t *testing.T) {
	f := newFakeRealm(t)
	f.grant("alice", "pets#read", true)
	p := f.provider(t)
	idx := idptest.NewIndex()
	idx.Add(t, "Alice", p, idp.BindingSpec{IdP: "corp", Subject: "alice", Permissions: []string{"pets#read"}})
	chain := idp.NewChain([]idp.Provider{p}, idx)
	tok := f.token(t, "alice", nil)
	for i := range 3 {
		if _, err := chain.Evaluate(t.Context(), bearer(tok), "", nil); err != nil {
			t.Fatalf("evaluation %d: %v", i, err)
		}
	}
	if got := f.umaCalls.Load(); got != 1 {
		t.Fatalf("got %d decision requests for three evaluations, want 1", got)
	}
	f.down.Store(true)
	if _, err := chain.Evaluate(t.Context(), bearer(tok), "", nil); err != nil {
		t.Fatalf("a cached decision while Keycloak is down: %v", err)
	}
	other := f.token(t, "alice", map[string]any{"jti": "another-token"})
	if _, err := chain.Evaluate(t.Context(), bearer(other), "", nil); !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("a decision Keycloak cannot give: got %v, want ErrUnavailable", err)
	}
}

func TestNewDoesNoIO(t *testing.T) {
	// An unroutable URL: any network I/O in New would hang or fail.
	p, err := New(Config{Config: oidc.Config{Name: "corp", ClientID: "gateway"}, URL: "http://127.0.0.1:1", Realm: "corp"}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if p.Type() != "keycloak" || p.Issuer() != "http://127.0.0.1:1/realms/corp" {
		t.Fatalf("Type/Issuer = %q/%q", p.Type(), p.Issuer())
	}
	_, err = p.Extract(t.Context(), bearer(fakeJWT(t, map[string]any{"iss": "http://127.0.0.1:1/realms/corp", "sub": "x"})))
	if !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("Extract against an unreachable Keycloak = %v, want ErrUnavailable", err)
	}
	if err := p.Ready(t.Context()); !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("Ready = %v, want ErrUnavailable", err)
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{Config: oidc.Config{Name: "x"}, Realm: "corp"}, "needs a url"},
		{"no realm", Config{Config: oidc.Config{Name: "x"}, URL: "http://kc"}, "needs a realm"},
		{"bad url", Config{Config: oidc.Config{Name: "x"}, URL: "kc:8080", Realm: "corp"}, "not an http(s) URL"},
		{"contradicting issuer", Config{Config: oidc.Config{Name: "x", Issuer: "http://other/realms/corp"}, URL: "http://kc", Realm: "corp"}, "contradicts"},
		{"hmac algorithm", Config{Config: oidc.Config{Name: "x", Algorithms: []string{"HS256"}}, URL: "http://kc", Realm: "corp"}, "HS256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]any{"alg": "RS256", "kid": "k"})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + ".AAAA"
}
