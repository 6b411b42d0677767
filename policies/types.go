// Package policies owns the JSON policy format: its types and JSON Schema, loading a file or a
// folder, ${env:…}/${file:…} secrets, validation errors with file:line:col and JSON path, and
// compiling a policy into an immutable Snapshot that the gateway serves from.
package policies

import (
	"encoding/json"
	"time"
)

// Policy is the policy document as written (after merging the files of a folder).
type Policy struct {
	Listen      string `json:"listen,omitempty"`
	AdminListen string `json:"admin_listen,omitempty"`
	// TrustedProxies are the proxies in front of the gateway (IP addresses or CIDR prefixes)
	// whose X-Forwarded-For is believed: see Snapshot.TrustedProxies.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`
	// ForwardAuth, when set, answers the proxy in front (nginx auth_request, Caddy forward_auth,
	// Traefik ForwardAuth, Envoy ext_authz) on a reserved path: see Snapshot.ForwardAuth.
	ForwardAuth    *ForwardAuth    `json:"forward_auth,omitempty"`
	TLS            *TLS            `json:"tls,omitempty"`
	Redis          *Redis          `json:"redis,omitempty"`
	IdPs           []IdP           `json:"idps,omitempty"`
	ConsumerGroups []ConsumerGroup `json:"consumer_groups,omitempty"`
	Consumers      []Consumer      `json:"consumers,omitempty"`
	Routes         []Route         `json:"routes,omitempty"`
	// Metrics chooses the consumers that get series of their own: see Metrics.
	Metrics *Metrics `json:"metrics,omitempty"`
}

// Metrics bounds the consumer label of the per-consumer series (portcullis_requests_total,
// portcullis_forward_auth_requests_total, a consumer's own limits in
// portcullis_ratelimit_rejections_total): only the consumers named here, the members of the
// groups named here, and the routes' anonymous consumers get their own value; every other
// identified consumer is counted as UntrackedConsumer. Without it no consumer is tracked.
type Metrics struct {
	Consumers []string `json:"consumers,omitempty"`
	Groups    []string `json:"consumer_groups,omitempty"`
	// AllConsumers tracks every consumer: only for a policy with few of them.
	AllConsumers bool `json:"all_consumers,omitempty"`
}

// UntrackedConsumer is the consumer label value of the consumers Metrics does not track.
const UntrackedConsumer = "other"

// ForwardAuth is the forward-auth endpoint: the proxy in front asks it to decide a request it
// describes, instead of sending the request through the gateway.
type ForwardAuth struct {
	// Path is the endpoint's path on the gateway listener (default DefaultForwardAuthPath);
	// Path+"/nginx" and Path+"/envoy/..." answer those proxies' conventions.
	Path string `json:"path,omitempty"`
	// Allow lists the peers (IP addresses or CIDR prefixes) that may ask; default the
	// trusted_proxies. Anyone else is refused: the endpoint would let them probe credentials
	// and spend other callers' limits.
	Allow []string `json:"allow,omitempty"`
}

// TLS is the gateway listener's TLS.
type TLS struct {
	CertFile   string `json:"cert_file"`
	KeyFile    string `json:"key_file"`
	MinVersion string `json:"min_version,omitempty"`
}

// Redis is the shared store of the redis rate-limit policy.
type Redis struct {
	Addr     string   `json:"addr,omitempty"`
	Addrs    []string `json:"addrs,omitempty"`
	Username string   `json:"username,omitempty"`
	Password string   `json:"password,omitempty"`
	DB       int      `json:"db,omitempty"`
	TLS      bool     `json:"tls,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
}

// IdP is one identity provider. Fields apply by Type; the schema rejects the others.
type IdP struct {
	Name string `json:"name"`
	Type string `json:"type"`

	// Where the credential is read (key-auth, jwt-auth, oidc, keycloak).
	Header          string `json:"header,omitempty"`
	Query           string `json:"query,omitempty"`
	Cookie          string `json:"cookie,omitempty"`
	HideCredentials bool   `json:"hide_credentials,omitempty"`
	Realm           string `json:"realm,omitempty"` // WWW-Authenticate realm; for keycloak, the Keycloak realm

	// jwt-auth.
	KeyClaim string `json:"key_claim,omitempty"`
	Leeway   *int   `json:"leeway,omitempty"` // seconds, also oidc/keycloak

	// hmac-auth.
	ClockSkew           *int     `json:"clock_skew,omitempty"`
	SignedHeaders       []string `json:"signed_headers,omitempty"`
	AllowedAlgorithms   []string `json:"allowed_algorithms,omitempty"`
	ValidateRequestBody bool     `json:"validate_request_body,omitempty"`
	MaxReqBodySize      *int64   `json:"max_req_body_size,omitempty"`
	MaxBufferedBodySize *int64   `json:"max_buffered_body_size,omitempty"`
	NonceHeader         string   `json:"nonce_header,omitempty"`
	Compat              string   `json:"compat,omitempty"` // "strict" (default) or "apisix-loose"

	// oidc and keycloak.
	Issuer            string   `json:"issuer,omitempty"`
	URL               string   `json:"url,omitempty"`
	ClientID          string   `json:"client_id,omitempty"`
	ClientSecret      string   `json:"client_secret,omitempty"`
	Audience          string   `json:"audience,omitempty"`
	CheckAZP          bool     `json:"check_azp,omitempty"`
	SubjectClaim      string   `json:"subject_claim,omitempty"`
	Algorithms        []string `json:"algorithms,omitempty"`
	Introspection     bool     `json:"introspection,omitempty"`
	IntrospectionTTL  Duration `json:"introspection_ttl,omitempty"`
	Timeout           Duration `json:"timeout,omitempty"`
	JWKSRefreshMinGap Duration `json:"jwks_refresh_min_interval,omitempty"`
	// Session signs people in with a browser (oidc and keycloak).
	Session *Session `json:"session,omitempty"`
}

// Session is an oidc or keycloak provider's browser sign-in: see idp.SessionConfig.
type Session struct {
	Secrets               []string `json:"secrets"`
	CookieName            string   `json:"cookie_name,omitempty"`
	CookieDomain          string   `json:"cookie_domain,omitempty"`
	CookiePath            string   `json:"cookie_path,omitempty"`
	CookieSecure          *bool    `json:"cookie_secure,omitempty"`
	CallbackPath          string   `json:"callback_path,omitempty"`
	LogoutPath            string   `json:"logout_path,omitempty"`
	BackchannelLogoutPath string   `json:"backchannel_logout_path,omitempty"`
	RedirectURL           string   `json:"redirect_url,omitempty"`
	PostLogoutRedirectURI string   `json:"post_logout_redirect_uri,omitempty"`
	Scopes                []string `json:"scopes,omitempty"`
	RefreshLeeway         Duration `json:"refresh_leeway,omitempty"`
	MaxAge                Duration `json:"max_age,omitempty"`
	// Store is "cookie" (default: the sealed session in the cookie) or "redis" (the cookie
	// holds an id; the session is in the policy's Redis, shared by replicas).
	Store string `json:"store,omitempty"`
}

// ConsumerGroup is a named set of consumers sharing plugins (a group's limit-count counter is
// shared by its members).
type ConsumerGroup struct {
	Name    string  `json:"name"`
	Desc    string  `json:"desc,omitempty"`
	Plugins Plugins `json:"plugins,omitempty"`
}

// Consumer is one caller with its ordered bindings.
type Consumer struct {
	Username string    `json:"username"`
	Desc     string    `json:"desc,omitempty"`
	Group    string    `json:"group,omitempty"`
	IdPs     []Binding `json:"idps"`
	Plugins  Plugins   `json:"plugins,omitempty"`
}

// Binding is one consumer's binding to one provider.
type Binding struct {
	IdP string `json:"idp"`
	// ID, when set, is sent upstream as X-Credential-Identifier (APISIX sends the credential's
	// id); without it the identifier is "<idp>:<name>" (see idp.BindingSpec.CredentialID).
	ID string `json:"id,omitempty"`

	Key       string `json:"key,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	Secret    string `json:"secret,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	KeyID     string `json:"key_id,omitempty"`

	Subject     string               `json:"subject,omitempty"`
	Claims      map[string]OneOrMany `json:"claims,omitempty"`
	Scopes      []string             `json:"scopes,omitempty"`
	RealmRoles  []string             `json:"realm_roles,omitempty"`
	ClientRoles map[string][]string  `json:"client_roles,omitempty"`
	Groups      []string             `json:"groups,omitempty"`
	Permissions []string             `json:"permissions,omitempty"`
}

// OneOrMany is a JSON string or a list of strings.
type OneOrMany []string

// UnmarshalJSON accepts "a" and ["a", "b"].
func (o *OneOrMany) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*o = OneOrMany{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*o = many
	return nil
}

// Route is one routed path set in front of an upstream.
type Route struct {
	Name        string   `json:"name"`
	Hosts       []string `json:"hosts,omitempty"`
	Paths       []string `json:"paths"`
	Methods     []string `json:"methods,omitempty"`
	StripPrefix string   `json:"strip_prefix,omitempty"`
	// Upstream is where the route forwards. A route decided only by forward auth (the proxy
	// in front forwards) has none.
	Upstream  Upstream    `json:"upstream,omitzero"`
	Consumers *AccessList `json:"consumers,omitempty"`
	Groups    *AccessList `json:"consumer_groups,omitempty"`
	Anonymous string      `json:"anonymous_consumer,omitempty"`
	// Login names the provider (with a session) that signs in the browsers of this route: a
	// GET or HEAD asking for HTML without credentials is sent to sign in instead of a 401.
	Login   string  `json:"login,omitempty"`
	Plugins Plugins `json:"plugins,omitempty"`

	// AllowEncodedSlashes admits %2F and %5C inside a path segment, kept encoded; without it
	// such a request is answered 400.
	AllowEncodedSlashes bool `json:"allow_encoded_slashes,omitempty"`
}

// AccessList allows or denies by name. An empty allow list allows everyone not denied.
type AccessList struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// Upstream is where a route forwards.
type Upstream struct {
	Targets []Target `json:"targets"`
	Timeout Duration `json:"timeout,omitempty"`
	// ClientBodyTimeout bounds each wait for the next bytes of the client's request body, and
	// SendTimeout each wait for the client to take the next bytes of the response (nginx's
	// client_body_timeout and send_timeout): a trickling or never-reading client would otherwise
	// hold an upstream connection for ever. Defaults 60s.
	ClientBodyTimeout Duration `json:"client_body_timeout,omitempty"`
	SendTimeout       Duration `json:"send_timeout,omitempty"`
}

// Target is one upstream server.
type Target struct {
	URL    string `json:"url"`
	Weight int    `json:"weight,omitempty"`
}

// Plugins are the plugins of a consumer, group or route.
type Plugins struct {
	LimitCount *LimitCount `json:"limit-count,omitempty"`
	LimitReq   *LimitReq   `json:"limit-req,omitempty"`
}

// LimitCount is APISIX's limit-count: at most Count requests per TimeWindow seconds.
type LimitCount struct {
	Count            int      `json:"count"`
	TimeWindow       int      `json:"time_window"`
	Key              string   `json:"key,omitempty"`         // consumer | route | remote_addr | subject
	Policy           string   `json:"policy,omitempty"`      // local | redis
	WindowType       string   `json:"window_type,omitempty"` // fixed | sliding
	RejectedCode     int      `json:"rejected_code,omitempty"`
	RejectedMsg      string   `json:"rejected_msg,omitempty"`
	AllowDegradation bool     `json:"allow_degradation,omitempty"`
	SyncInterval     Duration `json:"sync_interval,omitempty"`
}

// LimitReq is APISIX's limit-req: a leaky bucket of Rate requests per second with Burst.
type LimitReq struct {
	Rate             float64 `json:"rate"`
	Burst            float64 `json:"burst,omitempty"`
	NoDelay          bool    `json:"nodelay,omitempty"`
	Key              string  `json:"key,omitempty"`
	Policy           string  `json:"policy,omitempty"`
	RejectedCode     int     `json:"rejected_code,omitempty"`
	RejectedMsg      string  `json:"rejected_msg,omitempty"`
	AllowDegradation bool    `json:"allow_degradation,omitempty"`
}

// Duration is a Go duration string in JSON ("30s", "1m").
type Duration time.Duration

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
