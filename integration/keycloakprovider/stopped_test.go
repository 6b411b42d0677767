package keycloakprovider

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/integration/kcfixture"
	"github.com/portcullis/portcullis/keycloak"
)

// Keycloak stopped mid-run: tokens whose keys are cached keep verifying; whatever needs
// Keycloak itself (introspection, UMA decisions, unknown keys) cannot decide (ErrUnavailable,
// 503 at the gateway); Ready reports it; everything recovers when Keycloak is back.
// This file sorts last so the restart does not slow the other tests down.
func TestKeycloakStoppedMidRun(t *testing.T) {
	k := kcfixture.Require(t, kc, kcErr)
	if k.Mode == kcfixture.ModeExternal {
		t.Skip("the fixture cannot stop an external Keycloak")
	}
	local := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = "azp"; c.Timeout = 2 * time.Second })
	intro := newCorp(t, func(c *keycloak.Config) { c.SubjectClaim = "azp"; c.Introspection = true; c.Timeout = 2 * time.Second })
	tok := local.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	other := local.clientToken(t, kcfixture.RealmCorp, kcfixture.ClientPartnerSvc, kcfixture.PartnerSvcSecret)
	for _, s := range []*setup{local, intro} {
		if err := s.p.Ready(t.Context()); err != nil {
			t.Fatalf("Ready before the stop: %v", err)
		}
	}
	permSpec := idp.BindingSpec{IdP: "corp", Subject: kcfixture.ClientPartnerSvc, Permissions: []string{kcfixture.PermissionPetRead}}
	permBinding, err := local.p.Compile(permSpec)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := k.StopServer(ctx); err != nil {
		t.Fatalf("StopServer: %v", err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := k.StartServer(ctx); err != nil {
				t.Errorf("StartServer in cleanup: %v", err)
			}
		}
	})
	// Past the refetch interval, so that the provider would ask Keycloak if it needed to.
	local.clock.Advance(11 * time.Second)
	intro.clock.Advance(11 * time.Second)

	cred, err := local.p.Extract(ctx, bearer(tok))
	if err != nil {
		t.Fatalf("Extract with cached keys while Keycloak is down: %v", err)
	}
	if cred.Lookup != kcfixture.ClientFetchBot {
		t.Fatalf("Lookup = %q, want %q", cred.Lookup, kcfixture.ClientFetchBot)
	}
	if _, err := intro.p.Extract(ctx, bearer(tok)); !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("Extract with introspection while Keycloak is down = %v, want ErrUnavailable", err)
	}
	otherCred, err := local.p.Extract(ctx, bearer(other))
	if err != nil {
		t.Fatalf("Extract of another token with cached keys: %v", err)
	}
	if err := local.p.Verify(ctx, nil, otherCred, permBinding); !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("Verify of a permission while Keycloak is down = %v, want ErrUnavailable", err)
	}
	if err := local.p.Ready(ctx); !errors.Is(err, idp.ErrUnavailable) {
		t.Fatalf("Ready while Keycloak is down = %v, want ErrUnavailable", err)
	}

	if err := k.StartServer(ctx); err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	restarted = true
	local.clock.Advance(11 * time.Second)
	intro.clock.Advance(11 * time.Second)
	if err := local.p.Ready(ctx); err != nil {
		t.Fatalf("Ready after Keycloak is back: %v", err)
	}
	// Keycloak answers its first requests after a start slowly (its caches are cold, and the
	// machine may be busy with other tests), and one introspection may outlast the provider's
	// 2 s timeout: that is Keycloak not ready yet, which the provider rightly reports as
	// ErrUnavailable. So wait for recovery, bounded by ctx; any other answer fails at once.
	for {
		_, err := intro.p.Extract(ctx, bearer(tok))
		if err == nil {
			break
		}
		if !errors.Is(err, idp.ErrUnavailable) || ctx.Err() != nil {
			t.Fatalf("Extract with introspection after Keycloak is back: %v", err)
		}
		t.Logf("introspection not answered yet after the restart: %v", err)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}
