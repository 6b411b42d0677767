package policies

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

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

	// Other provider types are added here as their packages land: "basic-auth", "jwt-auth"
	// (pass env.issuers), "hmac-auth", "oidc" and "keycloak" (pass env.ctx, env.logger,
	// env.httpClient; honour env.validateOnly).

	default:
		return nil, fmt.Errorf("provider type %q is not built yet", cfg.Type)
	}
}
