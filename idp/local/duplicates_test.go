package local

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestDuplicateCredentialsAreInvalid: a second credential of a provider, in the same place or in
// another of its places, fails the request with the provider's invalid message; the extra copy
// would otherwise go upstream unchecked.
func TestDuplicateCredentialsAreInvalid(t *testing.T) {
	keys := NewKeyAuth(KeyAuthConfig{Name: "keys"})
	basic := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	jwtP := newTestJWT(t, JWTAuthConfig{})
	hmacP := newTestHMAC(t, HMACAuthConfig{})
	idx := idptest.NewIndex()
	idx.Add(t, "alice", keys, idp.BindingSpec{Key: "alice-key"})
	idx.Add(t, "bob", basic, idp.BindingSpec{Username: "bob", Password: "bob-pw"})
	idx.Add(t, "carol", jwtP, idp.BindingSpec{Key: "carol", Secret: "carol-secret"})
	idx.Add(t, "dave", hmacP, idp.BindingSpec{KeyID: "dave", Secret: "dave-secret"})
	chain := idp.NewChain([]idp.Provider{keys, basic, jwtP, hmacP}, idx)

	carolTok := jwtSign(t, "HS256", []byte("carol-secret"), map[string]any{"key": "carol"})
	otherTok := jwtSign(t, "HS256", []byte("carol-secret"), map[string]any{"key": "carol", "n": 2})
	req := func(target string, header http.Header) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		for k, vs := range header {
			for _, v := range vs {
				r.Header.Add(k, v)
			}
		}
		return r
	}
	signed := func(t *testing.T, extra ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set("Date", hmacNow.Format(http.TimeFormat))
		if err := SignRequest(r, SignInput{KeyID: "dave", Secret: "dave-secret"}); err != nil {
			t.Fatal(err)
		}
		for _, v := range extra {
			r.Header.Add("Authorization", v)
		}
		return r
	}
	tests := []struct {
		name     string
		build    func(t *testing.T) *http.Request
		consumer string
		message  string
	}{
		{name: "key: one header", consumer: "alice",
			build: func(*testing.T) *http.Request { return req("/x", http.Header{"Apikey": {"alice-key"}}) }},
		{name: "key: valid header, invalid query", message: "Invalid API key in request",
			build: func(*testing.T) *http.Request { return req("/x?apikey=wrong", http.Header{"Apikey": {"alice-key"}}) }},
		{name: "key: two headers", message: "Invalid API key in request",
			build: func(*testing.T) *http.Request { return req("/x", http.Header{"Apikey": {"alice-key", "wrong"}}) }},
		{name: "key: the same header twice", message: "Invalid API key in request",
			build: func(*testing.T) *http.Request { return req("/x", http.Header{"Apikey": {"alice-key", "alice-key"}}) }},
		{name: "key: two query parameters", message: "Invalid API key in request",
			build: func(*testing.T) *http.Request { return req("/x?apikey=alice-key&apikey=wrong", nil) }},
		{name: "basic: one header", consumer: "bob",
			build: func(*testing.T) *http.Request { return basicRequest(basicHeader("bob", "bob-pw")) }},
		{name: "basic: a second Basic header", message: "Invalid authorization in request",
			build: func(*testing.T) *http.Request {
				return basicRequest(basicHeader("bob", "bob-pw"), basicHeader("mallory", "x"))
			}},
		{name: "jwt: header", consumer: "carol",
			build: func(*testing.T) *http.Request { return jwtRequest("Bearer " + carolTok) }},
		{name: "jwt: the same token in header and query", consumer: "carol",
			build: func(*testing.T) *http.Request {
				return req("/x?jwt="+carolTok, http.Header{"Authorization": {"Bearer " + carolTok}})
			}},
		{name: "jwt: two headers", message: "JWT token invalid",
			build: func(*testing.T) *http.Request {
				return req("/x", http.Header{"Authorization": {"Bearer " + carolTok, "Bearer " + otherTok}})
			}},
		{name: "jwt: header and a different query token", message: "JWT token invalid",
			build: func(*testing.T) *http.Request {
				return req("/x?jwt="+otherTok, http.Header{"Authorization": {"Bearer " + carolTok}})
			}},
		{name: "jwt: two query tokens", message: "JWT token invalid",
			build: func(*testing.T) *http.Request { return req("/x?jwt="+carolTok+"&jwt="+carolTok, nil) }},
		{name: "jwt: header and a different cookie token", message: "JWT token invalid",
			build: func(*testing.T) *http.Request {
				return req("/x", http.Header{"Authorization": {"Bearer " + carolTok}, "Cookie": {"jwt=" + otherTok}})
			}},
		{name: "jwt: two cookies", message: "JWT token invalid",
			build: func(*testing.T) *http.Request {
				return req("/x", http.Header{"Cookie": {"jwt=" + carolTok + "; jwt=" + carolTok}})
			}},
		{name: "hmac: one signature", consumer: "dave", build: func(t *testing.T) *http.Request { return signed(t) }},
		{name: "hmac: a second Signature header", message: "client request can't be validated",
			build: func(t *testing.T) *http.Request {
				return signed(t, `Signature keyId="dave",algorithm="hmac-sha256",headers="date",signature="AAAA"`)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := chain.Evaluate(context.Background(), tt.build(t), "", nil)
			if tt.message != "" {
				var d *idp.Denial
				if !errors.As(err, &d) || d.Status != http.StatusUnauthorized || d.Message != tt.message {
					t.Fatalf("got %v, want 401 %q", err, tt.message)
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

// FuzzKeyAuthPlaces: whatever the header values and the query string, key-auth either finds no
// key, refuses the request, or finds exactly the one key every copy in the request agrees on.
func FuzzKeyAuthPlaces(f *testing.F) {
	for _, s := range [][3]string{{"k", "", "apikey=k"}, {"k", "j", ""}, {"", "", "apikey=k&apikey=k"}, {"k", "", "apikey=j"},
		{"", "", "apikey=&apikey=k"}, {"", "", "api%6Bey=k"}, {"k", "", "%zz"}, {"", "", ""}} {
		f.Add(s[0], s[1], s[2])
	}
	p := NewKeyAuth(KeyAuthConfig{Name: "keys"})
	f.Fuzz(func(t *testing.T, h1, h2, rawQuery string) {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.URL.RawQuery = rawQuery
		for _, v := range []string{h1, h2} {
			if v != "" {
				r.Header.Add("Apikey", v)
			}
		}
		cred, err := p.Extract(context.Background(), r)
		if err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) || d.Status != http.StatusUnauthorized {
				t.Fatalf("got %v, want a 401 denial", err)
			}
			return
		}
		if cred == nil {
			return
		}
		keys := map[string]bool{}
		for _, v := range r.Header.Values("Apikey") {
			keys[v] = true
		}
		for _, v := range r.URL.Query()["apikey"] {
			if v != "" {
				keys[v] = true
			}
		}
		if len(keys) != 1 {
			t.Fatalf("granted a key while the request carries %d different ones", len(keys))
		}
		for k := range keys {
			if sum := credential.Sum(k); cred.Lookup != string(sum[:]) {
				t.Fatalf("the credential is not the one key of the request")
			}
		}
	})
}
