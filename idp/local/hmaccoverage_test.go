package local

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
)

// hmacHandSigned is an Authorization value whose signature is computed over signingString as
// given, so that a test can sign what a verifier with a bug would build.
func hmacHandSigned(keyID, secret, headers, signingString string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signingString))
	return `Signature keyId="` + keyID + `",algorithm="hmac-sha256",headers="` + headers +
		`",signature="` + base64.StdEncoding.EncodeToString(mac.Sum(nil)) + `"`
}

// TestHMACAuthSignedCoverage holds the replay protections of issue 11 item 7: each case is a
// request that an attacker can make from a captured or hand-built signature, and that was
// granted before the date used for the skew had to be the signed one, @request-target, the date
// and (with body validation) Digest had to be signed, header names were lowercased, and a
// configured nonce had to be signed.
func TestHMACAuthSignedCoverage(t *testing.T) {
	key := SignInput{KeyID: "partner", Secret: "partner-secret"}
	fresh := hmacNow.Format(http.TimeFormat)
	dayOld := hmacNow.Add(-24 * time.Hour).Format(http.TimeFormat)
	strict := HMACAuthConfig{}
	loose := HMACAuthConfig{Compat: HMACCompatAPISIXLoose}
	body := HMACAuthConfig{ValidateRequestBody: true}
	looseBody := HMACAuthConfig{ValidateRequestBody: true, Compat: HMACCompatAPISIXLoose}
	nonce := HMACAuthConfig{NonceHeader: "X-Nonce"}

	// signed builds a request with header values set, then signs the listed headers.
	signed := func(method, target string, payload []byte, set map[string]string, headers ...string) func(t *testing.T) *http.Request {
		return func(t *testing.T) *http.Request {
			r := httptest.NewRequest(method, target, bytes.NewReader(payload))
			for k, v := range set {
				r.Header.Set(k, v)
			}
			in := key
			in.Headers = headers
			if payload != nil {
				in.Body = payload
			}
			if err := SignRequest(r, in); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	// then changes a signed request after signing, as whoever replays it would.
	then := func(build func(t *testing.T) *http.Request, change func(r *http.Request)) func(t *testing.T) *http.Request {
		return func(t *testing.T) *http.Request {
			r := build(t)
			change(r)
			return r
		}
	}
	otherBody := func(b string) func(r *http.Request) {
		return func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(b))
			r.ContentLength = int64(len(b))
			r.Header.Set("Digest", BodyDigest([]byte(b)))
		}
	}

	tests := []struct {
		name       string
		cfg        HMACAuthConfig
		build      func(t *testing.T) *http.Request
		wantReason string // "" grants
	}{
		// Item 1: the skew is checked on the signed date.
		{name: "signed day-old x-date with a fresh unsigned date", cfg: strict,
			build:      signed("GET", "/x", nil, map[string]string{"X-Date": dayOld, "Date": fresh}, "@request-target", "x-date"),
			wantReason: "clock skew 86400s > 300s on x-date"},
		{name: "loose: signed day-old x-date with a fresh unsigned date", cfg: loose,
			build:      signed("GET", "/x", nil, map[string]string{"X-Date": dayOld, "Date": fresh}, "@request-target", "x-date"),
			wantReason: "clock skew 86400s > 300s on x-date"},
		{name: "both signed, x-date day-old", cfg: strict,
			build:      signed("GET", "/x", nil, map[string]string{"X-Date": dayOld, "Date": fresh}, "@request-target", "date", "x-date"),
			wantReason: "clock skew 86400s > 300s on x-date"},
		{name: "both signed, date day-old", cfg: strict,
			build:      signed("GET", "/x", nil, map[string]string{"X-Date": fresh, "Date": dayOld}, "@request-target", "date", "x-date"),
			wantReason: "clock skew 86400s > 300s on date"},
		{name: "both signed and fresh", cfg: strict,
			build: signed("GET", "/x", nil, map[string]string{"X-Date": fresh, "Date": fresh}, "@request-target", "x-date", "date")},
		{name: "signed fresh x-date with a day-old unsigned date", cfg: strict,
			build: signed("GET", "/x", nil, map[string]string{"X-Date": fresh, "Date": dayOld}, "@request-target", "x-date")},
		{name: "no date signed", cfg: strict,
			build:      signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Custom": "v"}, "@request-target", "x-custom"),
			wantReason: "neither date nor x-date is signed: cannot check clock skew"},
		{name: "signed date absent", cfg: strict,
			build:      then(signed("GET", "/x", nil, map[string]string{"Date": fresh}, "@request-target", "date"), func(r *http.Request) { r.Header.Del("Date") }),
			wantReason: "date header missing: cannot check clock skew"},

		// Item 2: what a signature must cover.
		{name: "headers empty: keyId alone signed", cfg: strict,
			build: func(t *testing.T) *http.Request {
				r := httptest.NewRequest("GET", "/admin", nil)
				r.Header.Set("Date", fresh)
				r.Header.Set("Authorization", hmacHandSigned("partner", "partner-secret", "", "partner\n"))
				return r
			},
			wantReason: "headers parameter is empty: the signature covers only the keyId"},
		{name: "loose: headers empty", cfg: loose,
			build: func(t *testing.T) *http.Request {
				r := httptest.NewRequest("GET", "/admin", nil)
				r.Header.Set("Date", fresh)
				r.Header.Set("Authorization", hmacHandSigned("partner", "partner-secret", "", "partner\n"))
				return r
			},
			wantReason: "headers parameter is empty: the signature covers only the keyId"},
		{name: "request target not signed", cfg: strict,
			build:      signed("GET", "/x", nil, map[string]string{"Date": fresh}, "date"),
			wantReason: `header "@request-target" not signed`},
		{name: "loose: request target not signed", cfg: loose,
			build: signed("GET", "/x", nil, map[string]string{"Date": fresh}, "date")},
		{name: "unsigned digest: replay with another body", cfg: body,
			build:      then(signed("POST", "/x", []byte(`{"amount":1}`), map[string]string{"Date": fresh}, "@request-target", "date"), otherBody(`{"amount":1000}`)),
			wantReason: `header "digest" not signed`},
		{name: "unsigned digest: the original body", cfg: body,
			build:      signed("POST", "/x", []byte(`{"amount":1}`), map[string]string{"Date": fresh}, "@request-target", "date"),
			wantReason: `header "digest" not signed`},
		{name: "signed digest: replay with another body", cfg: body,
			build:      then(signed("POST", "/x", []byte(`{"amount":1}`), map[string]string{"Date": fresh}, "@request-target", "date", "digest"), otherBody(`{"amount":1000}`)),
			wantReason: "signature mismatch"},
		{name: "signed digest", cfg: body,
			build: signed("POST", "/x", []byte(`{"amount":1}`), map[string]string{"Date": fresh}, "@request-target", "date", "digest")},
		{name: "loose: unsigned digest of the body", cfg: looseBody,
			build: signed("POST", "/x", []byte(`{"amount":1}`), map[string]string{"Date": fresh}, "@request-target", "date")},
		{name: "unsigned nonce", cfg: nonce,
			build:      signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Nonce": "n1"}, "@request-target", "date"),
			wantReason: `header "x-nonce" not signed`},
		{name: "loose: unsigned nonce", cfg: HMACAuthConfig{NonceHeader: "X-Nonce", Compat: HMACCompatAPISIXLoose},
			build:      signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Nonce": "n1"}, "@request-target", "date"),
			wantReason: `header "x-nonce" not signed`},
		{name: "signed nonce absent", cfg: nonce,
			build:      then(signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Nonce": "n1"}, "@request-target", "date", "x-nonce"), func(r *http.Request) { r.Header.Del("X-Nonce") }),
			wantReason: `signed header "x-nonce" absent`},
		{name: "signed nonce", cfg: nonce,
			build: signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Nonce": "n1"}, "@request-target", "date", "x-nonce")},

		// Item 3: names are lowercased before both the checks and the signing string.
		{name: "uppercase @REQUEST-TARGET that signs nothing", cfg: HMACAuthConfig{SignedHeaders: []string{"@request-target", "date"}},
			build: func(t *testing.T) *http.Request {
				r := httptest.NewRequest("GET", "/admin", nil)
				r.Header.Set("Date", fresh)
				// What a case-sensitive signing string held: no request-target line at all.
				r.Header.Set("Authorization", hmacHandSigned("partner", "partner-secret", "@REQUEST-TARGET date", "partner\ndate: "+fresh+"\n"))
				return r
			},
			wantReason: "signature mismatch"},
		{name: "uppercase names signed as draft-cavage says", cfg: HMACAuthConfig{SignedHeaders: []string{"X-Custom"}},
			build: signed("GET", "/x", nil, map[string]string{"Date": fresh, "X-Custom": "v"}, "@REQUEST-TARGET", "Date", "X-Custom")},
		{name: "uppercase names hand-signed lowercase", cfg: strict,
			build: func(t *testing.T) *http.Request {
				r := httptest.NewRequest("GET", "/x", nil)
				r.Header.Set("Date", fresh)
				r.Header.Set("Authorization", hmacHandSigned("partner", "partner-secret", "@Request-Target DATE", "partner\nGET /x\ndate: "+fresh+"\n"))
				return r
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestHMAC(t, tt.cfg)
			bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
			if err != nil {
				t.Fatal(err)
			}
			err = hmacCheck(p, tt.build(t), bd)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("got %v, want granted", err)
				}
				return
			}
			d := localDenial(t, err, http.StatusUnauthorized, hmacGenericMessage)
			if d.Reason != tt.wantReason {
				t.Errorf("got reason %q, want %q", d.Reason, tt.wantReason)
			}
		})
	}
}
