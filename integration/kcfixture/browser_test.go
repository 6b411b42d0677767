package kcfixture_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

func TestConfigureBrowserClient(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	ctx := t.Context()
	redirects := []string{"http://localhost:1/callback", "http://127.0.0.1:1/callback"}
	const backchannel = "http://127.0.0.1:1/backchannel-logout"
	restore, err := k.SnapshotClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
	if err != nil {
		t.Fatalf("SnapshotClient: %v", err)
	}
	if err := k.ConfigureBrowserClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway, redirects, backchannel); err != nil {
		t.Fatalf("ConfigureBrowserClient: %v", err)
	}
	rep, err := k.Client(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	attrs, _ := rep["attributes"].(map[string]any)
	tests := []struct {
		field string
		got   any
		want  any
	}{
		{"standardFlowEnabled", rep["standardFlowEnabled"], true},
		{"frontchannelLogout", rep["frontchannelLogout"], false},
		{"serviceAccountsEnabled (kept)", rep["serviceAccountsEnabled"], true},
		{"authorizationServicesEnabled (kept)", rep["authorizationServicesEnabled"], true},
		{"redirectUris (a set)", sorted(stringList(rep["redirectUris"])), sorted(redirects)},
		{"webOrigins", stringList(rep["webOrigins"]), []string{"+"}},
		{"pkce.code.challenge.method", attrs["pkce.code.challenge.method"], "S256"},
		{"backchannel.logout.url", attrs["backchannel.logout.url"], backchannel},
		{"backchannel.logout.session.required", attrs["backchannel.logout.session.required"], "true"},
		{"post.logout.redirect.uris", attrs["post.logout.redirect.uris"], redirects[0] + "##" + redirects[1]},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			if !equalJSON(tc.got, tc.want) {
				t.Errorf("%s = %v, want %v", tc.field, tc.got, tc.want)
			}
		})
	}
	// The client still works for what the other tests do with it.
	if _, err := k.Token(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway, kcfixture.GatewaySecret); err != nil {
		t.Errorf("client-credentials token of the configured client: %v", err)
	}

	if err := restore(ctx); err != nil {
		t.Fatalf("restore: %v", err)
	}
	rep, err = k.Client(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	attrs, _ = rep["attributes"].(map[string]any)
	restored := []struct {
		field string
		got   any
		want  any
	}{
		{"standardFlowEnabled", rep["standardFlowEnabled"], false},
		{"redirectUris", len(stringList(rep["redirectUris"])), 0},
		{"pkce.code.challenge.method", attrs["pkce.code.challenge.method"] == nil || attrs["pkce.code.challenge.method"] == "", true},
		{"backchannel.logout.url", attrs["backchannel.logout.url"] == nil || attrs["backchannel.logout.url"] == "", true},
	}
	for _, tc := range restored {
		t.Run("restored "+tc.field, func(t *testing.T) {
			if !equalJSON(tc.got, tc.want) {
				t.Errorf("%s after restore = %v, want %v", tc.field, tc.got, tc.want)
			}
		})
	}
}

func TestSetAccessTokenLifespan(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	ctx := t.Context()
	before, err := k.RealmSettings(ctx, kcfixture.RealmCorp)
	if err != nil {
		t.Fatalf("RealmSettings: %v", err)
	}
	if before.AccessTokenLifespan <= 0 {
		t.Fatalf("accessTokenLifespan before = %d, want a positive default", before.AccessTokenLifespan)
	}
	t.Cleanup(func() {
		if err := k.SetAccessTokenLifespan(context.Background(), kcfixture.RealmCorp, before.AccessTokenLifespan); err != nil {
			t.Errorf("restoring the access-token lifespan: %v", err)
		}
	})
	const short = 7
	if err := k.SetAccessTokenLifespan(ctx, kcfixture.RealmCorp, short); err != nil {
		t.Fatalf("SetAccessTokenLifespan: %v", err)
	}
	after, err := k.RealmSettings(ctx, kcfixture.RealmCorp)
	if err != nil {
		t.Fatalf("RealmSettings: %v", err)
	}
	if after.AccessTokenLifespan != short {
		t.Errorf("accessTokenLifespan = %d, want %d", after.AccessTokenLifespan, short)
	}
	if after.SSOSessionIdleTimeout != before.SSOSessionIdleTimeout || after.SSOSessionMaxLifespan != before.SSOSessionMaxLifespan {
		t.Errorf("session lifespans changed: got %+v, want those of %+v", after, before)
	}
	tr, err := k.TokenRequest(ctx, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret,
		url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	// Keycloak counts from the token's issue time, in whole seconds: one less may show.
	if tr.ExpiresIn != short && tr.ExpiresIn != short-1 {
		t.Errorf("expires_in = %d, want %d (or %d)", tr.ExpiresIn, short, short-1)
	}
}

func TestDeleteUserSessions(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	ctx := t.Context()
	tr, err := k.TokenRequest(ctx, kcfixture.RealmCorp, kcfixture.ClientPortal, "", url.Values{
		"grant_type": {"password"}, "username": {kcfixture.UserBob}, "password": {kcfixture.BobPassword}, "scope": {"openid"},
	})
	if err != nil {
		t.Fatalf("password grant: %v", err)
	}
	if tr.RefreshToken == "" {
		t.Fatal("the password grant returned no refresh token")
	}
	sessions, err := k.UserSessions(ctx, kcfixture.RealmCorp, kcfixture.UserBob)
	if err != nil {
		t.Fatalf("UserSessions: %v", err)
	}
	if len(sessions) == 0 {
		t.Fatal("UserSessions: got none after a password grant, want at least one")
	}
	if err := k.DeleteUserSessions(ctx, kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
		t.Fatalf("DeleteUserSessions: %v", err)
	}
	sessions, err = k.UserSessions(ctx, kcfixture.RealmCorp, kcfixture.UserBob)
	if err != nil {
		t.Fatalf("UserSessions: %v", err)
	}
	if len(sessions) != 0 {
		t.Errorf("UserSessions after DeleteUserSessions: got %d, want 0", len(sessions))
	}
	_, err = k.TokenRequest(ctx, kcfixture.RealmCorp, kcfixture.ClientPortal, "", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken},
	})
	var se *kcfixture.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("refresh after DeleteUserSessions: err = %v, want a 400 StatusError", err)
	}
	// Nothing to delete is not an error.
	if err := k.DeleteUserSessions(ctx, kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
		t.Errorf("DeleteUserSessions without sessions: %v", err)
	}
}

// stringList turns a JSON array of strings into a []string (nil for anything else).
func stringList(v any) []string {
	arr, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func equalJSON(got, want any) bool {
	if w, ok := want.([]string); ok {
		g, _ := got.([]string)
		return slices.Equal(g, w)
	}
	return got == want
}
