// Package idp is the security core: what an identity provider is to Portcullis (the Provider
// contract and its optional interfaces), and the chain evaluator (every provider a consumer
// binds must grant, and all must name the same consumer). It imports only the standard library,
// so that it can be reviewed on its own. The providers live in idp/local (key-auth, basic-auth,
// jwt-auth, hmac-auth), idp/oidc and keycloak.
package idp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Provider is one configured identity provider: a named instance of a provider type.
//
// A request is judged in two phases so that every credential can be matched to its consumer
// before any consumer-specific secret is used:
//
//  1. Extract finds this provider's credential in the request and says which index entry
//     (Credential.Lookup) it claims. It uses only provider-wide settings.
//  2. Verify checks that credential against the Binding the credential index resolved it to:
//     the consumer's secret, key or conditions.
//
// Errors carry the meaning of the answer:
//   - a *Denial is a negative answer: the credential is malformed, invalid or not allowed.
//     Its Status (401 or 403), Message and Challenge go to the client; its Reason only to the
//     log and to explain.
//   - any other error means the provider could not decide (an IdP or cache unreachable). The
//     gateway fails closed with 503. Such errors should wrap ErrUnavailable.
//
// Implementations are built once at load time, are safe for concurrent use, and never parse
// configuration on the request path.
type Provider interface {
	// Name is the provider's policy name ("keys", "corp").
	Name() string
	// Type is the provider type ("key-auth", "basic-auth", "jwt-auth", "hmac-auth", "oidc", "keycloak").
	Type() string

	// Compile turns one consumer's binding to this provider into its verified, load-time form.
	// It runs at load time only; an error is a policy error and names the offending field.
	Compile(spec BindingSpec) (Binding, error)

	// Extract finds this provider's credential in r.
	//   (nil, nil):      r carries nothing of this provider's scheme ("not mine").
	//   (cred, nil):     a credential is present; cred.Lookup names the index entry it claims.
	//   (nil, *Denial):  a credential of this scheme is present but invalid in itself.
	//   (nil, err):      the provider cannot decide; fail closed.
	// Extract may read and must then restore r.Body.
	Extract(ctx context.Context, r *http.Request) (*Credential, error)

	// Verify checks a present credential against the binding the index resolved it to.
	// nil grants; a *Denial refuses; any other error means the provider cannot decide.
	Verify(ctx context.Context, r *http.Request, cred *Credential, b Binding) error

	// Missing is the denial when a consumer's chain needs this provider and the request carries
	// none of its credentials.
	Missing() *Denial
	// Unknown is the denial when a present credential names no consumer: no binding of this
	// provider, nor (see Peeker) of another provider of its type reading the same place, knows it.
	Unknown() *Denial

	// HideCredentials removes this provider's credential from r before it goes upstream, when
	// the provider is configured to hide it; otherwise it does nothing.
	HideCredentials(r *http.Request)
}

// Decliner is implemented by providers that read a place other providers may share (a bearer
// token in Authorization) and there pass over credentials that are not theirs. When no provider
// found a credential in a request, the chain asks each Decliner, in policy order, whether such a
// place holds one: a token of an issuer no provider accepts is then refused as an invalid token
// rather than reported missing, which would send its caller looking for the wrong fault.
type Decliner interface {
	// Declined returns the denial for a credential in this provider's places that no provider
	// claimed, or nil when those places are empty. It verifies nothing and never fails: the
	// credential is nobody's.
	Declined(r *http.Request) *Denial
}

// Peeker is implemented by providers that another provider of the same type may share a place
// with (two hmac-auth providers on Authorization, two key-auth providers on apikey). The chain
// rule is that such a credential belongs to the provider whose index knows it, and is unknown
// only when none of the providers reading that place knows it: before it extracts, the chain
// peeks with every provider of a shared type and passes over a provider whose index does not know
// the credential while another one's at the same place does. That provider then answers neither
// Unknown nor a denial of its own settings (a stricter clock skew) for a credential that is not
// its own.
type Peeker interface {
	// Peek returns, without checking anything, where r carries this provider's credential and
	// the index entry it claims (what Extract would put in Credential.Lookup). place names the
	// header, query parameter or cookie and, for a shared header, the scheme; providers of one
	// type must name one place alike. ok is false when r carries no single credential of this
	// provider's, or one that cannot be read: Extract then decides as usual.
	Peek(r *http.Request) (place, lookup string, ok bool)
}

// Readier is implemented by providers that depend on something remote (an OIDC issuer).
// Ready returns nil when the provider can currently verify credentials.
type Readier interface {
	Ready(ctx context.Context) error
}

// ErrUnavailable marks errors of a provider that cannot be asked right now. The gateway answers
// 503 and never forwards the request.
var ErrUnavailable = errors.New("identity provider unavailable")

// Credential is one credential found in a request.
type Credential struct {
	// Provider is the provider that extracted it.
	Provider Provider
	// Lookup is the credential index key this credential claims (a key hash, a username, a
	// JWT key claim, an HMAC keyId, a token subject). It is never a plain secret.
	Lookup string
	// Claims are the verified claims of a token credential, sent upstream as X-Userinfo by
	// providers that set them (OIDC, Keycloak). Nil for the others.
	Claims map[string]any
	// Userinfo is the X-Userinfo value for Claims (base64 of their JSON) when the provider has it
	// at hand (cached with a verified token); "" means the gateway encodes Claims itself.
	Userinfo string
	// Subject is who a token names (the value of the provider's subject claim: a person or a
	// client), sent upstream as X-Consumer-Subject and counted by limit-count's key "subject".
	// "" for credentials that are no token.
	Subject string
	// State is the provider's private state between Extract and Verify.
	State any
}

// Binding is one consumer's binding to one provider, compiled at load time.
type Binding interface {
	// Lookup is the credential index key this binding claims; unique per provider.
	Lookup() string
	// Identifier names the credential without revealing it ("keys", "basic:alice"). It is sent
	// upstream as X-Credential-Identifier and written to logs.
	Identifier() string
}

// ClaimMatched is implemented by bindings that name their consumer by conditions on a verified
// token instead of by one credential (an oidc or keycloak binding without subject): people are
// consumers without one entry each. The index keeps them per provider in policy order, apart
// from the credential index; a credential no index entry knows belongs to the first of them
// whose conditions it meets (Verify grants). An exact index entry always wins.
type ClaimMatched interface {
	Binding
	// ClaimMatched reports whether the binding is matched by its conditions (its Lookup is then
	// "" and not indexed).
	ClaimMatched() bool
}

// Warner is implemented by bindings that are valid but weak (an RSA key under 2048 bits).
// Warnings says why, one sentence each; validate and every load report them without failing.
type Warner interface {
	Warnings() []string
}

// BindingSpec is a consumer's binding as written in the policy, with secrets already
// substituted. Each provider type reads only its own fields.
type BindingSpec struct {
	// IdP is the provider name; Consumer the consumer's username (for error messages).
	IdP      string
	Consumer string
	// ID is the binding's optional id, sent upstream as X-Credential-Identifier.
	ID string

	// key-auth: Key. jwt-auth: Key (the value of the key claim).
	Key string
	// basic-auth.
	Username string
	Password string
	// jwt-auth: Secret (HS*) or PublicKey (PEM, RS*/PS*/ES*/EdDSA), and the pinned Algorithm.
	// hmac-auth: KeyID and Secret.
	Secret    string
	PublicKey string
	Algorithm string
	KeyID     string
	// oidc and keycloak.
	Subject     string
	Claims      map[string][]string
	Scopes      []string
	RealmRoles  []string
	ClientRoles map[string][]string
	Groups      []string
	Permissions []string
}

// CredentialID is the X-Credential-Identifier of the binding: its ID when the policy sets one,
// otherwise "<idp>:<name>" where name is the binding's public name, never a secret: the
// basic-auth username, the jwt-auth key, the hmac-auth key_id, the oidc or keycloak subject, and
// for key-auth, whose key is the secret, the consumer's username.
func (s BindingSpec) CredentialID(name string) string {
	if s.ID != "" {
		return s.ID
	}
	return s.IdP + ":" + name
}

// Denial is a provider's negative answer.
type Denial struct {
	// Status is 401 (missing or invalid credentials) or 403 (known but not allowed).
	Status int
	// Message goes to the client in {"message": ...}. It is generic and never holds a secret.
	Message string
	// Reason is the precise cause, for the log and for explain. Never a secret.
	Reason string
	// Challenge is the WWW-Authenticate value sent with a 401.
	Challenge string

	// noCredential marks the chain's answer to a request without any credential (see
	// ErrNoCredential).
	noCredential bool
}

// ErrNoCredential matches (errors.Is) the denial of a request that carries no credential at
// all, so that the gateway can answer it with the challenges of the route's providers.
var ErrNoCredential = errors.New("no credential in request")

// Is reports whether d is the no-credential denial, for errors.Is(err, ErrNoCredential).
func (d *Denial) Is(target error) bool { return target == ErrNoCredential && d.noCredential }

func (d *Denial) Error() string {
	if d.Reason != "" && d.Reason != d.Message {
		return fmt.Sprintf("%s (%s)", d.Message, d.Reason)
	}
	return d.Message
}

// WithReason returns a copy of d with a precise reason.
func (d *Denial) WithReason(format string, args ...any) *Denial {
	c := *d
	c.Reason = fmt.Sprintf(format, args...)
	return &c
}

// Unauthorized builds a 401 denial.
func Unauthorized(message, challenge string) *Denial {
	return &Denial{Status: http.StatusUnauthorized, Message: message, Challenge: challenge}
}

// Forbidden builds a 403 denial.
func Forbidden(message string) *Denial {
	return &Denial{Status: http.StatusForbidden, Message: message}
}
