package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// The tests of this file run the real binary against a real Keycloak with the realms of
// testdata/realms: realm corp (the gateway's confidential client, service accounts, users with
// roles, groups and Authorization Services permissions) and realm partners (a second IdP).
// Keycloak is started once for the package, on first use (a start takes tens of seconds, and
// most of the package does not need it); every top-level test gets fresh tokens.

var (
	kcOnce     sync.Once
	kcShared   *kcfixture.Keycloak
	kcStartErr error
)

// keycloakStartTimeout bounds the first start, which may include installing the distribution.
const keycloakStartTimeout = 8 * time.Minute

// keycloakFor returns the package's Keycloak, starting it on the first call and stopping it
// after the last test (sharedFixtureStops). Without a way to run Keycloak the test is skipped,
// or fails when CI=true (kcfixture.Require).
func keycloakFor(t *testing.T) *kcfixture.Keycloak {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: needs Keycloak, and -short asks for no Keycloak")
	}
	kcOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), keycloakStartTimeout)
		defer cancel()
		start := time.Now()
		kcShared, kcStartErr = kcfixture.Start(ctx)
		if kcStartErr != nil {
			fmt.Fprintf(os.Stderr, "kcfixture: %v\n", kcStartErr)
			return
		}
		fmt.Fprintf(os.Stderr, "kcfixture: Keycloak %s at %s (%s), ready in %s\n",
			kcfixture.Version, kcShared.URL, kcShared.Mode, time.Since(start).Round(time.Second))
		k := kcShared
		sharedFixtureStops = append(sharedFixtureStops, func() {
			if err := k.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "kcfixture: stopping Keycloak: %v\n", err)
			}
		})
	})
	return kcfixture.Require(t, kcShared, kcStartErr)
}

// corpSecretEnv passes the gateway client's secret as the ${env:CORP_SECRET} of the policies, so
// that the "no secret in the logs" checks also cover secret expansion.
const corpSecretEnv = "CORP_SECRET=" + kcfixture.GatewaySecret

// corpIdP is a keycloak provider of realm corp named "corp", with extra fields.
func corpIdP(k *kcfixture.Keycloak, extra map[string]any) map[string]any {
	p := map[string]any{
		"name": "corp", "type": "keycloak", "url": k.URL, "realm": kcfixture.RealmCorp,
		"client_id": kcfixture.ClientGateway, "client_secret": "${env:CORP_SECRET}",
	}
	for key, v := range extra {
		p[key] = v
	}
	return p
}

// partnersIdP is realm partners as a generic oidc provider named "partners", reading its token
// from X-Partner-Token, so that a corp and a partners token can travel in one request.
func partnersIdP(k *kcfixture.Keycloak, extra map[string]any) map[string]any {
	p := map[string]any{
		"name": "partners", "type": "oidc", "issuer": k.Issuer(kcfixture.RealmPartners),
		"audience": kcfixture.ClientPartnersGateway, "subject_claim": "azp", "header": "X-Partner-Token",
	}
	for key, v := range extra {
		p[key] = v
	}
	return p
}

func consumerOf(name string, bindings ...map[string]any) map[string]any {
	bs := make([]any, len(bindings))
	for i, b := range bindings {
		bs[i] = b
	}
	return map[string]any{"username": name, "idps": bs}
}

func kcClientToken(t *testing.T, k *kcfixture.Keycloak, realm, client, secret string) string {
	t.Helper()
	tok, err := k.Token(t.Context(), realm, client, secret)
	if err != nil {
		t.Fatalf("getting a client-credentials token of %s: %v", client, err)
	}
	return tok
}

func kcUserToken(t *testing.T, k *kcfixture.Keycloak, user, password string) string {
	t.Helper()
	tok, err := k.PasswordToken(t.Context(), kcfixture.RealmCorp, kcfixture.ClientPortal, "", user, password)
	if err != nil {
		t.Fatalf("getting a password-grant token of %s: %v", user, err)
	}
	return tok
}

func bearerHeader(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// jwtPart decodes part i (0 header, 1 payload) of a compact JWS.
func jwtPart(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decoding token part %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decoding token part %d: %v", i, err)
	}
	return m
}

// userinfo decodes the X-Userinfo header the upstream received.
func upstreamUserinfo(t *testing.T, r *http.Request) map[string]any {
	t.Helper()
	vs := r.Header.Values("X-Userinfo")
	if len(vs) != 1 {
		t.Fatalf("upstream X-Userinfo: got %d values, want 1", len(vs))
	}
	raw, err := base64.StdEncoding.DecodeString(vs[0])
	if err != nil {
		t.Fatalf("upstream X-Userinfo is not base64: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("upstream X-Userinfo is not JSON: %v", err)
	}
	return claims
}

// readyz returns /readyz's status and problems.
func readyz(t *testing.T, gw *gatewayProc) (int, map[string]string) {
	t.Helper()
	r := do(t, "GET", gw.AdminURL+"/readyz", nil)
	var body struct {
		Problems map[string]string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("decoding /readyz %q: %v", r.Body, err)
	}
	return r.Status, body.Problems
}

// waitReadyz polls /readyz until it answers status, failing the test after bound.
func waitReadyz(t *testing.T, gw *gatewayProc, status int, bound time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got, problems := readyz(t, gw)
		if got == status {
			return problems
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: still %d %v after %s, want %d", got, problems, bound, status)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a readiness check
	}
}

// assertNoSecretsLogged fails when a log line of gw contains one of secrets.
func assertNoSecretsLogged(t *testing.T, gw *gatewayProc, secrets map[string]string) {
	t.Helper()
	logs := gw.stdout.String() + gw.stderr.String()
	if logs == "" {
		t.Fatalf("the gateway logged nothing: the check would prove nothing")
	}
	for what, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("a log line contains %s", what)
		}
		// A token's signature alone identifies it.
		if parts := strings.Split(s, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
			t.Errorf("a log line contains the signature of %s", what)
		}
	}
}

// expectDenied checks a refusal: status, message when given, and for a 401 the challenge.
func expectDenied(t *testing.T, r response, status int, message, challenge string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("got %d %s, want %d", r.Status, r.Body, status)
	}
	if message != "" && r.message() != message {
		t.Errorf("message: got %q, want %q", r.message(), message)
	}
	if status == http.StatusUnauthorized {
		got := r.Header.Get("WWW-Authenticate")
		if got == "" {
			t.Errorf("a 401 without WWW-Authenticate")
		}
		if challenge != "" && !strings.Contains(got, challenge) {
			t.Errorf("WWW-Authenticate: got %q, want it to contain %q", got, challenge)
		}
	}
}

// outsideWindowEdge waits, when a limit-count window of secs seconds ends within margin, until
// the next one has begun: windows are aligned to wall time, and a sequence of requests that
// straddles an edge would count in two windows.
func outsideWindowEdge(secs int, margin time.Duration) {
	w := time.Duration(secs) * time.Second
	if left := w - time.Duration(time.Now().UnixNano()%int64(w)); left < margin {
		time.Sleep(left + 50*time.Millisecond)
	}
}

// TestKeycloakPetstoreServiceAccount is the petstore scenario with a Keycloak service account in
// place of the API key: the account is a consumer, so its limit-count applies to it, whatever
// token it presents.
func TestKeycloakPetstoreServiceAccount(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	const window = 3600
	pet := route("petstore", up.URL, nil)
	pet["paths"] = []string{"/petstore", "/petstore/{rest:.*}"}
	fetchBot := consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.FetchBotSubject})
	fetchBot["plugins"] = map[string]any{"limit-count": map[string]any{"count": 2, "time_window": window}}
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":      []any{corpIdP(k, map[string]any{"hide_credentials": true})},
		"consumers": []any{fetchBot},
		"routes":    []any{pet},
	}), corpSecretEnv)
	url := gw.URL + "/petstore/pets"

	tok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	spoofed := base64.StdEncoding.EncodeToString([]byte(`{"sub":"root","azp":"admin-cli"}`))
	outsideWindowEdge(window, 10*time.Second)

	t.Run("first request is forwarded with the identity", func(t *testing.T) {
		r := do(t, "GET", url, bearerHeader(tok))
		if r.Status != 200 {
			t.Fatalf("got %d %s, want 200", r.Status, r.Body)
		}
		if got := r.Header.Get("X-RateLimit-Remaining"); got != "1" {
			t.Errorf("X-RateLimit-Remaining: got %q, want 1", got)
		}
		got := up.last()
		if u := got.Header.Get("X-Consumer-Username"); u != "FetchBot" {
			t.Errorf("upstream X-Consumer-Username: got %q, want FetchBot", u)
		}
		if id, want := got.Header.Get("X-Credential-Identifier"), "corp:"+kcfixture.FetchBotSubject; id != want {
			t.Errorf("upstream X-Credential-Identifier: got %q, want %q", id, want)
		}
		claims := upstreamUserinfo(t, got)
		if claims["azp"] != kcfixture.ClientFetchBot || claims["sub"] != kcfixture.FetchBotSubject {
			t.Errorf("upstream X-Userinfo: azp %v, sub %v; want %s, %s", claims["azp"], claims["sub"], kcfixture.ClientFetchBot, kcfixture.FetchBotSubject)
		}
		if claims["iss"] != k.Issuer(kcfixture.RealmCorp) {
			t.Errorf("upstream X-Userinfo iss: got %v, want %s", claims["iss"], k.Issuer(kcfixture.RealmCorp))
		}
		if a := got.Header.Get("Authorization"); a != "" {
			t.Errorf("hide_credentials: upstream got Authorization %q, want none", a)
		}
	})
	t.Run("spoofed identity headers are replaced", func(t *testing.T) {
		h := bearerHeader(tok)
		h["X-Userinfo"], h["X-Consumer-Username"] = spoofed, "root"
		r := do(t, "GET", url, h)
		if r.Status != 200 {
			t.Fatalf("got %d %s, want 200", r.Status, r.Body)
		}
		got := up.last()
		if claims := upstreamUserinfo(t, got); claims["sub"] != kcfixture.FetchBotSubject || claims["azp"] != kcfixture.ClientFetchBot {
			t.Errorf("upstream X-Userinfo: sub %v azp %v, want the token's %s %s", claims["sub"], claims["azp"], kcfixture.FetchBotSubject, kcfixture.ClientFetchBot)
		}
		if u := got.Header.Values("X-Consumer-Username"); len(u) != 1 || u[0] != "FetchBot" {
			t.Errorf("upstream X-Consumer-Username: got %q, want [FetchBot]", u)
		}
		if a := got.Header.Get("Authorization"); a != "" {
			t.Errorf("hide_credentials: upstream got Authorization %q, want none", a)
		}
	})
	t.Run("third request is limited", func(t *testing.T) {
		forwarded := up.count()
		r := do(t, "GET", url, bearerHeader(tok))
		if r.Status != 429 {
			t.Fatalf("got %d %s, want 429", r.Status, r.Body)
		}
		if got := r.Header.Get("X-RateLimit-Limit"); got != "2" {
			t.Errorf("X-RateLimit-Limit: got %q, want 2", got)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("a 429 without Retry-After")
		}
		if up.count() != forwarded {
			t.Errorf("a limited request reached the upstream")
		}
	})
	t.Run("a new token of the same account shares the limit", func(t *testing.T) {
		fresh := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
		if fresh == tok {
			t.Fatalf("Keycloak returned the same token twice")
		}
		if r := do(t, "GET", url, bearerHeader(fresh)); r.Status != 429 {
			t.Fatalf("got %d %s, want 429: the limit is the consumer's, not the token's", r.Status, r.Body)
		}
	})
}

// expiringClient is a service-account client of realm corp, audience gateway, created for one
// test, whose tokens can be made to expire a second after they are issued: the gateway's clock
// cannot be injected, so an expired token is a real one whose exp has passed.
type expiringClient struct {
	k        *kcfixture.Keycloak
	id       string // Keycloak's internal id
	clientID string
	secret   string
	subject  string // the service account's user id: the tokens' sub
}

func newExpiringClient(t *testing.T, k *kcfixture.Keycloak) *expiringClient {
	t.Helper()
	c := &expiringClient{k: k, clientID: "expiring-" + strconv.FormatInt(time.Now().UnixNano(), 36), secret: "expiring-secret"}
	loc, err := k.Admin(t.Context(), http.MethodPost, "/"+kcfixture.RealmCorp+"/clients", map[string]any{
		"clientId": c.clientID, "enabled": true, "publicClient": false, "secret": c.secret,
		"serviceAccountsEnabled": true, "standardFlowEnabled": false,
		"protocolMappers": []any{map[string]any{
			"name": "audience-gateway", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
			"config": map[string]string{"included.client.audience": kcfixture.ClientGateway, "access.token.claim": "true"},
		}},
	}, nil)
	if err != nil {
		t.Fatalf("creating a client: %v", err)
	}
	c.id = loc[strings.LastIndex(loc, "/")+1:]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := k.Admin(ctx, http.MethodDelete, "/"+kcfixture.RealmCorp+"/clients/"+c.id, nil, nil); err != nil {
			t.Errorf("deleting client %s: %v", c.clientID, err)
		}
	})
	if c.subject, err = k.UserID(t.Context(), kcfixture.RealmCorp, "service-account-"+c.clientID); err != nil {
		t.Fatalf("finding the service account of %s: %v", c.clientID, err)
	}
	return c
}

func (c *expiringClient) token(t *testing.T) string {
	t.Helper()
	return kcClientToken(t, c.k, kcfixture.RealmCorp, c.clientID, c.secret)
}

// expiredToken shortens the client's access-token lifespan to one second, gets a token and
// waits until its exp has passed.
func (c *expiringClient) expiredToken(t *testing.T) string {
	t.Helper()
	_, err := c.k.Admin(t.Context(), http.MethodPut, "/"+kcfixture.RealmCorp+"/clients/"+c.id, map[string]any{
		"clientId": c.clientID, "attributes": map[string]string{"access.token.lifespan": "1"},
	}, nil)
	if err != nil {
		t.Fatalf("shortening the token lifespan of %s: %v", c.clientID, err)
	}
	tok := c.token(t)
	claims := jwtPart(t, tok, 1)
	exp, ok := claims["exp"].(float64)
	if !ok {
		t.Fatalf("token of %s has no exp", c.clientID)
	}
	if iat, _ := claims["iat"].(float64); exp-iat > 1 {
		t.Fatalf("token of %s lives %vs, want 1s", c.clientID, exp-iat)
	}
	if !claimContainsString(claims["aud"], kcfixture.ClientGateway) {
		t.Fatalf("token of %s: aud %v lacks %s; it would be refused for its audience, not its age", c.clientID, claims["aud"], kcfixture.ClientGateway)
	}
	time.Sleep(time.Until(time.Unix(int64(exp), 0).Add(100 * time.Millisecond)))
	return tok
}

func claimContainsString(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if e == want {
				return true
			}
		}
	}
	return false
}

// TestKeycloakTokens sends Keycloak's tokens, good and bad, through the binary.
func TestKeycloakTokens(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	expiring := newExpiringClient(t, k)
	// Every refused token below but the unbound client's names a consumer: it is refused for
	// what is wrong with it, not for naming nobody.
	gw := startGatewayArgs(t, policyJSON(t, map[string]any{
		"idps": []any{corpIdP(k, nil)},
		"consumers": []any{
			consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.FetchBotSubject}),
			consumerOf("Alice", map[string]any{"idp": "corp", "subject": kcfixture.AliceSubject,
				"realm_roles": []string{kcfixture.RoleAdmin}, "groups": []string{kcfixture.GroupEngineering}}),
			consumerOf("Expiring", map[string]any{"idp": "corp", "subject": expiring.subject}),
			consumerOf("OtherAudience", map[string]any{"idp": "corp", "subject": kcfixture.OtherAudienceSubject}),
		},
		"routes": []any{route("api", up.URL, nil)},
	}), []string{"-log-level", "debug"}, corpSecretEnv)
	url := gw.URL + "/api"

	fetchBot := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	alice := kcUserToken(t, k, kcfixture.UserAlice, kcfixture.AlicePassword)
	noConsumer := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientNoConsumer, kcfixture.NoConsumerSecret)
	otherAudience := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientOtherAudience, kcfixture.OtherAudienceSecret)
	otherRealm := kcClientToken(t, k, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	fresh := expiring.token(t)
	expired := expiring.expiredToken(t)

	parts := strings.Split(fetchBot, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(payload), kcfixture.FetchBotSubject, kcfixture.AliceSubject, 1)
	tamperedClaims := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
	sig := []byte(parts[2])
	if i := len(sig) / 2; sig[i] == 'A' {
		sig[i] = 'B'
	} else {
		sig[i] = 'A'
	}
	tamperedSignature := parts[0] + "." + parts[1] + "." + string(sig)

	const invalidToken = `error="invalid_token"`
	tests := []struct {
		name      string
		header    map[string]string
		status    int
		message   string
		challenge string
		consumer  string
		check     func(t *testing.T, got *http.Request)
	}{
		{name: "client credentials of a bound service account", header: bearerHeader(fetchBot), status: 200, consumer: "FetchBot",
			check: func(t *testing.T, got *http.Request) {
				if a := got.Header.Get("Authorization"); a != "Bearer "+fetchBot {
					t.Errorf("without hide_credentials the upstream should get the token; got Authorization of %d bytes", len(a))
				}
			}},
		{name: "password grant of a bound user", header: bearerHeader(alice), status: 200, consumer: "Alice",
			check: func(t *testing.T, got *http.Request) {
				claims := upstreamUserinfo(t, got)
				if claims["preferred_username"] != kcfixture.UserAlice || claims["sub"] != kcfixture.AliceSubject {
					t.Errorf("upstream X-Userinfo: preferred_username %v sub %v, want %s %s",
						claims["preferred_username"], claims["sub"], kcfixture.UserAlice, kcfixture.AliceSubject)
				}
			}},
		{name: "no token", status: 401, message: "Missing bearer token in request", challenge: `Bearer realm="corp"`},
		{name: "client bound to no consumer", header: bearerHeader(noConsumer), status: 401, message: "Invalid token", challenge: invalidToken},
		{name: "a fresh token of the expiring client", header: bearerHeader(fresh), status: 200, consumer: "Expiring"},
		{name: "expired", header: bearerHeader(expired), status: 401, message: "Invalid token", challenge: invalidToken},
		{name: "tampered claims", header: bearerHeader(tamperedClaims), status: 401, message: "Invalid token", challenge: invalidToken},
		{name: "tampered signature", header: bearerHeader(tamperedSignature), status: 401, message: "Invalid token", challenge: invalidToken},
		{name: "wrong audience", header: bearerHeader(otherAudience), status: 401, message: "Invalid token", challenge: invalidToken},
		// No provider of this policy has the partners issuer: the token is nobody's credential,
		// and its caller learns that it is invalid here, not that it is missing.
		{name: "token of another realm", header: bearerHeader(otherRealm), status: 401, message: "Invalid token", challenge: invalidToken},
		{name: "not a token", header: bearerHeader("not-a-token"), status: 401, message: "Invalid token", challenge: invalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.count()
			r := do(t, "GET", url, tt.header)
			if tt.status != 200 {
				expectDenied(t, r, tt.status, tt.message, tt.challenge)
				if up.count() != before {
					t.Errorf("a refused request reached the upstream")
				}
				return
			}
			if r.Status != 200 {
				t.Fatalf("got %d %s, want 200", r.Status, r.Body)
			}
			got := up.last()
			if u := got.Header.Get("X-Consumer-Username"); u != tt.consumer {
				t.Errorf("upstream X-Consumer-Username: got %q, want %q", u, tt.consumer)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}

	t.Run("no token or secret in the logs", func(t *testing.T) {
		assertNoSecretsLogged(t, gw, map[string]string{
			"the gateway client secret": kcfixture.GatewaySecret,
			"fetch-bot's token":         fetchBot,
			"alice's token":             alice,
			"an unbound client's token": noConsumer,
			"an expired token":          expired,
			"a tampered token":          tamperedClaims,
			"another audience's token":  otherAudience,
		})
	})
}

// TestKeycloakBindingConditions checks the Keycloak-only conditions of a binding through the
// binary: roles and groups from the verified token, permissions decided by Keycloak's
// Authorization Services.
func TestKeycloakBindingConditions(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	fetchBot := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	alice := kcUserToken(t, k, kcfixture.UserAlice, kcfixture.AlicePassword)
	const forbidden = "Token does not grant access to this resource"

	tests := []struct {
		name    string
		subject string // default FetchBotSubject
		binding map[string]any
		token   string // default fetchBot
		status  int
	}{
		{name: "roles and group held", binding: map[string]any{
			"realm_roles":  []string{kcfixture.RoleAPIUser},
			"client_roles": map[string][]string{kcfixture.ClientGateway: {kcfixture.ClientRolePetViewer}},
			"groups":       []string{kcfixture.GroupBots}}, status: 200},
		{name: "realm role missing", binding: map[string]any{"realm_roles": []string{kcfixture.RoleAdmin}}, status: 403},
		{name: "client role missing", binding: map[string]any{
			"client_roles": map[string][]string{kcfixture.ClientGateway: {kcfixture.ClientRolePetAdmin}}}, status: 403},
		{name: "group missing", binding: map[string]any{"groups": []string{kcfixture.GroupEngineering}}, status: 403},
		{name: "permission granted", binding: map[string]any{"permissions": []string{kcfixture.PermissionPetRead}}, status: 200},
		{name: "permission denied", binding: map[string]any{"permissions": []string{kcfixture.PermissionPetWrite}}, status: 403},
		{name: "user with every permission", subject: kcfixture.AliceSubject, token: alice, binding: map[string]any{
			"permissions": []string{kcfixture.PermissionPetRead, kcfixture.PermissionPetWrite},
			"realm_roles": []string{kcfixture.RoleAdmin}, "groups": []string{kcfixture.GroupEngineering}}, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject, tok := kcfixture.FetchBotSubject, fetchBot
			if tt.subject != "" {
				subject, tok = tt.subject, tt.token
			}
			b := map[string]any{"idp": "corp", "subject": subject}
			for key, v := range tt.binding {
				b[key] = v
			}
			gw := startGatewayArgs(t, policyJSON(t, map[string]any{
				"idps":      []any{corpIdP(k, nil)},
				"consumers": []any{consumerOf("Caller", b)},
				"routes":    []any{route("api", up.URL, nil)},
			}), []string{"-access-log=false"}, corpSecretEnv)
			before := up.count()
			r := do(t, "GET", gw.URL+"/api", bearerHeader(tok))
			if tt.status != 200 {
				expectDenied(t, r, tt.status, forbidden, "")
				if up.count() != before {
					t.Errorf("a forbidden request reached the upstream")
				}
				return
			}
			if r.Status != 200 {
				t.Fatalf("got %d %s, want 200", r.Status, r.Body)
			}
			if u := up.last().Header.Get("X-Consumer-Username"); u != "Caller" {
				t.Errorf("upstream X-Consumer-Username: got %q, want Caller", u)
			}
			if _, ok := tt.binding["permissions"]; !ok {
				return
			}
			// Decisions are cached per token and permission: a second request asks Keycloak nothing.
			calls := gw.metric("portcullis_idp_request_duration_seconds_count", `idp="corp"`, `op="uma"`, `outcome="ok"`)
			if r := do(t, "GET", gw.URL+"/api", bearerHeader(tok)); r.Status != 200 {
				t.Fatalf("second request: got %d %s, want 200", r.Status, r.Body)
			}
			if got := gw.metric("portcullis_idp_request_duration_seconds_count", `idp="corp"`, `op="uma"`); got != calls {
				t.Errorf("UMA calls after a repeated request: got %v, want %v (cached)", got, calls)
			}
			perms := len(tt.binding["permissions"].([]string))
			if got := gw.metric("portcullis_idp_cache_total", `idp="corp"`, `cache="uma"`, `result="hit"`); got != float64(perms) {
				t.Errorf("UMA cache hits: got %v, want %d", got, perms)
			}
		})
	}
}

// TestKeycloakTwoRealmsChain binds a consumer to two independent IdPs, realm corp (keycloak) and
// realm partners (generic oidc), whose tokens travel in two headers: it needs both.
func TestKeycloakTwoRealmsChain(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps": []any{corpIdP(k, map[string]any{"subject_claim": "azp"}), partnersIdP(k, nil)},
		"consumers": []any{
			consumerOf("Partner",
				map[string]any{"idp": "corp", "subject": kcfixture.ClientPartnerSvc, "realm_roles": []string{kcfixture.RoleAPIUser}},
				map[string]any{"idp": "partners", "subject": kcfixture.ClientPartnerApp}),
			consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.ClientFetchBot}),
		},
		"routes": []any{route("api", up.URL, nil)},
	}), corpSecretEnv)
	url := gw.URL + "/api"

	corpTok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	partnerTok := kcClientToken(t, k, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	botTok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)

	tests := []struct {
		name     string
		header   map[string]string
		status   int
		message  string
		consumer string
	}{
		{name: "both tokens", header: map[string]string{"Authorization": "Bearer " + corpTok, "X-Partner-Token": partnerTok},
			status: 200, consumer: "Partner"},
		{name: "both tokens, partner token with the Bearer scheme", header: map[string]string{"Authorization": "Bearer " + corpTok, "X-Partner-Token": "Bearer " + partnerTok},
			status: 200, consumer: "Partner"},
		{name: "partners token missing", header: bearerHeader(corpTok), status: 401, message: "Missing bearer token in request"},
		{name: "corp token missing", header: map[string]string{"X-Partner-Token": partnerTok}, status: 401, message: "Missing bearer token in request"},
		{name: "tokens of two different consumers", header: map[string]string{"Authorization": "Bearer " + botTok, "X-Partner-Token": partnerTok},
			status: 401, message: "credentials belong to different consumers"},
		{name: "a partners token in the corp header is nobody's", header: bearerHeader(partnerTok), status: 401, message: "Invalid token"},
		{name: "a consumer bound to one realm needs one token", header: bearerHeader(botTok), status: 200, consumer: "FetchBot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "GET", url, tt.header)
			if tt.status != 200 {
				expectDenied(t, r, tt.status, tt.message, "")
				return
			}
			if r.Status != 200 {
				t.Fatalf("got %d %s, want 200", r.Status, r.Body)
			}
			got := up.last()
			if u := got.Header.Get("X-Consumer-Username"); u != tt.consumer {
				t.Errorf("upstream X-Consumer-Username: got %q, want %q", u, tt.consumer)
			}
			// X-Userinfo holds the claims of the chain's first token: the corp one.
			if iss := upstreamUserinfo(t, got)["iss"]; iss != k.Issuer(kcfixture.RealmCorp) {
				t.Errorf("upstream X-Userinfo iss: got %v, want the corp issuer", iss)
			}
		})
	}
}

// TestKeycloakAndHMACChain binds a consumer to a Keycloak service account and an HMAC key: the
// request needs a valid token and a valid signature.
func TestKeycloakAndHMACChain(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	// hmac-auth owns Authorization ("Signature ..."), so the token travels in its own header.
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps": []any{
			corpIdP(k, map[string]any{"subject_claim": "azp", "header": "X-Corp-Token"}),
			map[string]any{"name": "hmac", "type": "hmac-auth", "clock_skew": 300},
		},
		"consumers": []any{
			consumerOf("Partner",
				map[string]any{"idp": "corp", "subject": kcfixture.ClientPartnerSvc},
				map[string]any{"idp": "hmac", "key_id": "partner", "secret": "partner-hmac-secret"}),
			consumerOf("carol", map[string]any{"idp": "hmac", "key_id": "carol", "secret": "carol-hmac-secret"}),
		},
		"routes": []any{route("api", up.URL, nil)},
	}), corpSecretEnv)
	url := gw.URL + "/api"

	corpTok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	noConsumer := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientNoConsumer, kcfixture.NoConsumerSecret)
	partnerSig := signHeaders(t, "--key-id", "partner", "--secret", "partner-hmac-secret", "GET", "/api")
	wrongSig := signHeaders(t, "--key-id", "partner", "--secret", "not-the-secret", "GET", "/api")
	carolSig := signHeaders(t, "--key-id", "carol", "--secret", "carol-hmac-secret", "GET", "/api")
	token := func(tok string) map[string]string { return map[string]string{"X-Corp-Token": tok} }

	tests := []struct {
		name    string
		header  map[string]string
		status  int
		message string
	}{
		{name: "token and signature", header: merge(token(corpTok), partnerSig), status: 200},
		{name: "signature missing", header: token(corpTok), status: 401},
		{name: "token missing", header: partnerSig, status: 401, message: "Missing bearer token in request"},
		{name: "wrong signature", header: merge(token(corpTok), wrongSig), status: 401},
		{name: "signature of another consumer", header: merge(token(corpTok), carolSig), status: 401, message: "credentials belong to different consumers"},
		{name: "token of no consumer", header: merge(token(noConsumer), partnerSig), status: 401, message: "Invalid token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "GET", url, tt.header)
			if tt.status != 200 {
				expectDenied(t, r, tt.status, tt.message, "")
				return
			}
			if r.Status != 200 {
				t.Fatalf("got %d %s, want 200", r.Status, r.Body)
			}
			got := up.last()
			if u := got.Header.Get("X-Consumer-Username"); u != "Partner" {
				t.Errorf("upstream X-Consumer-Username: got %q, want Partner", u)
			}
			if id, want := got.Header.Get("X-Credential-Identifier"), "corp:"+kcfixture.ClientPartnerSvc; id != want {
				t.Errorf("upstream X-Credential-Identifier: got %q, want %q (the chain's first binding)", id, want)
			}
		})
	}
}

// TestKeycloakKeyRotation adds a new active signing key to realm corp while the gateway runs: a
// token signed with it verifies without a restart (its unknown kid triggers one JWKS refetch),
// and tokens signed with the old key still verify.
func TestKeycloakKeyRotation(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	// The refetch interval is shortened so that the refetch may follow the first fetch at once;
	// its rate limiting is tested at the provider level with an injected clock.
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":      []any{corpIdP(k, map[string]any{"subject_claim": "azp", "jwks_refresh_min_interval": "1ms"})},
		"consumers": []any{consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.ClientFetchBot})},
		"routes":    []any{route("api", up.URL, nil)},
	}), corpSecretEnv)
	url := gw.URL + "/api"
	jwksFetches := func() float64 {
		return gw.metric("portcullis_idp_request_duration_seconds_count", `idp="corp"`, `op="jwks"`, `outcome="ok"`)
	}

	before := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	if r := do(t, "GET", url, bearerHeader(before)); r.Status != 200 {
		t.Fatalf("before the rotation: got %d %s, want 200", r.Status, r.Body)
	}
	if got := jwksFetches(); got != 1 {
		t.Fatalf("JWKS fetches before the rotation: got %v, want 1", got)
	}

	kid, err := k.RotateKeys(t.Context(), kcfixture.RealmCorp)
	if err != nil {
		t.Fatalf("RotateKeys: %v", err)
	}
	after := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	if got := jwtPart(t, after, 0)["kid"]; got != kid {
		t.Fatalf("the new token is signed with kid %v, want the new key %s", got, kid)
	}
	if old := jwtPart(t, before, 0)["kid"]; old == kid {
		t.Fatalf("the old token already has the new kid %s", kid)
	}

	if r := do(t, "GET", url, bearerHeader(after)); r.Status != 200 {
		t.Fatalf("a token signed with the new key: got %d %s, want 200", r.Status, r.Body)
	}
	if got := jwksFetches(); got != 2 {
		t.Errorf("JWKS fetches after the rotation: got %v, want 2 (one refetch for the new kid)", got)
	}
	if r := do(t, "GET", url, bearerHeader(before)); r.Status != 200 {
		t.Fatalf("a token signed with the old key after the rotation: got %d %s, want 200", r.Status, r.Body)
	}
}

// TestKeycloakRevokedSessionIntrospection logs a user out in Keycloak: a provider with
// introspection refuses the token at once, one without it cannot know until the token expires.
func TestKeycloakRevokedSessionIntrospection(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	policy := func(introspect bool) string {
		extra := map[string]any{}
		if introspect {
			// The answer cache is tested at the provider level with an injected clock; here
			// every request asks Keycloak.
			extra = map[string]any{"introspection": true, "introspection_ttl": "1ms"}
		}
		return policyJSON(t, map[string]any{
			"idps":      []any{corpIdP(k, extra)},
			"consumers": []any{consumerOf("Bob", map[string]any{"idp": "corp", "subject": kcfixture.BobSubject})},
			"routes":    []any{route("api", up.URL, nil)},
		})
	}
	intro := startGateway(t, policy(true), corpSecretEnv)
	local := startGateway(t, policy(false), corpSecretEnv)

	tok := kcUserToken(t, k, kcfixture.UserBob, kcfixture.BobPassword)
	for name, gw := range map[string]*gatewayProc{"introspection": intro, "local": local} {
		if r := do(t, "GET", gw.URL+"/api", bearerHeader(tok)); r.Status != 200 {
			t.Fatalf("%s, before the logout: got %d %s, want 200", name, r.Status, r.Body)
		}
	}
	if err := k.LogoutUser(t.Context(), kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
		t.Fatalf("LogoutUser: %v", err)
	}

	r := do(t, "GET", intro.URL+"/api", bearerHeader(tok))
	expectDenied(t, r, 401, "Invalid token", `error="invalid_token"`)
	if got := intro.metric("portcullis_idp_request_duration_seconds_count", `idp="corp"`, `op="introspection"`, `outcome="ok"`); got != 2 {
		t.Errorf("introspection calls: got %v, want 2", got)
	}
	// Local verification cannot know about sessions: the token stays valid until it expires.
	if r := do(t, "GET", local.URL+"/api", bearerHeader(tok)); r.Status != 200 {
		t.Fatalf("without introspection, after the logout: got %d %s, want 200", r.Status, r.Body)
	}
	// A new login is a new session.
	fresh := kcUserToken(t, k, kcfixture.UserBob, kcfixture.BobPassword)
	if r := do(t, "GET", intro.URL+"/api", bearerHeader(fresh)); r.Status != 200 {
		t.Fatalf("a token of a new session: got %d %s, want 200", r.Status, r.Body)
	}
}

// TestKeycloakUnreachableAtStart starts a gateway whose Keycloak does not answer: it starts,
// says it is not ready, answers 503 to requests that need Keycloak and serves the others.
func TestKeycloakUnreachableAtStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	up := newUpstream(t, nil)
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps": []any{
			map[string]any{"name": "corp", "type": "keycloak", "url": closed, "realm": "corp",
				"client_id": "gateway", "client_secret": "${env:CORP_SECRET}", "timeout": "2s"},
			map[string]any{"name": "keys", "type": "key-auth"},
		},
		"consumers": []any{
			consumerOf("Bot", map[string]any{"idp": "corp", "subject": "bot"}),
			consumerOf("JohnDoe", map[string]any{"idp": "keys", "key": "john-key"}),
		},
		"routes": []any{route("api", up.URL, nil)},
	}), corpSecretEnv)

	t.Run("readyz names the IdP", func(t *testing.T) {
		status, problems := readyz(t, gw)
		if status != 503 {
			t.Fatalf("/readyz: got %d, want 503", status)
		}
		if _, ok := problems["idp:corp"]; !ok {
			t.Errorf("/readyz problems: got %v, want idp:corp", problems)
		}
		if _, ok := problems["idp:keys"]; ok {
			t.Errorf("/readyz problems: got %v, key-auth has nothing to be unready about", problems)
		}
	})
	t.Run("a request that needs Keycloak is 503", func(t *testing.T) {
		// Well-formed, unverifiable without Keycloak's keys: the gateway cannot decide.
		tok := fakeJWT(t, map[string]any{"iss": closed + "/realms/corp", "sub": "bot", "exp": time.Now().Add(time.Hour).Unix()})
		r := do(t, "GET", gw.URL+"/api", bearerHeader(tok))
		if r.Status != 503 || r.message() != "identity provider unavailable" {
			t.Fatalf("got %d %s, want 503 identity provider unavailable", r.Status, r.Body)
		}
	})
	t.Run("other consumers are served", func(t *testing.T) {
		r := do(t, "GET", gw.URL+"/api", map[string]string{"apikey": "john-key"})
		if r.Status != 200 {
			t.Fatalf("got %d %s, want 200", r.Status, r.Body)
		}
	})
}

// fakeJWT is a compact JWS with an RS256 header and a garbage signature.
func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	h, err := json.Marshal(map[string]any{"alg": "RS256", "kid": "unknown", "typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + ".c2lnbmF0dXJl"
}

// TestKeycloakStoppedMidRun stops Keycloak under a running gateway: tokens whose keys are cached
// keep verifying, whatever needs Keycloak itself (introspection, a permission decision) answers
// 503, /readyz names the IdPs, and all recovers when Keycloak is back, without a restart.
// It is the last test of this file, and restarts Keycloak before it returns.
func TestKeycloakStoppedMidRun(t *testing.T) {
	k := keycloakFor(t)
	if k.Mode == kcfixture.ModeExternal {
		t.Skip("the fixture cannot stop an external Keycloak")
	}
	up := newUpstream(t, nil)
	// A short refetch interval lets /readyz notice the outage (and the recovery) at once.
	fast := map[string]any{"jwks_refresh_min_interval": "200ms", "timeout": "2s"}
	corp := corpIdP(k, map[string]any{"subject_claim": "azp"})
	partners := partnersIdP(k, map[string]any{"introspection": true,
		"client_id": kcfixture.ClientPartnersGateway, "client_secret": "${env:PARTNERS_SECRET}"})
	for key, v := range fast {
		corp[key], partners[key] = v, v
	}
	gw := startGatewayArgs(t, policyJSON(t, map[string]any{
		"idps": []any{corp, partners},
		"consumers": []any{
			consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.ClientFetchBot}),
			consumerOf("PartnerSvc", map[string]any{"idp": "corp", "subject": kcfixture.ClientPartnerSvc,
				"permissions": []string{kcfixture.PermissionPetRead}}),
			consumerOf("PartnerApp", map[string]any{"idp": "partners", "subject": kcfixture.ClientPartnerApp}),
		},
		"routes": []any{route("api", up.URL, nil)},
	}), []string{"-log-level", "debug"}, corpSecretEnv, "PARTNERS_SECRET="+kcfixture.PartnersGatewaySecret)
	url := gw.URL + "/api"
	botToken := func() string {
		return kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	}
	svcToken := func() string {
		return kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	}
	appToken := func() map[string]string {
		return map[string]string{"X-Partner-Token": kcClientToken(t, k, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)}
	}

	// Up: every provider has fetched its keys; partner-svc lacks the read permission.
	bot1, app1 := botToken(), appToken()
	if r := do(t, "GET", url, bearerHeader(bot1)); r.Status != 200 {
		t.Fatalf("FetchBot while Keycloak is up: got %d %s, want 200", r.Status, r.Body)
	}
	if r := do(t, "GET", url, app1); r.Status != 200 {
		t.Fatalf("PartnerApp while Keycloak is up: got %d %s, want 200", r.Status, r.Body)
	}
	if r := do(t, "GET", url, bearerHeader(svcToken())); r.Status != 403 {
		t.Fatalf("PartnerSvc while Keycloak is up: got %d %s, want 403 (Keycloak denies the permission)", r.Status, r.Body)
	}
	waitReadyz(t, gw, 200, 20*time.Second)
	// Tokens the gateway has not seen yet, issued before the outage.
	bot2, svc2, app2 := botToken(), svcToken(), appToken()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := k.StopServer(ctx); err != nil {
		t.Fatalf("StopServer: %v", err)
	}
	restarted := false
	t.Cleanup(func() {
		if restarted {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := k.StartServer(ctx); err != nil {
			t.Errorf("StartServer in cleanup: %v", err)
		}
	})

	t.Run("a token whose keys are cached keeps verifying", func(t *testing.T) {
		for name, tok := range map[string]string{"seen before": bot1, "never seen": bot2} {
			if r := do(t, "GET", url, bearerHeader(tok)); r.Status != 200 {
				t.Errorf("%s: got %d %s, want 200", name, r.Status, r.Body)
			}
		}
	})
	t.Run("introspection cannot decide: 503", func(t *testing.T) {
		r := do(t, "GET", url, app2)
		if r.Status != 503 || r.message() != "identity provider unavailable" {
			t.Fatalf("got %d %s, want 503 identity provider unavailable", r.Status, r.Body)
		}
	})
	t.Run("a permission decision cannot be made: 503", func(t *testing.T) {
		r := do(t, "GET", url, bearerHeader(svc2))
		if r.Status != 503 || r.message() != "identity provider unavailable" {
			t.Fatalf("got %d %s, want 503 identity provider unavailable", r.Status, r.Body)
		}
	})
	t.Run("readyz names the IdPs", func(t *testing.T) {
		problems := waitReadyz(t, gw, 503, 20*time.Second)
		for _, want := range []string{"idp:corp", "idp:partners"} {
			if _, ok := problems[want]; !ok {
				t.Errorf("/readyz problems: got %v, want %s", problems, want)
			}
		}
	})

	if err := k.StartServer(ctx); err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	restarted = true

	t.Run("recovers without a restart", func(t *testing.T) {
		waitReadyz(t, gw, 200, 60*time.Second)
		if r := do(t, "GET", url, appToken()); r.Status != 200 {
			t.Errorf("PartnerApp after Keycloak is back: got %d %s, want 200", r.Status, r.Body)
		}
		// The permission is decided by Keycloak's authorization services, whose first
		// evaluations after a restart can outlast the provider's 2s timeout on a loaded
		// machine: the answer must become Keycloak's denial, and never be a grant.
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := do(t, "GET", url, bearerHeader(svc2))
			if r.Status == 403 {
				break
			}
			if r.Status != 503 || time.Now().After(deadline) {
				t.Errorf("PartnerSvc after Keycloak is back: got %d %s, want 403", r.Status, r.Body)
				break
			}
			time.Sleep(200 * time.Millisecond) // polling interval of a readiness check
		}
	})
	t.Run("no token or secret in the logs", func(t *testing.T) {
		assertNoSecretsLogged(t, gw, map[string]string{
			"the gateway client secret":  kcfixture.GatewaySecret,
			"the partners client secret": kcfixture.PartnersGatewaySecret,
			"fetch-bot's token":          bot2,
			"partner-svc's token":        svc2,
			"partner-app's token":        app2["X-Partner-Token"],
		})
	})
}
