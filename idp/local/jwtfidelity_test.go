package local

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestJWTSignatureNotBase64URL: a token whose signature part does not decode is present and
// fails to verify ("failed to verify jwt", as APISIX), not missing; its key claim still decides
// whether it names a consumer at all.
func TestJWTSignatureNotBase64URL(t *testing.T) {
	p := newTestJWT(t, JWTAuthConfig{})
	idx := idptest.NewIndex()
	idx.Add(t, "carol", p, idp.BindingSpec{Key: "carol", Secret: "carol-secret"})
	chain := idp.NewChain([]idp.Provider{p}, idx)
	part := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	hdr := part(map[string]any{"alg": "HS256", "typ": "JWT"})
	tests := []struct {
		name, token, message string
	}{
		{name: "known key", token: hdr + "." + part(map[string]any{"key": "carol"}) + ".@@@@", message: "failed to verify jwt"},
		{name: "known key, signature with padding", token: hdr + "." + part(map[string]any{"key": "carol"}) + ".AAAA==", message: "failed to verify jwt"},
		{name: "unknown key", token: hdr + "." + part(map[string]any{"key": "zed"}) + ".@@@@", message: "Invalid user key in JWT token"},
		{name: "no key claim", token: hdr + "." + part(map[string]any{"sub": "x"}) + ".@@@@", message: "missing user key in JWT token"},
		{name: "header not JSON", token: "header.payload.@@@@", message: "JWT token invalid"},
		{name: "four parts is not a token", token: hdr + ".a.b.c", message: "Missing JWT token in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := chain.Evaluate(context.Background(), jwtRequest("Bearer "+tt.token), "", nil)
			var d *idp.Denial
			if !errors.As(err, &d) || d.Status != http.StatusUnauthorized || d.Message != tt.message {
				t.Fatalf("got %v, want 401 %q", err, tt.message)
			}
		})
	}
}
