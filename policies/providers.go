package policies

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/portcullis/portcullis/idp"
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
	// validateOnly is set by Validate: the provider is built only to compile bindings and is
	// closed right after; it must start nothing (no goroutines, no network I/O).
	validateOnly bool
	// hooks receive provider metrics.
	hooks Hooks
}

// buildProvider builds one identity provider from its policy configuration. Defaults are
// already applied. Constructors do no I/O: a provider whose IdP is unreachable still builds
// and reports that through idp.Readier.
func buildProvider(cfg IdP, env buildEnv) (idp.Provider, error) {
	switch cfg.Type {
	case "key-auth":
		return idp.NewKeyAuth(idp.KeyAuthConfig{
			Name:            cfg.Name,
			Header:          cfg.Header,
			Query:           cfg.Query,
			HideCredentials: cfg.HideCredentials,
			Realm:           cfg.Realm,
		}), nil

	case "basic-auth":
		return idp.NewBasicAuth(idp.BasicAuthConfig{Name: cfg.Name, HideCredentials: cfg.HideCredentials, Realm: cfg.Realm}, env.logger), nil

	case "jwt-auth":
		c := idp.JWTAuthConfig{Name: cfg.Name, Header: cfg.Header, Query: cfg.Query, Cookie: cfg.Cookie,
			HideCredentials: cfg.HideCredentials, Realm: cfg.Realm, KeyClaim: cfg.KeyClaim, ForeignIssuers: env.issuers}
		if cfg.Leeway != nil {
			c.Leeway = time.Duration(*cfg.Leeway) * time.Second
		}
		return idp.NewJWTAuth(c, env.logger)

	case "hmac-auth":
		c := idp.HMACAuthConfig{Name: cfg.Name, HideCredentials: cfg.HideCredentials, Realm: cfg.Realm,
			AllowedAlgorithms: cfg.AllowedAlgorithms, ClockSkew: cfg.ClockSkew,
			SignedHeaders: cfg.SignedHeaders, ValidateRequestBody: cfg.ValidateRequestBody, NonceHeader: cfg.NonceHeader}
		if cfg.MaxReqBodySize != nil {
			c.MaxReqBodySize = *cfg.MaxReqBodySize
		}
		return idp.NewHMACAuth(c, env.logger)

	// "oidc" and "keycloak" are added here as their packages land (pass env.ctx, env.logger,
	// env.httpClient, env.hooks; honour env.validateOnly).

	default:
		return nil, fmt.Errorf("provider type %q is not built yet", cfg.Type)
	}
}
