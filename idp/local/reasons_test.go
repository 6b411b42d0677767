package local

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/internal/idptest"
)

// TestReasonsCarryNoCredentialBytes feeds every provider hostile credentials that hold a marker
// where a secret would be (a password, a signature, a token's header fields, a Signature
// parameter name or value, a key) and checks that the marker is in no error text, reason,
// message or challenge: those go to the access log and to explain (issue 11: a malformed
// Signature header's value was copied into the log's reason). The oidc provider has its own
// copy of this test.
func TestReasonsCarryNoCredentialBytes(t *testing.T) {
	const marker = "s3cretMARKER"
	const digits = "1337424242" // a marker a JSON number can carry

	hm := newTestHMAC(t, HMACAuthConfig{ValidateRequestBody: true})
	hmBinding, err := hm.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		t.Fatal(err)
	}
	basic := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	basicBinding, err := basic.Compile(idp.BindingSpec{Username: "alice", Password: "right"})
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := NewJWTAuth(JWTAuthConfig{Name: "jwt"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jwtBinding, err := jwt.Compile(idp.BindingSpec{Key: "bob", Secret: "bob-secret", Algorithm: "HS256"})
	if err != nil {
		t.Fatal(err)
	}
	keys := NewKeyAuth(KeyAuthConfig{Name: "keys"})
	keysBinding, err := keys.Compile(idp.BindingSpec{Key: "right-key"})
	if err != nil {
		t.Fatal(err)
	}

	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	hs256 := func(header, payload, secret string) string {
		in := b64(header) + "." + b64(payload)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	withAuth := func(v string) *http.Request {
		r := httptest.NewRequest("POST", "/x", strings.NewReader("body"))
		r.Header.Set("Date", hmacNow.Format(http.TimeFormat))
		r.Header.Set("Authorization", v)
		r.Header.Set("Digest", BodyDigest([]byte("body")))
		return r
	}
	signed := func(change func(r *http.Request)) *http.Request {
		r := hmacRequest(t, "POST", "/x", []byte("body"), hmacNow, SignInput{KeyID: "partner", Secret: "partner-secret"})
		change(r)
		return r
	}

	tests := []struct {
		name    string
		p       idp.Provider
		binding idp.Binding
		r       *http.Request
		marker  string // default marker
	}{
		{name: "hmac: unknown parameter without quotes", p: hm, binding: hmBinding, r: withAuth(`Signature ` + marker + `=x`)},
		{name: "hmac: bearer token sent as Signature", p: hm, binding: hmBinding, r: withAuth(`Signature ` + marker + `==`)},
		{name: "hmac: parameter name with a bad character", p: hm, binding: hmBinding, r: withAuth(`Signature x` + marker + `!="a"`)},
		{name: "hmac: repeated unknown parameter", p: hm, binding: hmBinding, r: withAuth(`Signature ` + marker + `="a",` + marker + `="b"`)},
		{name: "hmac: unknown parameter without closing quote", p: hm, binding: hmBinding, r: withAuth(`Signature ` + marker + `="a`)},
		{name: "hmac: unknown parameter followed by junk", p: hm, binding: hmBinding, r: withAuth(`Signature ` + marker + `="a"` + marker)},
		{name: "hmac: algorithm", p: hm, binding: hmBinding,
			r: withAuth(`Signature keyId="partner",algorithm="` + marker + `",headers="@request-target date",signature="c2ln"`)},
		{name: "hmac: signature", p: hm, binding: hmBinding,
			r: withAuth(`Signature keyId="partner",algorithm="hmac-sha256",headers="@request-target date digest",signature="` + marker + `"`)},
		{name: "hmac: signature not base64", p: hm, binding: hmBinding,
			r: withAuth(`Signature keyId="partner",algorithm="hmac-sha256",headers="@request-target date",signature="%` + marker + `"`)},
		{name: "hmac: headers", p: hm, binding: hmBinding,
			r: withAuth(`Signature keyId="partner",algorithm="hmac-sha256",headers="` + marker + `",signature="c2ln"`)},
		{name: "hmac: date", p: hm, binding: hmBinding, r: signed(func(r *http.Request) { r.Header.Set("Date", marker) })},
		{name: "hmac: digest", p: hm, binding: hmBinding, r: signed(func(r *http.Request) { r.Header.Set("Digest", marker) })},

		{name: "basic: wrong password", p: basic, binding: basicBinding, r: withAuth("Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+marker)))},
		{name: "basic: not base64", p: basic, binding: basicBinding, r: withAuth("Basic " + marker + "!")},
		{name: "basic: no colon", p: basic, binding: basicBinding, r: withAuth("Basic " + base64.StdEncoding.EncodeToString([]byte(marker)))},

		{name: "jwt: algorithm", p: jwt, binding: jwtBinding, r: withAuth("Bearer " + hs256(`{"alg":"`+marker+`"}`, `{"key":"bob"}`, "bob-secret"))},
		{name: "jwt: algorithm a number", p: jwt, binding: jwtBinding, marker: digits,
			r: withAuth("Bearer " + hs256(`{"alg":`+digits+`}`, `{"key":"bob"}`, "bob-secret"))},
		{name: "jwt: signature", p: jwt, binding: jwtBinding, r: withAuth("Bearer " + b64(`{"alg":"HS256"}`) + "." + b64(`{"key":"bob"}`) + "." + b64(marker))},
		{name: "jwt: header not base64", p: jwt, binding: jwtBinding, r: withAuth("Bearer " + marker + "." + b64(`{"key":"bob"}`) + ".c2ln")},
		{name: "jwt: exp not a number", p: jwt, binding: jwtBinding, r: withAuth("Bearer " + hs256(`{"alg":"HS256"}`, `{"key":"bob","exp":"`+marker+`"}`, "bob-secret"))},
		{name: "jwt: key claim not a string", p: jwt, binding: jwtBinding, r: withAuth("Bearer " + hs256(`{"alg":"HS256"}`, `{"key":{"`+marker+`":1}}`, "bob-secret"))},

		{name: "key-auth: wrong key", p: keys, binding: keysBinding, r: func() *http.Request {
			r := httptest.NewRequest("GET", "/x?apikey="+marker, nil)
			r.Header.Set("apikey", marker)
			return r
		}()},
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
