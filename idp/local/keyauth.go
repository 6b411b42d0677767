package local

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/credential"
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
	cfg    KeyAuthConfig
	header string // cfg.Header in canonical form, so lookups need no canonicalisation
	// headerPlace and queryPlace are where a key was read, as Peek reports it.
	headerPlace, queryPlace string
	missing                 *idp.Denial
	invalid                 *idp.Denial
}

var (
	_ idp.Provider = (*KeyAuth)(nil)
	_ idp.Peeker   = (*KeyAuth)(nil)
)

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
	header := http.CanonicalHeaderKey(cfg.Header)
	return &KeyAuth{
		cfg:         cfg,
		header:      header,
		headerPlace: "header " + header,
		queryPlace:  "query " + cfg.Query,
		missing:     idp.Unauthorized("Missing API key in request", challenge),
		invalid:     idp.Unauthorized("Invalid API key in request", challenge),
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
func (k *KeyAuth) Compile(spec idp.BindingSpec) (idp.Binding, error) {
	if spec.Key == "" {
		return nil, errors.New("key-auth binding needs a non-empty key")
	}
	spec.IdP = k.cfg.Name
	b := &keyBinding{hash: sha256.Sum256([]byte(spec.Key)), id: spec.CredentialID(spec.Consumer)}
	b.lookup = string(b.hash[:])
	return b, nil
}

// Extract reads the key from the header, then the query string. The credential's Lookup is
// the key's SHA-256: the plain key goes no further. Two keys (the header twice, the parameter
// twice, or a header and a parameter that differ) are an invalid credential: one of them would
// go upstream unchecked.
func (k *KeyAuth) Extract(_ context.Context, r *http.Request) (*idp.Credential, error) {
	key, _, reason := k.find(r)
	if reason != "" {
		return nil, k.invalid.WithReason("%s", reason)
	}
	if key == "" {
		return nil, nil
	}
	hash := credential.Sum(key)
	return &idp.Credential{Lookup: string(hash[:])}, nil
}

// find returns the presented key and the place it was read from; a non-empty reason says why
// the request carries more than one. The reason names places, never a key.
func (k *KeyAuth) find(r *http.Request) (key, place, reason string) {
	switch hv := r.Header[k.header]; len(hv) {
	case 0:
	case 1:
		key, place = hv[0], k.headerPlace
	default:
		return "", "", "header " + k.header + " is given more than once"
	}
	if r.URL == nil || r.URL.RawQuery == "" {
		return key, place, ""
	}
	qv := r.URL.Query()[k.cfg.Query]
	switch {
	case len(qv) > 1:
		return "", "", "query parameter " + k.cfg.Query + " is given more than once"
	case len(qv) == 0 || qv[0] == "":
		return key, place, ""
	case key == "":
		return qv[0], k.queryPlace, ""
	case key != qv[0]:
		return "", "", "header " + k.header + " and query parameter " + k.cfg.Query + " carry different keys"
	}
	return key, place, ""
}

// Peek reports the place and the index entry of the key in r, for the chain to tell which of
// two key-auth providers reading one place owns it.
func (k *KeyAuth) Peek(r *http.Request) (place, lookup string, ok bool) {
	key, place, reason := k.find(r)
	if reason != "" || key == "" {
		return "", "", false
	}
	hash := credential.Sum(key)
	return place, string(hash[:]), true
}

// Verify compares the presented key's hash with the binding's in constant time.
func (k *KeyAuth) Verify(_ context.Context, _ *http.Request, cred *idp.Credential, b idp.Binding) error {
	kb, ok := b.(*keyBinding)
	if !ok || subtle.ConstantTimeCompare([]byte(cred.Lookup), kb.hash[:]) != 1 {
		return k.invalid.WithReason("key does not match the binding")
	}
	return nil
}

func (k *KeyAuth) Missing() *idp.Denial { return k.missing }
func (k *KeyAuth) Unknown() *idp.Denial { return k.invalid.WithReason("no consumer has this key") }

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
