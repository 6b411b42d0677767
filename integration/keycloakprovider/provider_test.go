package keycloakprovider

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/consumers"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/oidc"
	"github.com/portcullis/portcullis/integration/kcfixture"
	"github.com/portcullis/portcullis/keycloak"
)

// One Keycloak for the whole package: it takes tens of seconds to start.
var (
	kc    *kcfixture.Keycloak
	kcErr error
)

func TestMain(m *testing.M) { os.Exit(kcfixture.Main(m, 10*time.Minute, &kc, &kcErr)) }

// offsetClock is the real clock shifted by an adjustable offset: Keycloak's tokens carry real
// times, and expiry is tested by moving the provider's clock, not by waiting.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// counters records the provider's hooks.
type counters struct {
	mu    sync.Mutex
	calls map[string]int // op -> count
	errs  map[string]int
	hits  map[string]int // cache -> hits
	miss  map[string]int
}

func newCounters() *counters {
	return &counters{calls: map[string]int{}, errs: map[string]int{}, hits: map[string]int{}, miss: map[string]int{}}
}

func (c *counters) hooks(cfg *oidc.Config) {
	cfg.OnIdPCall = func(_, op string, _ time.Duration, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls[op]++
		if err != nil {
			c.errs[op]++
		}
	}
	cfg.OnCache = func(_, cache string, hit bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if hit {
			c.hits[cache]++
		} else {
			c.miss[cache]++
		}
	}
}

func (c *counters) get(m *map[string]int, k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return (*m)[k]
}

type setup struct {
	k     *kcfixture.Keycloak
	p     *keycloak.Provider
	clock *offsetClock
	n     *counters
}

// newCorp builds a provider for realm corp with the gateway client.
func newCorp(t *testing.T, mod func(*keycloak.Config)) *setup {
	t.Helper()
	k := kcfixture.Require(t, kc, kcErr)
	s := &setup{k: k, clock: &offsetClock{}, n: newCounters()}
	cfg := keycloak.Config{
		Config: oidc.Config{
			Name:         "corp",
			ClientID:     kcfixture.ClientGateway,
			ClientSecret: kcfixture.GatewaySecret,
			Now:          s.clock.Now,
		},
		URL:   k.URL,
		Realm: kcfixture.RealmCorp,
	}
	s.n.hooks(&cfg.Config)
	if mod != nil {
		mod(&cfg)
	}
	p, err := keycloak.New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.p = p
	return s
}

func (s *setup) clientToken(t *testing.T, realm, client, secret string) string {
	t.Helper()
	tok, err := s.k.Token(t.Context(), realm, client, secret)
	if err != nil {
		t.Fatalf("getting a token of %s: %v", client, err)
	}
	return tok
}

func (s *setup) userToken(t *testing.T, user, password string) string {
	t.Helper()
	tok, err := s.k.PasswordToken(t.Context(), kcfixture.RealmCorp, kcfixture.ClientPortal, "", user, password)
	if err != nil {
		t.Fatalf("getting a token of %s: %v", user, err)
	}
	return tok
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/petstore", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func denial(t *testing.T, err error, status int) *idp.Denial {
	t.Helper()
	var d *idp.Denial
	if !errors.As(err, &d) {
		t.Fatalf("err = %v, want a %d denial", err, status)
	}
	if d.Status != status {
		t.Fatalf("status = %d (%v), want %d", d.Status, d, status)
	}
	t.Logf("denial: %v", d)
	return d
}

func TestTokensAccepted(t *testing.T) {
	kcfixture.Require(t, kc, kcErr)
	tests := []struct {
		name         string
		subjectClaim string
		token        func(s *setup, t *testing.T) string
		want         string
	}{
		{"client credentials, sub", "", func(s *setup, t *testing.T) string {
			return s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
		}, kcfixture.FetchBotSubject},
		{"client credentials, azp", "azp", func(s *setup, t *testing.T) string {
			return s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
		}, kcfixture.ClientFetchBot},
		{"password grant, sub", "", func(s *setup, t *testing.T) string {
			return s.userToken(t, kcfixture.UserAlice, kcfixture.AlicePassword)
		}, kcfixture.AliceSubject},
		{"password grant, preferred_username", "preferred_username", func(s *setup, t *testing.T) string {
			return s.userToken(t, kcfixture.UserAlice, kcfixture.AlicePassword)
		}, kcfixture.UserAlice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = tc.subjectClaim })
			cred, err := s.p.Extract(t.Context(), bearer(tc.token(s, t)))
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if cred == nil || cred.Lookup != tc.want {
				t.Fatalf("Lookup = %+v, want %q", cred, tc.want)
			}
			if got := cred.Claims["iss"]; got != s.k.Issuer(kcfixture.RealmCorp) {
				t.Errorf("claims[iss] = %v, want the corp issuer", got)
			}
		})
	}
}

func TestTokensRefused(t *testing.T) {
	s := newCorp(t, nil)
	good := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)

	t.Run("expired", func(t *testing.T) {
		later := newCorp(t, nil)
		later.clock.Advance(10 * time.Minute) // Keycloak's access tokens live 5 minutes
		_, err := later.p.Extract(t.Context(), bearer(good))
		d := denial(t, err, http.StatusUnauthorized)
		if !strings.Contains(d.Challenge, `error="invalid_token"`) {
			t.Errorf("challenge = %q, want error=\"invalid_token\"", d.Challenge)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		parts := strings.Split(good, ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		forged := strings.Replace(string(payload), kcfixture.FetchBotSubject, kcfixture.AliceSubject, 1)
		tok := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
		_, err = s.p.Extract(t.Context(), bearer(tok))
		denial(t, err, http.StatusUnauthorized)
	})

	t.Run("wrong audience", func(t *testing.T) {
		tok := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientOtherAudience, kcfixture.OtherAudienceSecret)
		_, err := s.p.Extract(t.Context(), bearer(tok))
		denial(t, err, http.StatusUnauthorized)
	})

	t.Run("other realm is not mine", func(t *testing.T) {
		tok := s.clientToken(t, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
		cred, err := s.p.Extract(t.Context(), bearer(tok))
		if cred != nil || err != nil {
			t.Fatalf("Extract of a partners token = %v, %v; want nil, nil", cred, err)
		}
	})

	t.Run("garbage bearer is not mine", func(t *testing.T) {
		cred, err := s.p.Extract(t.Context(), bearer("not-a-token"))
		if cred != nil || err != nil {
			t.Fatalf("Extract = %v, %v; want nil, nil", cred, err)
		}
	})
}

// corpConsumers builds a consumer set over the corp provider (and, when given, the partners
// provider) the way the policies package does.
func corpConsumers(t *testing.T, corp *keycloak.Provider, partners *keycloak.Provider, specs map[string][]idp.BindingSpec) *idp.Chain {
	t.Helper()
	b := consumers.NewBuilder(len(specs))
	for name, bs := range specs {
		c := &consumers.Consumer{Username: name}
		for _, spec := range bs {
			var p idp.Provider = corp
			if spec.IdP == "partners" {
				p = partners
			}
			bd, err := p.Compile(spec)
			if err != nil {
				t.Fatalf("compiling %s's binding: %v", name, err)
			}
			c.Chain = append(c.Chain, idp.Bound{Provider: p, Binding: bd})
		}
		if err := b.AddConsumer(c); err != nil {
			t.Fatal(err)
		}
	}
	providers := []idp.Provider{corp}
	if partners != nil {
		providers = append(providers, partners)
	}
	return idp.NewChain(providers, b.Build())
}

func TestBindingConditions(t *testing.T) {
	s := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = "azp" })
	fetchBot := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	partner := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	noConsumer := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientNoConsumer, kcfixture.NoConsumerSecret)

	tests := []struct {
		name   string
		spec   idp.BindingSpec // bound to fetch-bot unless Subject is set
		token  string
		status int // 0 grants
	}{
		{"subject only", idp.BindingSpec{}, fetchBot, 0},
		{"realm role held", idp.BindingSpec{RealmRoles: []string{kcfixture.RoleAPIUser}}, fetchBot, 0},
		{"realm role missing", idp.BindingSpec{RealmRoles: []string{kcfixture.RoleAdmin}}, fetchBot, 403},
		{"client role held", idp.BindingSpec{ClientRoles: map[string][]string{kcfixture.ClientGateway: {kcfixture.ClientRolePetViewer}}}, fetchBot, 0},
		{"client role missing", idp.BindingSpec{ClientRoles: map[string][]string{kcfixture.ClientGateway: {kcfixture.ClientRolePetAdmin}}}, fetchBot, 403},
		{"client role of a client without roles", idp.BindingSpec{Subject: kcfixture.ClientPartnerSvc, ClientRoles: map[string][]string{kcfixture.ClientGateway: {kcfixture.ClientRolePetViewer}}}, partner, 403},
		{"group held", idp.BindingSpec{Groups: []string{kcfixture.GroupBots}}, fetchBot, 0},
		{"group held, full path", idp.BindingSpec{Groups: []string{"/" + kcfixture.GroupBots}}, fetchBot, 0},
		{"group missing", idp.BindingSpec{Groups: []string{kcfixture.GroupEngineering}}, fetchBot, 403},
		{"permission granted", idp.BindingSpec{Permissions: []string{kcfixture.PermissionPetRead}}, fetchBot, 0},
		{"permission denied", idp.BindingSpec{Permissions: []string{kcfixture.PermissionPetWrite}}, fetchBot, 403},
		{"permission denied to another client", idp.BindingSpec{Subject: kcfixture.ClientPartnerSvc, Permissions: []string{kcfixture.PermissionPetRead}}, partner, 403},
		{"unknown resource", idp.BindingSpec{Permissions: []string{"no-such-resource#read"}}, fetchBot, 403},
		{"claims and scopes", idp.BindingSpec{Claims: map[string][]string{"preferred_username": {"service-account-fetch-bot"}}, Scopes: []string{"profile"}}, fetchBot, 0},
		{"scope missing", idp.BindingSpec{Scopes: []string{"offline_access"}}, fetchBot, 403},
		{"a client bound to no consumer", idp.BindingSpec{}, noConsumer, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if spec.Subject == "" {
				spec.Subject = kcfixture.ClientFetchBot
			}
			spec.IdP = "corp"
			chain := corpConsumers(t, s.p, nil, map[string][]idp.BindingSpec{"Consumer": {spec}})
			res, err := chain.Evaluate(t.Context(), bearer(tc.token), "", nil)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("Evaluate: %v", err)
				}
				if res.Consumer != "Consumer" {
					t.Fatalf("consumer = %q, want Consumer", res.Consumer)
				}
				return
			}
			denial(t, err, tc.status)
		})
	}
}

func TestPermissionsAlice(t *testing.T) {
	s := newCorp(t, nil)
	alice := s.userToken(t, kcfixture.UserAlice, kcfixture.AlicePassword)
	bob := s.userToken(t, kcfixture.UserBob, kcfixture.BobPassword)
	chain := corpConsumers(t, s.p, nil, map[string][]idp.BindingSpec{
		"Alice": {{IdP: "corp", Subject: kcfixture.AliceSubject, Permissions: []string{kcfixture.PermissionPetRead, kcfixture.PermissionPetWrite},
			RealmRoles: []string{kcfixture.RoleAdmin}, Groups: []string{kcfixture.GroupEngineering}}},
		"Bob": {{IdP: "corp", Subject: kcfixture.BobSubject, Permissions: []string{kcfixture.PermissionPetRead}}},
	})
	res, err := chain.Evaluate(t.Context(), bearer(alice), "", nil)
	if err != nil || res.Consumer != "Alice" {
		t.Fatalf("alice: %+v, %v; want consumer Alice", res, err)
	}
	_, err = chain.Evaluate(t.Context(), bearer(bob), "", nil)
	denial(t, err, http.StatusForbidden)
}

func TestDecisionCache(t *testing.T) {
	s := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = "azp" })
	tok := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	chain := corpConsumers(t, s.p, nil, map[string][]idp.BindingSpec{
		"FetchBot": {{IdP: "corp", Subject: kcfixture.ClientFetchBot, Permissions: []string{kcfixture.PermissionPetRead}}},
	})
	for i := range 3 {
		if _, err := chain.Evaluate(t.Context(), bearer(tok), "", nil); err != nil {
			t.Fatalf("Evaluate %d: %v", i, err)
		}
	}
	if calls, hits := s.n.get(&s.n.calls, "uma"), s.n.get(&s.n.hits, "uma"); calls != 1 || hits != 2 {
		t.Fatalf("uma calls/cache hits = %d/%d, want 1/2", calls, hits)
	}
	// A decision is not kept past the token's expiry (checked through a clock far ahead and a
	// token that is then expired: the chain refuses it before any decision).
	s.clock.Advance(6 * time.Minute)
	_, err := chain.Evaluate(t.Context(), bearer(tok), "", nil)
	denial(t, err, http.StatusUnauthorized)
}

func TestRevokedSessionRefusedWithIntrospection(t *testing.T) {
	local := newCorp(t, nil)
	intro := newCorp(t, func(c *keycloak.Config) {
		c.Introspection = true
		c.IntrospectionTTL = 10 * time.Second
	})
	tok := intro.userToken(t, kcfixture.UserBob, kcfixture.BobPassword)
	for _, s := range []*setup{local, intro} {
		if _, err := s.p.Extract(t.Context(), bearer(tok)); err != nil {
			t.Fatalf("Extract before logout: %v", err)
		}
	}
	if err := intro.k.LogoutUser(t.Context(), kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
		t.Fatalf("LogoutUser: %v", err)
	}
	// The cached answer is used until the TTL; then Keycloak says inactive.
	intro.clock.Advance(11 * time.Second)
	_, err := intro.p.Extract(t.Context(), bearer(tok))
	d := denial(t, err, http.StatusUnauthorized)
	if !strings.Contains(d.Reason, "inactive") {
		t.Errorf("reason = %q, want it to say the token is inactive", d.Reason)
	}
	if got := intro.n.get(&intro.n.calls, "introspection"); got != 2 {
		t.Errorf("introspection calls = %d, want 2", got)
	}
	// Without introspection a revoked token is still valid until it expires: local
	// verification cannot know about sessions.
	if _, err := local.p.Extract(t.Context(), bearer(tok)); err != nil {
		t.Fatalf("Extract without introspection: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	n := newCounters()
	cfg := keycloak.Config{
		Config: oidc.Config{
			Name:     "partners",
			ClientID: kcfixture.ClientPartnersGateway,
			// Allow the refetch that the new kid triggers right after the first fetch.
			JWKSRefreshMinInterval: time.Nanosecond,
		},
		URL:   k.URL,
		Realm: kcfixture.RealmPartners,
	}
	n.hooks(&cfg.Config)
	p, err := keycloak.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := k.Token(t.Context(), kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Extract(t.Context(), bearer(before)); err != nil {
		t.Fatalf("Extract before rotation: %v", err)
	}
	kid, err := k.RotateKeys(t.Context(), kcfixture.RealmPartners)
	if err != nil {
		t.Fatalf("RotateKeys: %v", err)
	}
	after, err := k.Token(t.Context(), kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := p.Extract(t.Context(), bearer(after))
	if err != nil {
		t.Fatalf("Extract of a token signed with the new key %s: %v", kid, err)
	}
	if cred.Lookup != kcfixture.PartnerAppSubject {
		t.Fatalf("Lookup = %q, want %q", cred.Lookup, kcfixture.PartnerAppSubject)
	}
	if got := n.get(&n.calls, "jwks"); got != 2 {
		t.Fatalf("jwks fetches = %d, want 2 (the new kid triggers one refetch)", got)
	}
	// Tokens signed with the old key still verify.
	if _, err := p.Extract(t.Context(), bearer(before)); err != nil {
		t.Fatalf("Extract of a token signed with the old key: %v", err)
	}
}

// Two realms, two headers: a consumer bound to both needs both tokens, and tokens of two
// different consumers are refused.
func TestTwoRealmsChain(t *testing.T) {
	s := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = "azp" })
	partners, err := keycloak.New(keycloak.Config{
		Config: oidc.Config{Name: "partners", ClientID: kcfixture.ClientPartnersGateway, SubjectClaim: "azp", Header: "X-Partner-Token"},
		URL:    s.k.URL, Realm: kcfixture.RealmPartners,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	chain := corpConsumers(t, s.p, partners, map[string][]idp.BindingSpec{
		"Partner": {
			{IdP: "corp", Subject: kcfixture.ClientPartnerSvc, RealmRoles: []string{kcfixture.RoleAPIUser}},
			{IdP: "partners", Subject: kcfixture.ClientPartnerApp},
		},
		"FetchBot": {{IdP: "corp", Subject: kcfixture.ClientFetchBot}},
	})
	corpTok := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	partnerTok := s.clientToken(t, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	botTok := s.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)

	both := bearer(corpTok)
	both.Header.Set("X-Partner-Token", partnerTok)
	res, err := chain.Evaluate(t.Context(), both, "", nil)
	if err != nil || res.Consumer != "Partner" {
		t.Fatalf("both tokens: %+v, %v; want consumer Partner", res, err)
	}
	if len(res.Credentials) != 2 {
		t.Fatalf("credentials = %d, want 2", len(res.Credentials))
	}

	_, err = chain.Evaluate(t.Context(), bearer(corpTok), "", nil)
	denial(t, err, http.StatusUnauthorized) // the partners token is missing

	mixed := bearer(botTok)
	mixed.Header.Set("X-Partner-Token", partnerTok)
	_, err = chain.Evaluate(t.Context(), mixed, "", nil)
	d := denial(t, err, http.StatusUnauthorized)
	if d.Message != idp.ErrDifferentConsumers.Error() {
		t.Fatalf("message = %q, want %q", d.Message, idp.ErrDifferentConsumers.Error())
	}
}

func TestReady(t *testing.T) {
	s := newCorp(t, nil)
	if err := s.p.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ep, err := s.p.Endpoints(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ep.Token, s.k.Issuer(kcfixture.RealmCorp)) || ep.Introspection == "" {
		t.Fatalf("endpoints = %+v", ep)
	}
}
