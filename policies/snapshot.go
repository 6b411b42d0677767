package policies

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/portcullis/portcullis/consumers"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/tlscert"
)

// Snapshot is a loaded, validated and compiled policy. It is immutable: a reload builds a new
// Snapshot and the gateway swaps it in atomically; requests in flight finish on the old one.
type Snapshot struct {
	// Version identifies the policy content (a hash of the merged source).
	Version string
	// Source is the file or folder it was loaded from; LoadedAt when.
	Source   string
	LoadedAt time.Time
	// Warnings are what the policy has that is valid but most likely a mistake (no routes:
	// every request is answered 404). Loading does not fail for them; the caller says them.
	Warnings []*Error

	// Policy is the decoded document with secrets substituted. Never log it whole.
	Policy *Policy

	// TrustedProxies are the policy's trusted_proxies. When a request comes from one of them,
	// its client is the nearest address in X-Forwarded-For, read from the right, that is not a
	// trusted proxy (nginx's set_real_ip_from with real_ip_recursive on); without them, the TCP
	// peer, whatever X-Forwarded-For says.
	TrustedProxies []netip.Prefix
	// ForwardAuth is the forward-auth endpoint; nil when the policy has no forward_auth.
	ForwardAuth *ForwardAuthEndpoint
	// TLS serves the listener's certificate when the policy has tls; nil without.
	TLS *tlscert.Source

	// Providers are every identity provider, in policy order; ProviderByName indexes them.
	Providers      []idp.Provider
	ProviderByName map[string]idp.Provider
	// Consumers holds the consumers, groups and the credential index.
	Consumers *consumers.Set
	// Chain evaluates the chain rule over Providers and Consumers.
	Chain *idp.Chain
	// ConsumerPlugins and GroupPlugins are the plugins by consumer username and group name.
	ConsumerPlugins map[string]Plugins
	GroupPlugins    map[string]Plugins
}

// ForwardAuthEndpoint is the compiled forward_auth.
type ForwardAuthEndpoint struct {
	// Path is where the endpoint answers (Path, Path+"/nginx", Path+"/envoy/...").
	Path string
	// Allow are the peers that may ask: forward_auth's allow, or the trusted_proxies. The TCP
	// peer is checked, never X-Forwarded-For. Never empty.
	Allow []netip.Prefix
}

// Options are the dependencies of loading and compiling.
type Options struct {
	// Logger receives provider logs. Defaults to a discarding logger.
	Logger *slog.Logger
	// LookupEnv resolves ${env:NAME}. Defaults to os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile resolves ${file:PATH}. Defaults to reading a regular file of at most
	// MaxSecretFileSize bytes (a FIFO or device at the path is an error, not a wait).
	ReadFile func(string) ([]byte, error)
	// MaxFileSize caps each policy file, in bytes. Defaults to DefaultMaxFileSize.
	MaxFileSize int64
	// HTTPClient is used by providers that call an IdP. Defaults to a client with timeouts.
	HTTPClient *http.Client
	// Context bounds start-up work of providers (OIDC discovery). Providers must not fail to
	// build because an IdP is unreachable: they report it through idp.Readier instead.
	Context context.Context
	// Hooks receive provider metrics; nil hooks are skipped.
	Hooks Hooks
	// SessionRevocations, when set, shares the browser sessions' logouts between replicas
	// (Redis); the sessions of every provider use it.
	SessionRevocations oidc.RevocationStore
	// SessionStore keeps the sessions of the providers whose session has store "redis".
	SessionStore oidc.SessionStore
}

// Hooks are the metric callbacks handed to providers, so that idp needs no metrics library.
type Hooks struct {
	// IdPCall records a call to an IdP (op: discovery, jwks, introspection, uma).
	IdPCall func(provider, op string, d time.Duration, err error)
	// IdPCache records a provider cache lookup (cache: token, introspection, uma, bcrypt).
	IdPCache func(provider, cache string, hit bool)
}

// Close releases what the snapshot's providers hold (background refreshes, connections).
func (s *Snapshot) Close() error {
	var errs []error
	for _, p := range s.Providers {
		if c, ok := p.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
