// Package oidc is the generic OpenID Connect provider: bearer tokens of one issuer verified
// against its JWKS (discovery, key rotation, a bounded verified-token cache), optional token
// introspection (RFC 7662), and browser sign-in (authorization code with PKCE, sealed or stored
// sessions, refresh, RP-initiated and back-channel logout).
//
// A provider for a specific IdP embeds *Provider and overrides only what differs, as the
// keycloak package does for realm roles, client roles and UMA decisions. For such providers,
// and only for them, Provider exports its building blocks: CompileBinding and VerifyConditions
// (the generic binding and its checks, to extend), TokenOf (the verified token a Credential
// carries), Invalid and Forbidden (denials with this provider's challenge and a reason),
// ObserveCall and ObserveCache (the metrics hooks of Config), and HTTPClient, Logger and Now
// (the dependencies the provider was built with, so that the embedding one calls the IdP with
// the same timeouts, logs and clock). Everything else is the idp.Provider contract.
package oidc
