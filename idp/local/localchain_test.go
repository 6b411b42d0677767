package local

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

func TestLocalProvidersChain(t *testing.T) {
	basic := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	hmacP := newTestHMAC(t, HMACAuthConfig{})
	jwtP := newTestJWT(t, JWTAuthConfig{})
	idx := idptest.NewIndex()
	idx.Add(t, "alice", basic, idp.BindingSpec{Username: "alice", Password: "alice-pw"})
	idx.Add(t, "alice", hmacP, idp.BindingSpec{KeyID: "alice-key", Secret: "alice-secret"})
	idx.Add(t, "bob", hmacP, idp.BindingSpec{KeyID: "bob-key", Secret: "bob-secret"})
	idx.Add(t, "carol", jwtP, idp.BindingSpec{Key: "carol-key", Secret: "carol-secret"})
	chain := idp.NewChain([]idp.Provider{basic, hmacP, jwtP}, idx)

	signed := func(t *testing.T, keyID, secret string, basicUser, basicPass string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/petstore", nil)
		r.Header.Set("Date", hmacNow.Format(http.TimeFormat))
		if err := SignRequest(r, SignInput{KeyID: keyID, Secret: secret}); err != nil {
			t.Fatal(err)
		}
		if basicUser != "" {
			r.Header.Add("Authorization", basicHeader(basicUser, basicPass))
		}
		return r
	}
	tests := []struct {
		name         string
		build        func(t *testing.T) *http.Request
		wantConsumer string
		wantID       string
		wantMsg      string
	}{
		{name: "basic and hmac", build: func(t *testing.T) *http.Request { return signed(t, "alice-key", "alice-secret", "alice", "alice-pw") },
			wantConsumer: "alice", wantID: "basic:alice"},
		{name: "missing second credential", build: func(t *testing.T) *http.Request { return basicRequest(basicHeader("alice", "alice-pw")) },
			wantMsg: "client request can't be validated: missing Authorization header"},
		{name: "missing first credential", build: func(t *testing.T) *http.Request { return signed(t, "alice-key", "alice-secret", "", "") },
			wantMsg: "Missing authorization in request"},
		{name: "credentials of two consumers", build: func(t *testing.T) *http.Request { return signed(t, "bob-key", "bob-secret", "alice", "alice-pw") },
			wantMsg: idp.ErrDifferentConsumers.Error()},
		{name: "wrong password", build: func(t *testing.T) *http.Request { return signed(t, "alice-key", "alice-secret", "alice", "nope") },
			wantMsg: "Invalid user authorization"},
		{name: "bad signature", build: func(t *testing.T) *http.Request { return signed(t, "alice-key", "wrong", "alice", "alice-pw") },
			wantMsg: "client request can't be validated"},
		{name: "bob with hmac only", build: func(t *testing.T) *http.Request { return signed(t, "bob-key", "bob-secret", "", "") },
			wantConsumer: "bob", wantID: "hmac:bob-key"},
		{name: "jwt", build: func(t *testing.T) *http.Request {
			return jwtRequest("Bearer " + jwtSign(t, "HS256", []byte("carol-secret"), map[string]any{"key": "carol-key"}))
		}, wantConsumer: "carol", wantID: "jwt:carol-key"},
		{name: "nothing", build: func(t *testing.T) *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) },
			wantMsg: "Missing authorization in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := chain.Evaluate(context.Background(), tt.build(t), "", nil)
			if tt.wantMsg != "" {
				var d *idp.Denial
				if !errors.As(err, &d) || d.Message != tt.wantMsg {
					t.Fatalf("got %v, want denial %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want granted", err)
			}
			if res.Consumer != tt.wantConsumer || res.Identifier != tt.wantID {
				t.Fatalf("got consumer %q identifier %q, want %q %q", res.Consumer, res.Identifier, tt.wantConsumer, tt.wantID)
			}
		})
	}
}
