package idp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
)

// KeyAuthConfig configures a key-auth provider (APISIX key-auth).
type KeyAuthConfig struct {
	Name string
	// Header and Query name where the key is read, header first. Defaults: "apikey" for both.
	Header string
	Query  string
	// HideCredentials removes the key from the request before it goes upstream.
	HideCredentials bool
	// Realm is the WWW-Authenticate realm; defaults to the provider name.
	Realm string
}

// KeyAuth authenticates a request by an API key. Keys are indexed and compared as SHA-256
// hashes: the plain key is never kept after load time.
type KeyAuth struct {
	cfg     KeyAuthConfig
	header  string // cfg.Header in canonical form, so lookups need no canonicalisation
	missing *Denial
	invalid *Denial
}

var _ Provider = (*KeyAuth)(nil)

// NewKeyAuth builds a key-auth provider.
func NewKeyAuth(cfg KeyAuthConfig) *KeyAuth {
	if cfg.Header == "" {
		cfg.Header = "apikey"
	}
	if cfg.Query == "" {
		cfg.Query = "apikey"
	}
	if cfg.Realm == "" {
		cfg.Realm = cfg.Name
	}
	challenge := `apikey realm="` + cfg.Realm + `"`
	return &KeyAuth{
		cfg:     cfg,
		header:  http.CanonicalHeaderKey(cfg.Header),
		missing: Unauthorized("Missing API key in request", challenge),
		invalid: Unauthorized("Invalid API key in request", challenge),
	}
}

func (k *KeyAuth) Name() string { return k.cfg.Name }
func (k *KeyAuth) Type() string { return "key-auth" }

type keyBinding struct {
	hash   [sha256.Size]byte
	lookup string // string(hash[:]), kept so that indexing a million keys doesn't convert twice
	id     string
}

func (b *keyBinding) Lookup() string     { return b.lookup }
func (b *keyBinding) Identifier() string { return b.id }

// Compile hashes the binding's key.
func (k *KeyAuth) Compile(spec BindingSpec) (Binding, error) {
	if spec.Key == "" {
		return nil, errors.New("key-auth binding needs a non-empty key")
	}
	b := &keyBinding{hash: sha256.Sum256([]byte(spec.Key)), id: k.cfg.Name}
	b.lookup = string(b.hash[:])
	return b, nil
}

// Extract reads the key from the header, then the query string. The credential's Lookup is
// the key's SHA-256: the plain key goes no further.
func (k *KeyAuth) Extract(_ context.Context, r *http.Request) (*Credential, error) {
	var key string
	if v := r.Header[k.header]; len(v) > 0 {
		key = v[0]
	}
	if key == "" && r.URL.RawQuery != "" {
		key = r.URL.Query().Get(k.cfg.Query)
	}
	if key == "" {
		return nil, nil
	}
	hash := sumString(key)
	return &Credential{Lookup: string(hash[:])}, nil
}

// Verify compares the presented key's hash with the binding's in constant time.
func (k *KeyAuth) Verify(_ context.Context, _ *http.Request, cred *Credential, b Binding) error {
	kb, ok := b.(*keyBinding)
	if !ok || subtle.ConstantTimeCompare([]byte(cred.Lookup), kb.hash[:]) != 1 {
		return k.invalid.WithReason("key does not match the binding")
	}
	return nil
}

func (k *KeyAuth) Missing() *Denial { return k.missing }
func (k *KeyAuth) Unknown() *Denial { return k.invalid.WithReason("no consumer has this key") }

// HideCredentials removes the key header and query parameter when configured.
func (k *KeyAuth) HideCredentials(r *http.Request) {
	if !k.cfg.HideCredentials {
		return
	}
	delete(r.Header, k.header)
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		if q.Has(k.cfg.Query) {
			q.Del(k.cfg.Query)
			r.URL.RawQuery = q.Encode()
		}
	}
}
