package local

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/portcullis/portcullis/idp"
)

// keyIndex is a one-provider index for key-auth tests.
type keyIndex struct {
	p        idp.Provider
	bindings map[string]idp.Binding // consumer → binding
}

func (x keyIndex) Resolve(provider, lookup string) (string, idp.Binding, bool) {
	for c, b := range x.bindings {
		if provider == x.p.Name() && b.Lookup() == lookup {
			return c, b, true
		}
	}
	return "", nil, false
}

func (x keyIndex) Chain(consumer string) []idp.Bound {
	if b, ok := x.bindings[consumer]; ok {
		return []idp.Bound{{Provider: x.p, Binding: b}}
	}
	return nil
}

func TestKeyAuth(t *testing.T) {
	tests := []struct {
		name      string
		cfg       KeyAuthConfig
		header    map[string]string
		target    string
		consumer  string
		message   string
		challenge string
		upstream  string // the request target after HideCredentials
	}{
		{name: "header", header: map[string]string{"apikey": "k1"}, consumer: "alice"},
		{name: "query", target: "/?apikey=k1", consumer: "alice"},
		{name: "header and query differing are invalid", header: map[string]string{"apikey": "k1"}, target: "/?apikey=nope", message: "Invalid API key in request"},
		{name: "header and query agreeing", header: map[string]string{"apikey": "k1"}, target: "/?apikey=k1", consumer: "alice"},
		{name: "custom header", cfg: KeyAuthConfig{Header: "X-API-Key"}, header: map[string]string{"x-api-key": "k1"}, consumer: "alice"},
		{name: "custom query", cfg: KeyAuthConfig{Query: "key"}, target: "/?key=k1", consumer: "alice"},
		{name: "missing", message: "Missing API key in request", challenge: `apikey realm="keys"`},
		{name: "empty header is missing", header: map[string]string{"apikey": ""}, message: "Missing API key in request"},
		{name: "invalid", header: map[string]string{"apikey": "k2"}, message: "Invalid API key in request", challenge: `apikey realm="keys"`},
		{name: "realm", cfg: KeyAuthConfig{Realm: "petstore"}, message: "Missing API key in request", challenge: `apikey realm="petstore"`},
		{name: "hidden from the upstream", cfg: KeyAuthConfig{HideCredentials: true}, target: "/p?apikey=k1&x=1", consumer: "alice", upstream: "/p?x=1"},
		{name: "kept without hide_credentials", target: "/p?apikey=k1&x=1", consumer: "alice", upstream: "/p?apikey=k1&x=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name = "keys"
			p := NewKeyAuth(cfg)
			b, err := p.Compile(idp.BindingSpec{Key: "k1", Consumer: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			chain := idp.NewChain([]idp.Provider{p}, keyIndex{p: p, bindings: map[string]idp.Binding{"alice": b}})
			target := tt.target
			if target == "" {
				target = "/"
			}
			r := httptest.NewRequest("GET", target, nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			res, err := chain.Evaluate(context.Background(), r, "", nil)
			if tt.message != "" {
				var d *idp.Denial
				if !errors.As(err, &d) || d.Message != tt.message || d.Status != 401 {
					t.Fatalf("got %v, want 401 %q", err, tt.message)
				}
				if tt.challenge != "" && d.Challenge != tt.challenge {
					t.Errorf("challenge: got %q, want %q", d.Challenge, tt.challenge)
				}
				return
			}
			if err != nil || res.Consumer != tt.consumer {
				t.Fatalf("got %v %v, want consumer %q", res, err, tt.consumer)
			}
			if res.Identifier != "keys:alice" {
				t.Errorf("identifier: got %q, want keys:alice (the provider and the consumer, never the key)", res.Identifier)
			}
			chain.HideCredentials(r)
			if tt.upstream != "" && r.URL.RequestURI() != tt.upstream {
				t.Errorf("upstream target: got %q, want %q", r.URL.RequestURI(), tt.upstream)
			}
			if cfg.HideCredentials && r.Header.Get("apikey") != "" {
				t.Errorf("the key header was not hidden")
			}
		})
	}
}

func TestKeyAuthCompile(t *testing.T) {
	p := NewKeyAuth(KeyAuthConfig{Name: "keys"})
	if _, err := p.Compile(idp.BindingSpec{}); err == nil {
		t.Errorf("an empty key: got no error")
	}
	a, _ := p.Compile(idp.BindingSpec{Key: "same"})
	b, _ := p.Compile(idp.BindingSpec{Key: "same"})
	c, _ := p.Compile(idp.BindingSpec{Key: "other"})
	if a.Lookup() != b.Lookup() || a.Lookup() == c.Lookup() {
		t.Errorf("lookups: equal keys must index equally and different keys differently")
	}
	if a.Lookup() == "same" {
		t.Errorf("the lookup is the plain key; want its hash")
	}
}
