// Package keycloak is the Keycloak identity provider: the generic OIDC provider of package idp
// pointed at a Keycloak realm, plus the conditions only Keycloak knows: realm roles, client
// roles, groups, and Authorization Services permissions decided by Keycloak (UMA).
package keycloak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/internal/expiring"
)

// Config configures a Keycloak provider. The embedded oidc.Config holds everything the OIDC
// provider reads (name, client, token location, introspection, hooks); its Issuer is derived
// from URL and Realm and must be left empty (or equal to it).
//
// Realm here is the Keycloak realm; it shadows oidc.Config.Realm, the WWW-Authenticate realm,
// which defaults to the provider name.
type Config struct {
	oidc.Config
	// URL is Keycloak's base URL ("https://sso.example.com", or ".../auth" for old setups).
	URL string
	// Realm is the Keycloak realm: the issuer is URL + "/realms/" + Realm.
	Realm string
	// DecisionTTL caps how long a UMA decision is cached (it is also never kept past the
	// token's exp). Default 5m.
	DecisionTTL time.Duration
}

// DefaultDecisionTTL is the default cap of the UMA decision cache.
const DefaultDecisionTTL = 5 * time.Minute

const umaGrantType = "urn:ietf:params:oauth:grant-type:uma-ticket"

// Provider is a Keycloak realm as an identity provider. It embeds the OIDC provider and
// overrides only Type, Compile and Verify. Like the OIDC provider it does no network I/O when
// built and starts no goroutines.
type Provider struct {
	*oidc.Provider
	realm       string
	clientID    string
	decisionTTL time.Duration
	decisions   *expiring.Map[decisionKey, bool]
	sf          singleflight.Group
}

var (
	_ idp.Provider = (*Provider)(nil)
	_ idp.Readier  = (*Provider)(nil)
	_ idp.Decliner = (*Provider)(nil)
)

// Issuer returns a realm's issuer URL.
func Issuer(baseURL, realm string) string {
	return strings.TrimRight(baseURL, "/") + "/realms/" + url.PathEscape(realm)
}

// New validates cfg and builds the provider. It does no network I/O.
func New(cfg Config, logger *slog.Logger) (*Provider, error) {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("keycloak provider needs a url"))
	} else if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url %q is not an http(s) URL", cfg.URL))
	}
	if cfg.Realm == "" {
		errs = append(errs, errors.New("keycloak provider needs a realm"))
	}
	if cfg.DecisionTTL < 0 {
		errs = append(errs, errors.New("decision TTL must not be negative"))
	}
	issuer := Issuer(cfg.URL, cfg.Realm)
	if cfg.Issuer != "" && strings.TrimRight(cfg.Issuer, "/") != issuer {
		errs = append(errs, fmt.Errorf("issuer %q contradicts url and realm (%s)", cfg.Issuer, issuer))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configuring keycloak provider %q: %w", cfg.Name, err)
	}
	oc := cfg.Config
	oc.Issuer = issuer
	// Keycloak's tokens name the gateway's client in aud (audience mapper) or azp; without an
	// explicit audience, the gateway's own client is the audience.
	if oc.Audience == "" {
		oc.Audience = oc.ClientID
	}
	o, err := oidc.New(oc, logger)
	if err != nil {
		return nil, fmt.Errorf("configuring keycloak provider %q: %w", cfg.Name, err)
	}
	if cfg.DecisionTTL == 0 {
		cfg.DecisionTTL = DefaultDecisionTTL
	}
	size := oc.CacheSize
	if size <= 0 {
		size = 10000
	}
	return &Provider{
		Provider:    o,
		realm:       cfg.Realm,
		clientID:    oc.ClientID,
		decisionTTL: cfg.DecisionTTL,
		decisions:   expiring.New[decisionKey, bool](size),
	}, nil
}

// Type is "keycloak".
func (p *Provider) Type() string { return "keycloak" }

// KeycloakRealm is the Keycloak realm of the provider.
func (p *Provider) KeycloakRealm() string { return p.realm }

// permission is one Authorization Services permission: "resource#scope", "resource" or "#scope".
type permission struct {
	raw      string
	resource string
	scope    string
}

// binding is a consumer's binding to a Keycloak provider.
type binding struct {
	*oidc.Binding
	realmRoles  []string
	clientRoles map[string][]string
	groups      []string
	permissions []permission
}

// Compile compiles a binding: subject, claims and scopes as for oidc, plus realm roles, client
// roles, groups and permissions.
func (p *Provider) Compile(spec idp.BindingSpec) (idp.Binding, error) {
	var errs []error
	ob, err := oidc.CompileBinding(p.Name(), spec)
	if err != nil {
		errs = append(errs, err)
	}
	b := &binding{Binding: ob, realmRoles: slices.Clone(spec.RealmRoles), groups: slices.Clone(spec.Groups),
		clientRoles: make(map[string][]string, len(spec.ClientRoles))}
	for _, r := range spec.RealmRoles {
		if r == "" {
			errs = append(errs, errors.New("realm_roles: empty role name"))
		}
	}
	for client, roles := range spec.ClientRoles {
		if client == "" || len(roles) == 0 || slices.Contains(roles, "") {
			errs = append(errs, fmt.Errorf("client_roles: %q needs a client id and non-empty role names", client))
			continue
		}
		b.clientRoles[client] = slices.Clone(roles)
	}
	for _, g := range spec.Groups {
		if g == "" {
			errs = append(errs, errors.New("groups: empty group name"))
		}
	}
	for _, raw := range spec.Permissions {
		resource, scope, _ := strings.Cut(raw, "#")
		if (resource == "" && scope == "") || strings.Count(raw, "#") > 1 {
			errs = append(errs, fmt.Errorf("permissions: %q is not \"resource#scope\", \"resource\" or \"#scope\"", raw))
			continue
		}
		b.permissions = append(b.permissions, permission{raw: raw, resource: resource, scope: scope})
	}
	if len(b.permissions) > 0 && p.clientID == "" {
		errs = append(errs, errors.New("permissions need the provider's client_id (the resource server)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b, nil
}

// Verify checks the binding: the OIDC conditions, then roles and groups from the verified
// claims, then permissions with Keycloak. An unmet condition is a 403; a Keycloak that cannot be
// asked about a permission is an error wrapping idp.ErrUnavailable.
func (p *Provider) Verify(ctx context.Context, r *http.Request, cred *idp.Credential, b idp.Binding) error {
	kb, ok := b.(*binding)
	if !ok {
		return fmt.Errorf("verifying %s: binding of type %T is not a keycloak binding", p.Name(), b)
	}
	if err := p.VerifyConditions(cred, kb.Binding); err != nil {
		return err
	}
	claims := cred.Claims
	if len(kb.realmRoles) > 0 {
		have := realmRoles(claims)
		for _, want := range kb.realmRoles {
			if !slices.Contains(have, want) {
				return p.Forbidden("token lacks realm role %q", want)
			}
		}
	}
	for client, roles := range kb.clientRoles {
		have := clientRoles(claims, client)
		for _, want := range roles {
			if !slices.Contains(have, want) {
				return p.Forbidden("token lacks client role %q of client %q", want, client)
			}
		}
	}
	if len(kb.groups) > 0 {
		have := stringList(claims["groups"])
		for _, want := range kb.groups {
			if !hasGroup(have, want) {
				return p.Forbidden("token lacks group %q", want)
			}
		}
	}
	if len(kb.permissions) > 0 {
		tok, ok := oidc.TokenOf(cred)
		if !ok {
			return fmt.Errorf("verifying %s: credential carries no token state", p.Name())
		}
		for _, perm := range kb.permissions {
			granted, err := p.decide(ctx, tok, perm)
			if err != nil {
				return err
			}
			if !granted {
				return p.Forbidden("keycloak denies permission %q", perm.raw)
			}
		}
	}
	return nil
}

// realmRoles reads realm_access.roles.
func realmRoles(claims map[string]any) []string {
	ra, _ := claims["realm_access"].(map[string]any)
	return stringList(ra["roles"])
}

// clientRoles reads resource_access.<client>.roles.
func clientRoles(claims map[string]any, client string) []string {
	ra, _ := claims["resource_access"].(map[string]any)
	c, _ := ra[client].(map[string]any)
	return stringList(c["roles"])
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// hasGroup matches a group by name or by full path: Keycloak's group mapper writes "eng" or
// "/eng", depending on its "full path" switch.
func hasGroup(have []string, want string) bool {
	w := strings.TrimPrefix(want, "/")
	for _, h := range have {
		if h == want || strings.TrimPrefix(h, "/") == w {
			return true
		}
	}
	return false
}

// decide asks Keycloak's Authorization Services whether the token's owner has perm, with the
// caller's token as the bearer, caching the decision until the token expires.
func (p *Provider) decide(ctx context.Context, tok *oidc.Token, perm permission) (bool, error) {
	key := decisionKey{token: tok.Hash, permission: perm.raw}
	now := p.Now()
	if granted, ok := p.decisions.Get(key, now); ok {
		p.ObserveCache("uma", true)
		return granted, nil
	}
	p.ObserveCache("uma", false)
	sfKey := hex.EncodeToString(tok.Hash[:]) + "\x00" + perm.raw
	v, err, _ := p.sf.Do(sfKey, func() (any, error) {
		granted, err := p.askUMA(ctx, tok.Raw, perm)
		if err != nil {
			return false, err
		}
		until := now.Add(p.decisionTTL)
		if !tok.Expiry.IsZero() && tok.Expiry.Before(until) {
			until = tok.Expiry
		}
		if until.After(now) {
			p.decisions.Put(key, granted, until, now)
		}
		return granted, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

func (p *Provider) askUMA(ctx context.Context, token string, perm permission) (granted bool, err error) {
	ep, err := p.Endpoints(ctx)
	if err != nil {
		return false, err
	}
	start := time.Now()
	defer func() {
		// A refused token is an answer, not a failure of Keycloak.
		var d *idp.Denial
		if errors.As(err, &d) {
			p.ObserveCall("uma", start, nil)
			return
		}
		p.ObserveCall("uma", start, err)
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.Config().Timeout)
	defer cancel()
	form := url.Values{
		"grant_type":    {umaGrantType},
		"audience":      {p.clientID},
		"permission":    {perm.raw},
		"response_mode": {"decision"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.Token, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("asking keycloak for %q: %w: %w", perm.raw, idp.ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		return false, fmt.Errorf("asking keycloak for %q: %w: %w", perm.raw, idp.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return false, fmt.Errorf("asking keycloak for %q: %w: %w", perm.raw, idp.ErrUnavailable, err)
	}
	var ans struct {
		Result *bool  `json:"result"`
		Error  string `json:"error"`
		Desc   string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &ans)
	switch {
	case resp.StatusCode == http.StatusOK && ans.Result != nil:
		return *ans.Result, nil
	case resp.StatusCode == http.StatusForbidden:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized:
		// The bearer itself was refused: the session behind the token has ended.
		return false, p.Invalid("keycloak refused the token for permission %q: %s", perm.raw, ans.Error)
	case resp.StatusCode == http.StatusBadRequest:
		// invalid_resource / invalid_scope: the binding names a permission the resource server
		// does not define. Denied, and worth a warning: it is a policy mistake.
		p.Logger().Warn("keycloak rejected a permission request", "permission", perm.raw, "error", ans.Error, "description", ans.Desc)
		return false, nil
	default:
		return false, fmt.Errorf("asking keycloak for %q: %w: status %d", perm.raw, idp.ErrUnavailable, resp.StatusCode)
	}
}

// decisionKey identifies a cached UMA decision. The token is kept only as its hash.
type decisionKey struct {
	token      [sha256.Size]byte
	permission string
}
