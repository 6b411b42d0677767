package integration

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// TestSignInBrowser: a person signs in through Keycloak's login form in a real headless
// Chromium, against the built binary. The gateway is opened on localhost and Keycloak on
// 127.0.0.1, two sites for the browser, as in production.
func TestSignInBrowser(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	engineers := consumerOf("Engineers", map[string]any{"idp": "corp", "groups": []string{kcfixture.GroupEngineering}})
	people := consumerOf("People", map[string]any{"idp": "corp", "realm_roles": []string{kcfixture.RoleAPIUser}})
	people["plugins"] = map[string]any{"limit-count": map[string]any{"count": 3, "time_window": 3600, "key": "subject"}}
	app := route("app", up.URL, nil)
	app["paths"], app["login"] = []string{"/app", "/app/{rest:.*}"}, "corp"
	eng := route("eng", up.URL, nil)
	eng["paths"], eng["login"] = []string{"/eng", "/eng/{rest:.*}"}, "corp"
	eng["consumers"] = map[string]any{"allow": []string{"Engineers"}}
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":      []any{corpIdP(k, map[string]any{"session": map[string]any{"secrets": []string{"${env:SESSION_SECRET}"}, "cookie_secure": false}})},
		"consumers": []any{engineers, people},
		"routes":    []any{app, eng},
	}), corpSecretEnv, sessionSecretEnv)
	origin := strings.Replace(gw.URL, "127.0.0.1", "localhost", 1)
	enableSignIn(t, k, gw, true, origin)
	page := origin + "/app/page?tab=1"

	bob := newBrowser(t)
	t.Run("a protected page leads through Keycloak's login form and back", func(t *testing.T) {
		if _, _, err := bob.open(page); err != nil {
			t.Fatal(err)
		}
		if !bob.onLoginPage() {
			u, text, _ := bob.page()
			t.Fatalf("got %s (%.300s), want Keycloak's login form", u, text)
		}
		final, text, err := bob.signIn(kcfixture.UserBob, kcfixture.BobPassword)
		if err != nil {
			t.Fatal(err)
		}
		if final != page || !strings.Contains(text, `"consumer":"People"`) {
			t.Fatalf("after signing in: at %s with %.300s, want %s served to People", final, text, page)
		}
		if got := up.last().Header.Get("X-Consumer-Subject"); got != kcfixture.BobSubject {
			t.Errorf("upstream X-Consumer-Subject: got %q, want %s", got, kcfixture.BobSubject)
		}
		c, err := bob.cookie(origin, "portcullis_corp")
		if err != nil || c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
			t.Errorf("session cookie: got %+v (%v), want HttpOnly and SameSite=Lax", c, err)
		}
	})
	t.Run("a reload keeps the session, and so does an API call", func(t *testing.T) {
		final, _, err := bob.open(page)
		if err != nil || final != page || bob.onLoginPage() {
			t.Fatalf("reload: at %s (%v), want %s without signing in", final, err, page)
		}
		status, body, err := bob.fetch(origin+"/app/api/items", map[string]string{"Accept": "application/json"})
		if err != nil || status != 200 {
			t.Fatalf("fetch with the session: got %d %s (%v), want 200", status, body, err)
		}
		// The page, the reload and the call are bob's three requests of the hour.
		status, _, err = bob.fetch(origin+"/app/api/items", map[string]string{"Accept": "application/json"})
		if err != nil || status != 429 {
			t.Errorf("bob's fourth request: got %d (%v), want 429 (his own counter)", status, err)
		}
	})
	t.Run("a person outside the allowed consumers gets 403", func(t *testing.T) {
		status, body, err := bob.fetch(origin+"/eng/", map[string]string{"Accept": "application/json"})
		if err != nil || status != 403 {
			t.Errorf("bob on the engineers' route: got %d %s (%v), want 403", status, body, err)
		}
	})
	t.Run("another person has a separate session", func(t *testing.T) {
		alice := newBrowser(t)
		if _, _, err := alice.open(origin + "/eng/"); err != nil {
			t.Fatal(err)
		}
		final, text, err := alice.signIn(kcfixture.UserAlice, kcfixture.AlicePassword)
		if err != nil || final != origin+"/eng/" || !strings.Contains(text, `"consumer":"Engineers"`) {
			t.Fatalf("alice: at %s with %.200s (%v), want the engineers' route as Engineers", final, text, err)
		}
	})
	t.Run("logout ends the session here and at Keycloak", func(t *testing.T) {
		if _, _, err := bob.open(origin + "/.portcullis/corp/logout"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := bob.open(page); err != nil {
			t.Fatal(err)
		}
		if !bob.onLoginPage() {
			u, _, _ := bob.page()
			t.Errorf("after logout: at %s, want Keycloak's login form", u)
		}
	})
	t.Run("an admin signing the person out in Keycloak ends the session (back-channel)", func(t *testing.T) {
		carol := newBrowser(t) // bob again, in a fresh browser
		if _, _, err := carol.open(page); err != nil {
			t.Fatal(err)
		}
		if final, _, err := carol.signIn(kcfixture.UserBob, kcfixture.BobPassword); err != nil || final != page {
			t.Fatalf("signing in again: at %s (%v)", final, err)
		}
		if err := k.LogoutUser(t.Context(), kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
			t.Fatal(err)
		}
		status, _, err := carol.fetch(origin+"/app/api/items", map[string]string{"Accept": "application/json"})
		if err != nil || status != 401 {
			t.Errorf("after the admin's logout: got %d (%v), want 401", status, err)
		}
	})
}
