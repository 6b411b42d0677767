package local

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestBasicAuthForeignScheme: an Authorization header of a scheme no provider reads is an
// invalid credential for basic-auth ("Invalid authorization in request", as APISIX), while a
// scheme another provider of the policy reads is left to that provider.
func TestBasicAuthForeignScheme(t *testing.T) {
	tests := []struct {
		name    string
		cfg     BasicAuthConfig
		header  string
		message string
	}{
		{name: "unknown scheme", header: "Bad_header YmFyOmJhcgo=", message: "Invalid authorization in request"},
		{name: "bare value", header: "YmFyOmJhcgo=", message: "Invalid authorization in request"},
		{name: "Bearer without a bearer provider", header: "Bearer abc", message: "Invalid authorization in request"},
		{name: "Bearer with jwt-auth in the policy", cfg: BasicAuthConfig{OtherSchemes: []string{"Bearer"}, OtherBareTokens: true},
			header: "Bearer abc", message: "Missing authorization in request"},
		{name: "bearer in another case", cfg: BasicAuthConfig{OtherSchemes: []string{"Bearer"}}, header: "bearer abc", message: "Missing authorization in request"},
		{name: "bare token with jwt-auth in the policy", cfg: BasicAuthConfig{OtherSchemes: []string{"Bearer"}, OtherBareTokens: true},
			header: "abc", message: "Missing authorization in request"},
		{name: "unknown scheme with jwt-auth in the policy", cfg: BasicAuthConfig{OtherSchemes: []string{"Bearer", "Signature"}, OtherBareTokens: true},
			header: "Bad_header YmFyOmJhcgo=", message: "Invalid authorization in request"},
		{name: "no header", message: "Missing authorization in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name = "basic"
			p := NewBasicAuth(cfg, nil)
			idx := idptest.NewIndex()
			idx.Add(t, "bob", p, idp.BindingSpec{Username: "bob", Password: "pw"})
			r := jwtRequest(tt.header)
			_, err := idp.NewChain([]idp.Provider{p}, idx).Evaluate(context.Background(), r, "", nil)
			var d *idp.Denial
			if !errors.As(err, &d) || d.Status != http.StatusUnauthorized || d.Message != tt.message {
				t.Fatalf("got %v, want 401 %q", err, tt.message)
			}
			if d.Challenge != `Basic realm="basic"` {
				t.Errorf("challenge: got %q, want the Basic challenge", d.Challenge)
			}
		})
	}
}
