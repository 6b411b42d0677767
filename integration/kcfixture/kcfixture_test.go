package kcfixture_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

var (
	kc    *kcfixture.Keycloak
	kcErr error
)

func TestMain(m *testing.M) { os.Exit(kcfixture.Main(m, 10*time.Minute, &kc, &kcErr)) }

// claims decodes a JWT's payload without verifying it: the fixture's tests check what Keycloak
// issues, the providers' tests check verification.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decoding payload: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("decoding payload: %v", err)
	}
	return c
}

func header(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatalf("decoding header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("decoding header: %v", err)
	}
	return h
}

func TestRealmTokens(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	ctx := t.Context()

	tests := []struct {
		name       string
		realm      string
		get        func() (string, error)
		wantSub    string
		wantAzp    string
		wantAud    string
		wantGroups []string
		wantRole   string
	}{
		{"fetch-bot client credentials", kcfixture.RealmCorp,
			func() (string, error) {
				return k.Token(ctx, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
			},
			kcfixture.FetchBotSubject, kcfixture.ClientFetchBot, kcfixture.ClientGateway, []string{kcfixture.GroupBots}, kcfixture.RoleAPIUser},
		{"alice password", kcfixture.RealmCorp,
			func() (string, error) {
				return k.PasswordToken(ctx, kcfixture.RealmCorp, kcfixture.ClientPortal, "", kcfixture.UserAlice, kcfixture.AlicePassword)
			},
			kcfixture.AliceSubject, kcfixture.ClientPortal, kcfixture.ClientGateway, []string{kcfixture.GroupEngineering}, kcfixture.RoleAdmin},
		{"partner-app client credentials", kcfixture.RealmPartners,
			func() (string, error) {
				return k.Token(ctx, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
			},
			kcfixture.PartnerAppSubject, kcfixture.ClientPartnerApp, kcfixture.ClientPartnersGateway, nil, kcfixture.RealmRolePartner},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.get()
			if err != nil {
				t.Fatalf("getting token: %v", err)
			}
			c := claims(t, tok)
			if got, want := c["iss"], k.Issuer(tc.realm); got != want {
				t.Errorf("iss = %v, want %v", got, want)
			}
			if got := c["sub"]; got != tc.wantSub {
				t.Errorf("sub = %v, want %v", got, tc.wantSub)
			}
			if got := c["azp"]; got != tc.wantAzp {
				t.Errorf("azp = %v, want %v", got, tc.wantAzp)
			}
			if !claimHas(c["aud"], tc.wantAud) {
				t.Errorf("aud = %v, want it to contain %v", c["aud"], tc.wantAud)
			}
			for _, g := range tc.wantGroups {
				if !claimHas(c["groups"], g) {
					t.Errorf("groups = %v, want it to contain %v", c["groups"], g)
				}
			}
			ra, _ := c["realm_access"].(map[string]any)
			if !claimHas(ra["roles"], tc.wantRole) {
				t.Errorf("realm_access.roles = %v, want it to contain %v", ra["roles"], tc.wantRole)
			}
		})
	}
}

func claimHas(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		return slices.ContainsFunc(x, func(e any) bool { return e == want })
	}
	return false
}

func TestWrongPassword(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	_, err := k.PasswordToken(t.Context(), kcfixture.RealmCorp, kcfixture.ClientPortal, "", kcfixture.UserAlice, "wrong")
	var se *kcfixture.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want a 401 StatusError", err)
	}
}

func TestRotateKeys(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	ctx := t.Context()
	before, err := k.Token(ctx, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := k.RotateKeys(ctx, kcfixture.RealmPartners)
	if err != nil {
		t.Fatalf("RotateKeys: %v", err)
	}
	after, err := k.Token(ctx, kcfixture.RealmPartners, kcfixture.ClientPartnerApp, kcfixture.PartnerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := header(t, after)["kid"]; got != kid {
		t.Errorf("kid of a token issued after rotation = %v, want the new key %v", got, kid)
	}
	if got := header(t, before)["kid"]; got == kid {
		t.Errorf("kid of a token issued before rotation = %v, want an older key", got)
	}
}

func TestStopAndStartServer(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	if k.Mode == kcfixture.ModeExternal {
		t.Skip("the fixture does not own an external Keycloak")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := k.StopServer(ctx); err != nil {
		t.Fatalf("StopServer: %v", err)
	}
	if _, err := k.Token(ctx, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret); err == nil {
		t.Fatal("Token succeeded while Keycloak is stopped")
	}
	if err := k.StartServer(ctx); err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	if _, err := k.Token(ctx, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret); err != nil {
		t.Fatalf("Token after StartServer: %v", err)
	}
}
