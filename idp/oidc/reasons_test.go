package oidc

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestReasonsCarryNoCredentialBytes feeds the oidc provider (the local providers have their own
// copy of this test) hostile credentials that hold a marker
// where a secret would be (a password, a signature, a token's header fields, a Signature
// parameter name or value, a key) and checks that the marker is in no error text, reason,
// message or challenge: those go to the access log and to explain (issue 11: a malformed
// Signature header's value was copied into the log's reason).
func TestReasonsCarryNoCredentialBytes(t *testing.T) {
	const marker = "s3cretMARKER"
	const digits = "1337424242" // a marker a JSON number can carry

	f := newOIDCFixture(t, nil)
	oidcClaims := string(oidcJSON(t, f.is.claims(f.clock.Now(), "svc-1")))

	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	withAuth := func(v string) *http.Request {
		r := httptest.NewRequest("POST", "/x", strings.NewReader("body"))
		r.Header.Set("Authorization", v)
		return r
	}
	tests := []struct {
		name    string
		p       idp.Provider
		binding idp.Binding
		r       *http.Request
		marker  string // default marker
	}{
		{name: "oidc: algorithm", p: f.p, r: withAuth("Bearer " + b64(`{"alg":"`+marker+`","kid":"k1"}`) + "." + b64(oidcClaims) + ".c2ln")},
		{name: "oidc: algorithm a number", p: f.p, marker: digits, r: withAuth("Bearer " + b64(`{"alg":`+digits+`,"kid":"k1"}`) + "." + b64(oidcClaims) + ".c2ln")},
		{name: "oidc: critical parameters", p: f.p, r: withAuth("Bearer " + b64(`{"alg":"RS256","kid":"k1","crit":["`+marker+`"]}`) + "." + b64(oidcClaims) + ".c2ln")},
		{name: "oidc: signature", p: f.p, r: withAuth("Bearer " + b64(`{"alg":"RS256","kid":"k1"}`) + "." + b64(oidcClaims) + "." + b64(marker))},
		{name: "oidc: opaque token", p: f.p, r: withAuth("Bearer " + marker)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.marker
			if m == "" {
				m = marker
			}
			idptest.RefusedQuietly(t, tt.p, tt.binding, tt.r, m)
		})
	}
}
