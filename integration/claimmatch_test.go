package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// TestKeycloakClaimMatchedConsumers: people are consumers by their tokens' claims, without one
// entry each. An exact subject binding wins; among claim-matched consumers the first in policy
// order whose conditions hold; key "subject" gives each person their own counter.
func TestKeycloakClaimMatchedConsumers(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	people := consumerOf("People", map[string]any{"idp": "corp", "realm_roles": []string{kcfixture.RoleAPIUser}})
	people["plugins"] = map[string]any{"limit-count": map[string]any{"count": 2, "time_window": 3600, "key": "subject"}}
	pet := route("petstore", up.URL, nil)
	pet["paths"] = []string{"/petstore/{rest:.*}"}
	pet["consumers"] = map[string]any{"allow": []string{"FetchBot", "People"}}
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps": []any{corpIdP(k, nil)},
		"consumers": []any{
			consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.FetchBotSubject}),
			people,
			consumerOf("Everyone", map[string]any{"idp": "corp"}),
		},
		"routes": []any{pet},
	}), corpSecretEnv)
	url := gw.URL + "/petstore/pets"
	outsideWindowEdge(3600, 10*time.Second)

	for _, person := range []struct{ user, password, subject string }{
		{kcfixture.UserAlice, kcfixture.AlicePassword, kcfixture.AliceSubject},
		{kcfixture.UserBob, kcfixture.BobPassword, kcfixture.BobSubject},
	} {
		t.Run(person.user+" is People, counted on their own", func(t *testing.T) {
			tok := kcUserToken(t, k, person.user, person.password)
			for i, want := range []int{200, 200, 429} {
				r := do(t, "GET", url, bearerHeader(tok))
				if r.Status != want {
					t.Fatalf("request %d: got %d %s, want %d", i+1, r.Status, r.Body, want)
				}
				if want != 200 {
					continue
				}
				h := up.last().Header
				if h.Get("X-Consumer-Username") != "People" || h.Get("X-Consumer-Subject") != person.subject || h.Get("X-Credential-Identifier") != "corp:People" {
					t.Errorf("request %d: upstream got consumer %q, subject %q, credential %q; want People, %s, corp:People", i+1,
						h.Get("X-Consumer-Username"), h.Get("X-Consumer-Subject"), h.Get("X-Credential-Identifier"), person.subject)
				}
			}
		})
	}
	t.Run("an exact subject binding wins over the claims", func(t *testing.T) {
		tok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
		r := do(t, "GET", url, bearerHeader(tok))
		if r.Status != 200 || up.last().Header.Get("X-Consumer-Username") != "FetchBot" {
			t.Fatalf("got %d %s (upstream consumer %q), want 200 for FetchBot", r.Status, r.Body, up.last().Header.Get("X-Consumer-Username"))
		}
	})
	t.Run("a token without the role is a later consumer, not allowed here", func(t *testing.T) {
		tok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientGateway, kcfixture.GatewaySecret)
		r := do(t, "GET", url, bearerHeader(tok))
		if r.Status != 403 || r.message() != "The consumer_name is forbidden." {
			t.Fatalf("got %d %s, want 403: the gateway's own account is Everyone, which the route does not allow", r.Status, r.Body)
		}
	})
	t.Run("explain says which consumer matched and why", func(t *testing.T) {
		tok := kcUserToken(t, k, kcfixture.UserBob, kcfixture.BobPassword)
		t.Setenv("CORP_SECRET", kcfixture.GatewaySecret)
		out, _, _ := runCLI(t, "", "explain", "-c", gw.PolicyPath, "-H", "Authorization: Bearer "+tok, "GET", "/petstore/pets")
		if want := `claim-matched: consumer "People" is the first in policy order whose conditions it meets`; !strings.Contains(out, want) {
			t.Errorf("explain: got\n%s\nwant a line with %q", out, want)
		}
	})
}
