package consumers

import (
	"errors"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
)

func bound(t *testing.T, p *local.KeyAuth, key string) idp.Bound {
	t.Helper()
	b, err := p.Compile(idp.BindingSpec{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return idp.Bound{Provider: p, Binding: b}
}

func TestSet(t *testing.T) {
	keys := local.NewKeyAuth(local.KeyAuthConfig{Name: "keys"})
	alt := local.NewKeyAuth(local.KeyAuthConfig{Name: "alt", Header: "x-alt-key"})

	b := NewBuilder(2)
	if err := b.AddGroup(&Group{Name: "bots"}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddGroup(&Group{Name: "bots"}); err == nil {
		t.Errorf("a duplicate group: got no error")
	}
	alice := &Consumer{Username: "alice", Chain: []idp.Bound{bound(t, keys, "a-key"), bound(t, alt, "a-alt")}}
	if err := b.AddConsumer(alice); err != nil {
		t.Fatal(err)
	}
	if err := b.AddConsumer(&Consumer{Username: "alice", Chain: []idp.Bound{bound(t, keys, "other")}}); err == nil {
		t.Errorf("a duplicate username: got no error")
	}
	// The same key under another provider is another credential; under the same provider it
	// conflicts.
	if err := b.AddConsumer(&Consumer{Username: "bob", Chain: []idp.Bound{bound(t, alt, "a-key")}}); err != nil {
		t.Errorf("same key, other provider: got %v, want no error", err)
	}
	err := b.AddConsumer(&Consumer{Username: "carol", Chain: []idp.Bound{bound(t, keys, "c-key"), bound(t, keys, "a-key")}})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Other != "alice" || ce.Provider != "keys" {
		t.Fatalf("conflicting key: got %v, want a ConflictError naming alice", err)
	}
	set := b.Build()

	if _, ok := set.Consumer("carol"); ok {
		t.Errorf("a consumer whose binding conflicted was added")
	}
	if _, _, ok := set.Resolve("keys", bound(t, keys, "c-key").Binding.Lookup()); ok {
		t.Errorf("a rejected consumer's other binding was indexed")
	}

	tests := []struct {
		name     string
		provider string
		key      string
		want     string
		ok       bool
	}{
		{"alice by keys", "keys", "a-key", "alice", true},
		{"alice by alt", "alt", "a-alt", "alice", true},
		{"bob by alt", "alt", "a-key", "bob", true},
		{"unknown key", "keys", "nope", "", false},
		{"key of another provider", "keys", "a-alt", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := bound(t, keys, tt.key).Binding.Lookup()
			got, _, ok := set.Resolve(tt.provider, lookup)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Resolve: got %q %v, want %q %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if got := len(set.Chain("alice")); got != 2 {
		t.Errorf("alice's chain: got %d bindings, want 2", got)
	}
	if set.Chain("nobody") != nil {
		t.Errorf("chain of an unknown consumer: want nil")
	}
	if set.Len() != 2 {
		t.Errorf("Len: got %d, want 2", set.Len())
	}
}
