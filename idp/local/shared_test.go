package local

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestSharedPlaceChainRule: two providers of one type reading one place do not break each
// other. A credential belongs to the provider whose index knows it, whatever that provider's
// position and whatever the other's stricter settings; it is unknown only when none knows it.
func TestSharedPlaceChainRule(t *testing.T) {
	skew := 10
	strict := newTestHMAC(t, HMACAuthConfig{Name: "hmac-strict", ClockSkew: &skew, ValidateRequestBody: true})
	loose := newTestHMAC(t, HMACAuthConfig{Name: "hmac-loose"})
	keys1 := NewKeyAuth(KeyAuthConfig{Name: "keys1"})
	keys2 := NewKeyAuth(KeyAuthConfig{Name: "keys2"})
	basic1 := NewBasicAuth(BasicAuthConfig{Name: "basic1"}, nil)
	basic2 := NewBasicAuth(BasicAuthConfig{Name: "basic2"}, nil)
	jwt1 := newTestJWT(t, JWTAuthConfig{Name: "jwt1"})
	jwt2 := newTestJWT(t, JWTAuthConfig{Name: "jwt2"})
	idx := idptest.NewIndex()
	idx.Add(t, "s", strict, idp.BindingSpec{KeyID: "s-key", Secret: "s-secret"})
	idx.Add(t, "l", loose, idp.BindingSpec{KeyID: "l-key", Secret: "l-secret"})
	idx.Add(t, "k1", keys1, idp.BindingSpec{Key: "key-one"})
	idx.Add(t, "k2", keys2, idp.BindingSpec{Key: "key-two"})
	idx.Add(t, "b1", basic1, idp.BindingSpec{Username: "u1", Password: "p1"})
	idx.Add(t, "b2", basic2, idp.BindingSpec{Username: "u2", Password: "p2"})
	idx.Add(t, "j1", jwt1, idp.BindingSpec{Key: "jk1", Secret: "js1"})
	idx.Add(t, "j2", jwt2, idp.BindingSpec{Key: "jk2", Secret: "js2"})
	chain := idp.NewChain([]idp.Provider{strict, loose, keys1, keys2, basic1, basic2, jwt1, jwt2}, idx)

	signed := func(keyID, secret string, age time.Duration) func(*testing.T) *http.Request {
		return func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader("body"))
			r.Header.Set("Date", hmacNow.Add(-age).Format(http.TimeFormat))
			if err := SignRequest(r, SignInput{KeyID: keyID, Secret: secret}); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	header := func(name, value string) func(*testing.T) *http.Request {
		return func(*testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			r.Header.Set(name, value)
			return r
		}
	}
	tests := []struct {
		name     string
		build    func(*testing.T) *http.Request
		consumer string
		message  string
		claimed  string // the trace line naming the provider that claimed the credential
	}{
		{name: "hmac: the second provider's keyId, unsigned body, older than the first's skew",
			build: signed("l-key", "l-secret", time.Minute), consumer: "l", claimed: "hmac-strict: not in this provider's index; claimed by hmac-loose"},
		{name: "hmac: the first provider's keyId", build: signed("s-key", "s-secret", 0),
			message: "client request can't be validated", claimed: ""}, // strict validates the body: no Digest
		{name: "hmac: the first provider's settings apply to its own keyId", build: signed("s-key", "s-secret", time.Minute),
			message: "client request can't be validated"},
		{name: "hmac: a keyId nobody knows", build: signed("nobody", "x", 0), message: "client request can't be validated"},
		{name: "key: the second provider's key", build: header("apikey", "key-two"), consumer: "k2",
			claimed: "keys1: not in this provider's index; claimed by keys2"},
		{name: "key: the first provider's key", build: header("apikey", "key-one"), consumer: "k1",
			claimed: "keys2: not in this provider's index; claimed by keys1"},
		{name: "key: a key nobody knows", build: header("apikey", "key-three"), message: "Invalid API key in request"},
		{name: "basic: the second provider's user", build: header("Authorization", basicHeader("u2", "p2")), consumer: "b2"},
		{name: "basic: the first provider's user", build: header("Authorization", basicHeader("u1", "p1")), consumer: "b1"},
		{name: "basic: a user nobody knows", build: header("Authorization", basicHeader("u3", "p3")), message: "Invalid user authorization"},
		{name: "jwt: the second provider's key", consumer: "j2", claimed: "jwt1: not in this provider's index; claimed by jwt2",
			build: func(t *testing.T) *http.Request {
				return jwtRequest("Bearer " + jwtSign(t, "HS256", []byte("js2"), map[string]any{"key": "jk2"}))
			}},
		{name: "jwt: a key nobody knows", message: "Invalid user key in JWT token",
			build: func(t *testing.T) *http.Request {
				return jwtRequest("Bearer " + jwtSign(t, "HS256", []byte("js2"), map[string]any{"key": "jk3"}))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var trace idp.Trace
			res, err := chain.Evaluate(context.Background(), tt.build(t), "", &trace)
			if tt.claimed != "" {
				found := false
				for _, s := range trace.Steps {
					if strings.HasPrefix(s.Provider+": "+s.Detail, tt.claimed) {
						found = true
					}
				}
				if !found {
					t.Errorf("trace: got %+v, want a step %q", trace.Steps, tt.claimed)
				}
			}
			if tt.message != "" {
				var d *idp.Denial
				if !errors.As(err, &d) || d.Message != tt.message {
					t.Fatalf("got %v, want denial %q", err, tt.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want consumer %q", err, tt.consumer)
			}
			if res.Consumer != tt.consumer {
				t.Fatalf("got consumer %q, want %q", res.Consumer, tt.consumer)
			}
		})
	}
}
