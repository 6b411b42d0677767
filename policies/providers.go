package policies

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/keycloak"
)

// buildEnv is what provider constructors may use besides their own configuration.
type buildEnv struct {
	// ctx bounds start-up work; logger and httpClient are the providers' dependencies.
	ctx        context.Context
	logger     *slog.Logger
	httpClient *http.Client
	// issuers are the token issuers of every oidc and keycloak provider of the policy
	// (keycloak: url + "/realms/" + realm). jwt-auth leaves tokens of these issuers alone.
	issuers []string
	// idps are every provider configuration of the policy, defaults applied.
	idps []IdP
	// validateOnly is set by Validate: the provider is built only to compile bindings and is
	// closed right after; it must start nothing (no goroutines, no network I/O).
	validateOnly bool
	// hooks receive provider metrics.
	hooks Hooks
	// revocations share session logouts between replicas; sessionStore keeps the sessions of
	// store "redis". Nil without.
	revocations  oidc.RevocationStore
	sessionStore oidc.SessionStore
}

// buildProvider builds one identity provider from its policy configuration. Defaults are
// already applied. Constructors do no I/O: a provider whose IdP is unreachable still builds
// and reports that through idp.Readier.
func buildProvider(cfg IdP, env buildEnv) (idp.Provider, error) {
	switch cfg.Type {
	case "key-auth":
		return local.NewKeyAuth(local.KeyAuthConfig{
			Name:            cfg.Name,
			Header:          cfg.Header,
			Query:           cfg.Query,
			HideCredentials: cfg.HideCredentials,
			Realm:           cfg.Realm,
		}), nil

	case "basic-auth":
		schemes, bare := authorizationSchemesOf(env.idps, cfg.Name)
		return local.NewBasicAuth(local.BasicAuthConfig{Name: cfg.Name, HideCredentials: cfg.HideCredentials, Realm: cfg.Realm,
			OtherSchemes: schemes, OtherBareTokens: bare}, env.logger), nil

	case "jwt-auth":
		c := local.JWTAuthConfig{Name: cfg.Name, Header: cfg.Header, Query: cfg.Query, Cookie: cfg.Cookie,
			HideCredentials: cfg.HideCredentials, Realm: cfg.Realm, KeyClaim: cfg.KeyClaim, ForeignIssuers: env.issuers}
		if cfg.Leeway != nil {
			c.Leeway = time.Duration(*cfg.Leeway) * time.Second
		}
		return local.NewJWTAuth(c, env.logger)

	case "hmac-auth":
		c := local.HMACAuthConfig{Name: cfg.Name, HideCredentials: cfg.HideCredentials, Realm: cfg.Realm,
			AllowedAlgorithms: cfg.AllowedAlgorithms, ClockSkew: cfg.ClockSkew,
			SignedHeaders: cfg.SignedHeaders, ValidateRequestBody: cfg.ValidateRequestBody, NonceHeader: cfg.NonceHeader,
			Compat: cfg.Compat}
		if cfg.MaxReqBodySize != nil {
			c.MaxReqBodySize = *cfg.MaxReqBodySize
		}
		if cfg.MaxBufferedBodySize != nil {
			c.MaxBufferedBodySize = *cfg.MaxBufferedBodySize
		}
		return local.NewHMACAuth(c, env.logger)

	case "oidc":
		return oidc.New(oidcConfig(cfg, env), env.logger)

	case "keycloak":
		oc := oidcConfig(cfg, env)
		// In a keycloak provider, realm names the Keycloak realm; the issuer derives from it and
		// the WWW-Authenticate realm is the provider's name.
		oc.Realm, oc.Issuer = "", ""
		return keycloak.New(keycloak.Config{Config: oc, URL: cfg.URL, Realm: cfg.Realm}, env.logger)

	default:
		return nil, fmt.Errorf("unknown provider type %q", cfg.Type)
	}
}

// authorizationSchemesOf lists the Authorization schemes the providers of idps other than the
// named one read, and whether one reads a bare token there (jwt-auth takes "Bearer " as
// optional).
func authorizationSchemesOf(idps []IdP, except string) (schemes []string, bare bool) {
	add := func(s string) {
		if !slices.Contains(schemes, s) {
			schemes = append(schemes, s)
		}
	}
	for _, c := range idps {
		if c.Name == except {
			continue
		}
		onAuthorization := c.Header == "" || strings.EqualFold(c.Header, "Authorization")
		switch c.Type {
		case "hmac-auth":
			add("Signature")
		case "jwt-auth":
			if onAuthorization {
				add("Bearer")
				bare = true
			}
		case "oidc", "keycloak":
			if onAuthorization {
				add("Bearer")
			}
		}
	}
	return schemes, bare
}

// oidcConfig maps the fields shared by the oidc and keycloak types.
func oidcConfig(cfg IdP, env buildEnv) oidc.Config {
	c := oidc.Config{
		Name:                   cfg.Name,
		Issuer:                 cfg.Issuer,
		Audience:               cfg.Audience,
		CheckAZP:               cfg.CheckAZP,
		SubjectClaim:           cfg.SubjectClaim,
		Algorithms:             cfg.Algorithms,
		Header:                 cfg.Header,
		Query:                  cfg.Query,
		Cookie:                 cfg.Cookie,
		HideCredentials:        cfg.HideCredentials,
		Realm:                  cfg.Realm,
		ClientID:               cfg.ClientID,
		ClientSecret:           cfg.ClientSecret,
		Introspection:          cfg.Introspection,
		IntrospectionTTL:       time.Duration(cfg.IntrospectionTTL),
		Timeout:                time.Duration(cfg.Timeout),
		JWKSRefreshMinInterval: time.Duration(cfg.JWKSRefreshMinGap),
		HTTPClient:             env.httpClient,
		OnIdPCall:              env.hooks.IdPCall,
		OnCache:                env.hooks.IdPCache,
	}
	if cfg.Leeway != nil {
		c.Leeway = time.Duration(*cfg.Leeway) * time.Second
	}
	if s := cfg.Session; s != nil {
		c.Session = &oidc.SessionConfig{
			Secrets: s.Secrets, CookieName: s.CookieName, CookieDomain: s.CookieDomain, CookiePath: s.CookiePath,
			Insecure:     s.CookieSecure != nil && !*s.CookieSecure,
			CallbackPath: s.CallbackPath, LogoutPath: s.LogoutPath, BackchannelLogoutPath: s.BackchannelLogoutPath,
			RedirectURL: s.RedirectURL, PostLogoutRedirectURI: s.PostLogoutRedirectURI, Scopes: s.Scopes,
			RefreshLeeway: time.Duration(s.RefreshLeeway), MaxAge: time.Duration(s.MaxAge),
			Revocations: env.revocations,
		}
		if s.Store == "redis" {
			c.Session.Store = env.sessionStore
		}
	}
	return c
}
