package kcfixture

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
)

// Helpers for browser sign-in tests: a client set up for the authorization-code flow with PKCE
// and back-channel logout, a short access-token lifespan, and the deletion of a user's sessions.
//
// The test Keycloak is shared by a whole test binary and a client has one back-channel logout
// URL: tests that configure the same client must not run in parallel with each other.

// ConfigureBrowserClient makes clientID of realm a client of the browser sign-in: the standard
// (authorization code) flow on, PKCE with S256 required, redirectURIs as its only redirect URIs
// (also allowed after logout), webOrigins "+", and back-channel logout (no front-channel logout)
// to backchannelLogoutURL with the session id (sid) in the logout token. backchannelLogoutURL
// must be reachable by the Keycloak server: use 127.0.0.1, not localhost. "" leaves back-channel
// logout off.
func (k *Keycloak) ConfigureBrowserClient(ctx context.Context, realm, clientID string, redirectURIs []string, backchannelLogoutURL string) error {
	rep, err := k.Client(ctx, realm, clientID)
	if err != nil {
		return fmt.Errorf("configuring client %s for the browser: %w", clientID, err)
	}
	rep["standardFlowEnabled"] = true
	rep["frontchannelLogout"] = false
	rep["redirectUris"] = redirectURIs
	rep["webOrigins"] = []string{"+"}
	attrs, _ := rep["attributes"].(map[string]any)
	if attrs == nil {
		attrs = map[string]any{}
	}
	attrs["pkce.code.challenge.method"] = "S256"
	attrs["post.logout.redirect.uris"] = strings.Join(redirectURIs, "##")
	attrs["backchannel.logout.url"] = backchannelLogoutURL
	attrs["backchannel.logout.session.required"] = "true"
	rep["attributes"] = attrs
	if err := k.UpdateClient(ctx, realm, rep); err != nil {
		return fmt.Errorf("configuring client %s for the browser: %w", clientID, err)
	}
	return nil
}

// Client returns the admin representation of a realm's client, found by its clientId, as
// generic JSON, for a test to read it or to give it back to UpdateClient (to restore it).
func (k *Keycloak) Client(ctx context.Context, realm, clientID string) (map[string]any, error) {
	var clients []map[string]any
	q := url.Values{"clientId": {clientID}}
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm+"/clients?"+q.Encode(), nil, &clients); err != nil {
		return nil, err
	}
	for _, c := range clients {
		if c["clientId"] == clientID {
			return c, nil
		}
	}
	return nil, fmt.Errorf("finding client %q in realm %s: no such client", clientID, realm)
}

// UpdateClient puts a client representation (from Client, changed or not) back; rep["id"] names
// the client.
func (k *Keycloak) UpdateClient(ctx context.Context, realm string, rep map[string]any) error {
	id, _ := rep["id"].(string)
	if id == "" {
		return fmt.Errorf("updating a client of realm %s: the representation has no id", realm)
	}
	_, err := k.Admin(ctx, http.MethodPut, "/"+realm+"/clients/"+url.PathEscape(id), rep, nil)
	return err
}

// SnapshotClient reads a client's representation and returns a func that puts it back, for a
// test that changes the client (ConfigureBrowserClient) to restore it in t.Cleanup:
//
//	restore, err := k.SnapshotClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
//	...
//	t.Cleanup(func() { restore(context.Background()) })
//
// Keycloak keeps attributes a representation leaves out, so restore sets the attributes that
// were added since the snapshot to "" (for the attributes ConfigureBrowserClient sets, "" means
// off: no back-channel logout, PKCE not required, no post-logout redirect).
func (k *Keycloak) SnapshotClient(ctx context.Context, realm, clientID string) (restore func(context.Context) error, err error) {
	before, err := k.Client(ctx, realm, clientID)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		now, err := k.Client(ctx, realm, clientID)
		if err != nil {
			return fmt.Errorf("restoring client %s: %w", clientID, err)
		}
		rep := maps.Clone(before)
		attrs := map[string]any{}
		if a, ok := before["attributes"].(map[string]any); ok {
			maps.Copy(attrs, a)
		}
		if a, ok := now["attributes"].(map[string]any); ok {
			for key := range a {
				if _, kept := attrs[key]; !kept {
					attrs[key] = ""
				}
			}
		}
		rep["attributes"] = attrs
		if err := k.UpdateClient(ctx, realm, rep); err != nil {
			return fmt.Errorf("restoring client %s: %w", clientID, err)
		}
		return nil
	}, nil
}

// RealmSettings are the settings of a realm that the browser tests change.
type RealmSettings struct {
	AccessTokenLifespan   int `json:"accessTokenLifespan"`   // seconds
	SSOSessionIdleTimeout int `json:"ssoSessionIdleTimeout"` // seconds
	SSOSessionMaxLifespan int `json:"ssoSessionMaxLifespan"` // seconds
}

// RealmSettings returns a realm's token and session lifespans, for a test to restore them:
//
//	before, err := k.RealmSettings(ctx, kcfixture.RealmCorp)
//	...
//	t.Cleanup(func() { k.SetAccessTokenLifespan(context.Background(), kcfixture.RealmCorp, before.AccessTokenLifespan) })
func (k *Keycloak) RealmSettings(ctx context.Context, realm string) (RealmSettings, error) {
	var s RealmSettings
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm, nil, &s); err != nil {
		return RealmSettings{}, fmt.Errorf("reading the settings of realm %s: %w", realm, err)
	}
	return s, nil
}

// SetAccessTokenLifespan sets the lifespan of the realm's access tokens (and so the expires_in of
// its token answers). Tokens issued before keep their expiry.
func (k *Keycloak) SetAccessTokenLifespan(ctx context.Context, realm string, seconds int) error {
	if seconds <= 0 {
		return fmt.Errorf("setting the access-token lifespan of realm %s: %d s is not positive", realm, seconds)
	}
	// The whole representation goes back, so that nothing else of the realm changes.
	var rep map[string]any
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm, nil, &rep); err != nil {
		return fmt.Errorf("setting the access-token lifespan of realm %s: %w", realm, err)
	}
	rep["accessTokenLifespan"] = seconds
	if _, err := k.Admin(ctx, http.MethodPut, "/"+realm, rep, nil); err != nil {
		return fmt.Errorf("setting the access-token lifespan of realm %s: %w", realm, err)
	}
	return nil
}

// UserSession is one of a user's sessions as the admin API lists it.
type UserSession struct {
	ID        string            `json:"id"`
	Username  string            `json:"username"`
	UserID    string            `json:"userId"`
	IPAddress string            `json:"ipAddress"`
	Start     int64             `json:"start"`      // milliseconds since the epoch
	LastSeen  int64             `json:"lastAccess"` // milliseconds since the epoch
	Clients   map[string]string `json:"clients"`    // client id (internal) -> clientId
}

// UserSessions lists a user's (online) sessions.
func (k *Keycloak) UserSessions(ctx context.Context, realm, username string) ([]UserSession, error) {
	id, err := k.UserID(ctx, realm, username)
	if err != nil {
		return nil, err
	}
	var sessions []UserSession
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm+"/users/"+url.PathEscape(id)+"/sessions", nil, &sessions); err != nil {
		return nil, fmt.Errorf("listing the sessions of %s in realm %s: %w", username, realm, err)
	}
	return sessions, nil
}

// DeleteUserSessions deletes each of a user's sessions, as an administrator ending them in the
// admin console does: the next refresh of a token of these sessions fails, and Keycloak sends a
// back-channel logout to the clients that took part in them. It is not an error that the user
// has no session; UserSessions tells.
func (k *Keycloak) DeleteUserSessions(ctx context.Context, realm, username string) error {
	sessions, err := k.UserSessions(ctx, realm, username)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if _, err := k.Admin(ctx, http.MethodDelete, "/"+realm+"/sessions/"+url.PathEscape(s.ID), nil, nil); err != nil {
			return fmt.Errorf("deleting session %s of %s in realm %s: %w", s.ID, username, realm, err)
		}
	}
	return nil
}
