package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
)

var hmacNow = time.Date(2024, 9, 6, 6, 41, 29, 0, time.UTC)

func newTestHMAC(t testing.TB, cfg HMACAuthConfig) *HMACAuth {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "hmac"
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return hmacNow }
	}
	p, err := NewHMACAuth(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// hmacCheck runs Extract then Verify against bd.
func hmacCheck(p *HMACAuth, r *http.Request, bd idp.Binding) error {
	cred, err := p.Extract(context.Background(), r)
	if err != nil {
		return err
	}
	if cred == nil {
		return errLocalNotMine
	}
	if cred.Lookup != bd.Lookup() {
		return p.Unknown()
	}
	return p.Verify(context.Background(), r, cred, bd)
}

// hmacRequest builds a request dated at date and signed by SignRequest with in.
func hmacRequest(t testing.TB, method, target string, body []byte, date time.Time, in SignInput) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	r.Header.Set("Date", date.UTC().Format(http.TimeFormat))
	in.Body = body
	if err := SignRequest(r, in); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestHMACAuthAPISIXVectors checks requests signed as the APISIX 3.11 hmac-auth documentation's
// Python script signs them (the signatures were computed by that script; the outputs printed in
// the documentation do not match its own inputs), so that clients written for APISIX work
// unchanged. The digest is the documentation's.
func TestHMACAuthAPISIXVectors(t *testing.T) {
	tests := []struct {
		name, method, target, date, digest, body, auth string
		header                                         http.Header
		validateBody                                   bool
		// loose marks a vector only APISIX's loose mode accepts; strictReason is why strict refuses it.
		loose        bool
		strictReason string
	}{
		{
			name: "get", method: "GET", target: "/get", date: "Fri, 06 Sep 2024 06:41:29 GMT",
			auth: `Signature keyId="john-key",algorithm="hmac-sha256",headers="@request-target date",signature="j+feO3Wm5em0agp0A70FZErf6lrMDVs7zjQ9MxomPx0="`,
		},
		{
			name: "post with digest", method: "POST", target: "/post", date: "Fri, 06 Sep 2024 09:16:16 GMT",
			digest: "SHA-256=78qzJuLwSpZ8HacsTdFCQJWxzPMOf8bYctRk2ySLpS8=", body: `{"name": "world"}`, validateBody: true,
			loose: true, strictReason: `header "digest" not signed`,
			auth: `Signature keyId="john-key",algorithm="hmac-sha256",headers="@request-target date",signature="sJDnsFOF2hWLoWFZVMBfLd2gPChqmW44PkXZg5iF9P0="`,
		},
		{
			name: "query and custom header", method: "GET", target: "/get?a=1&b=%20x", date: "Fri, 06 Sep 2024 06:41:29 GMT",
			header: http.Header{"X-Custom": {"v"}},
			auth:   `Signature keyId="john-key",algorithm="hmac-sha512",headers="@request-target x-custom date",signature="L2vOXuZC9chXP2PPSC798LwLR/RQCaZhOj2P6vhSdez2epwQZMeR1fXlPgjoOgXDhMMYjovE0Q1UbSVjEG5ZWw=="`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			date, err := http.ParseTime(tt.date)
			if err != nil {
				t.Fatal(err)
			}
			now := func() time.Time { return date.Add(10 * time.Second) }
			request := func() *http.Request {
				r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
				for k, v := range tt.header {
					r.Header[k] = v
				}
				r.Header.Set("Date", tt.date)
				r.Header.Set("Authorization", tt.auth)
				if tt.digest != "" {
					r.Header.Set("Digest", tt.digest)
				}
				return r
			}
			for _, compat := range []string{HMACCompatStrict, HMACCompatAPISIXLoose} {
				p := newTestHMAC(t, HMACAuthConfig{ValidateRequestBody: tt.validateBody, Compat: compat, Now: now})
				bd, err := p.Compile(idp.BindingSpec{KeyID: "john-key", Secret: "john-secret-key"})
				if err != nil {
					t.Fatal(err)
				}
				err = hmacCheck(p, request(), bd)
				if compat == HMACCompatStrict && tt.loose {
					if d := localDenial(t, err, http.StatusUnauthorized, hmacGenericMessage); d.Reason != tt.strictReason {
						t.Errorf("strict: got reason %q, want %q", d.Reason, tt.strictReason)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: got %v, want granted", compat, err)
				}
			}

			in, err := parseSignatureParams(strings.TrimPrefix(tt.auth, "Signature "))
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{"Date": {tt.date}}
			for k, v := range tt.header {
				h[k] = v
			}
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			out, err := SignHMAC(SignInput{KeyID: "john-key", Secret: "john-secret-key", Algorithm: in.algorithm, Headers: in.headers,
				Method: tt.method, Target: tt.target, Header: h, Body: body})
			if err != nil {
				t.Fatal(err)
			}
			if out.Authorization != tt.auth {
				t.Errorf("got Authorization %q, want %q", out.Authorization, tt.auth)
			}
			if out.Digest != tt.digest {
				t.Errorf("got Digest %q, want %q", out.Digest, tt.digest)
			}
		})
	}
}

func TestHMACAuth(t *testing.T) {
	key := SignInput{KeyID: "partner", Secret: "partner-secret"}
	withHeaders := func(in SignInput, headers ...string) SignInput { in.Headers = headers; return in }
	withAlg := func(in SignInput, alg string) SignInput { in.Algorithm = alg; return in }
	withSecret := func(in SignInput, s string) SignInput { in.Secret = s; return in }

	tests := []struct {
		name       string
		cfg        HMACAuthConfig
		build      func(t *testing.T) *http.Request
		wantErr    error
		wantStatus int
		wantMsg    string
		wantReason string
	}{
		{name: "no header", build: func(t *testing.T) *http.Request { return httptest.NewRequest("GET", "/x", nil) }, wantErr: errLocalNotMine},
		{name: "basic is not mine", build: func(t *testing.T) *http.Request { return basicRequest(basicHeader("a", "b")) }, wantErr: errLocalNotMine},
		{name: "bearer is not mine", build: func(t *testing.T) *http.Request { return jwtRequest("Bearer a.b.c") }, wantErr: errLocalNotMine},
		{name: "valid", build: func(t *testing.T) *http.Request { return hmacRequest(t, "GET", "/x?a=1&b=2", nil, hmacNow, key) }},
		{name: "hmac-sha1", build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow, withAlg(key, "hmac-sha1"))
		}},
		{name: "hmac-sha512", build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "DELETE", "/x", nil, hmacNow, withAlg(key, "hmac-sha512"))
		}},
		{name: "custom signed headers", cfg: HMACAuthConfig{SignedHeaders: []string{"date", "x-custom"}}, build: func(t *testing.T) *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			r.Header.Set("Date", hmacNow.Format(http.TimeFormat))
			r.Header.Set("X-Custom", "v")
			if err := SignRequest(r, withHeaders(key, "@request-target", "date", "x-custom", "host")); err != nil {
				t.Fatal(err)
			}
			return r
		}},
		{name: "malformed parameters", build: func(t *testing.T) *http.Request { return jwtRequest(`Signature keyId=partner`) },
			wantMsg: "client request can't be validated", wantReason: `malformed Signature parameters: parameter "keyId" is not a quoted string`},
		{name: "no keyId", build: func(t *testing.T) *http.Request {
			return jwtRequest(`Signature algorithm="hmac-sha256",signature="AAAA"`)
		},
			wantMsg: "client request can't be validated", wantReason: "keyId or signature missing"},
		{name: "no algorithm", build: func(t *testing.T) *http.Request { return jwtRequest(`Signature keyId="partner",signature="AAAA"`) },
			wantMsg: "client request can't be validated", wantReason: "algorithm missing"},
		{name: "algorithm not allowed", cfg: HMACAuthConfig{AllowedAlgorithms: []string{"hmac-sha512"}},
			build:   func(t *testing.T) *http.Request { return hmacRequest(t, "GET", "/x", nil, hmacNow, key) },
			wantMsg: "client request can't be validated", wantReason: `algorithm "hmac-sha256" not allowed`},
		{name: "signature not base64", build: func(t *testing.T) *http.Request {
			return jwtRequest(`Signature keyId="partner",algorithm="hmac-sha256",signature="%%%"`)
		}, wantMsg: "client request can't be validated", wantReason: "signature is not base64"},
		{name: "clock skew", build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow.Add(-412*time.Second), key)
		},
			wantMsg: "client request can't be validated", wantReason: "clock skew 412s > 300s on date"},
		{name: "clock skew ahead", build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow.Add(301*time.Second), key)
		},
			wantMsg: "client request can't be validated", wantReason: "clock skew 301s > 300s on date"},
		{name: "within custom skew", cfg: HMACAuthConfig{ClockSkew: localPtr(600)},
			build: func(t *testing.T) *http.Request {
				return hmacRequest(t, "GET", "/x", nil, hmacNow.Add(-412*time.Second), key)
			}},
		{name: "skew check disabled", cfg: HMACAuthConfig{ClockSkew: localPtr(0)},
			build: func(t *testing.T) *http.Request {
				return hmacRequest(t, "GET", "/x", nil, hmacNow.Add(-48*time.Hour), key)
			}},
		{name: "no date", build: func(t *testing.T) *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			if err := SignRequest(r, withHeaders(key, "@request-target")); err != nil {
				t.Fatal(err)
			}
			return r
		}, wantMsg: "client request can't be validated", wantReason: "neither date nor x-date is signed: cannot check clock skew"},
		{name: "loose: no date", cfg: HMACAuthConfig{Compat: HMACCompatAPISIXLoose}, build: func(t *testing.T) *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			if err := SignRequest(r, withHeaders(key, "@request-target")); err != nil {
				t.Fatal(err)
			}
			return r
		}, wantMsg: "client request can't be validated", wantReason: "Date header missing: cannot check clock skew"},
		{name: "loose: unsigned date is checked as APISIX does", cfg: HMACAuthConfig{Compat: HMACCompatAPISIXLoose}, build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow.Add(-412*time.Second), withHeaders(key, "@request-target"))
		}, wantMsg: "client request can't be validated", wantReason: "clock skew 412s > 300s on date"},
		{name: "loose: unsigned fresh date", cfg: HMACAuthConfig{Compat: HMACCompatAPISIXLoose}, build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow, withHeaders(key, "@request-target"))
		}},
		{name: "x-date fallback", build: func(t *testing.T) *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			r.Header.Set("X-Date", hmacNow.Format(http.TimeFormat))
			if err := SignRequest(r, withHeaders(key, "@request-target", "x-date")); err != nil {
				t.Fatal(err)
			}
			return r
		}},
		{name: "date not signed", cfg: HMACAuthConfig{SignedHeaders: []string{"date"}},
			build: func(t *testing.T) *http.Request {
				return hmacRequest(t, "GET", "/x", nil, hmacNow, withHeaders(key, "@request-target"))
			},
			wantMsg: "client request can't be validated", wantReason: `header "date" not signed`},
		{name: "wrong secret", build: func(t *testing.T) *http.Request {
			return hmacRequest(t, "GET", "/x", nil, hmacNow, withSecret(key, "other"))
		}, wantMsg: "client request can't be validated", wantReason: "signature mismatch"},
		{name: "tampered path", build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "GET", "/x", nil, hmacNow, key)
			r.RequestURI = "/admin"
			return r
		}, wantMsg: "client request can't be validated", wantReason: "signature mismatch"},
		{name: "tampered method", build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "GET", "/x", nil, hmacNow, key)
			r.Method = "DELETE"
			return r
		}, wantMsg: "client request can't be validated", wantReason: "signature mismatch"},
		{name: "tampered signed header", build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "GET", "/x", nil, hmacNow, key)
			r.Header.Set("Date", hmacNow.Add(time.Second).Format(http.TimeFormat))
			return r
		}, wantMsg: "client request can't be validated", wantReason: "signature mismatch"},
		{name: "body valid", cfg: HMACAuthConfig{ValidateRequestBody: true},
			build: func(t *testing.T) *http.Request { return hmacRequest(t, "POST", "/x", []byte(`{"a":1}`), hmacNow, key) }},
		{name: "empty body valid", cfg: HMACAuthConfig{ValidateRequestBody: true},
			build: func(t *testing.T) *http.Request { return hmacRequest(t, "GET", "/x", []byte{}, hmacNow, key) }},
		{name: "digest missing", cfg: HMACAuthConfig{ValidateRequestBody: true, Compat: HMACCompatAPISIXLoose},
			build:   func(t *testing.T) *http.Request { return hmacRequest(t, "POST", "/x", nil, hmacNow, key) },
			wantMsg: "client request can't be validated", wantReason: "digest header missing"},
		{name: "loose: unsigned digest is still compared", cfg: HMACAuthConfig{ValidateRequestBody: true, Compat: HMACCompatAPISIXLoose}, build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "POST", "/x", []byte(`{"a":1}`), hmacNow, withHeaders(key, "@request-target", "date"))
			r.Body = io.NopCloser(strings.NewReader(`{"a":2}`))
			return r
		}, wantMsg: "client request can't be validated", wantReason: "digest mismatch"},
		{name: "digest mismatch", cfg: HMACAuthConfig{ValidateRequestBody: true}, build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "POST", "/x", []byte(`{"a":1}`), hmacNow, key)
			r.Body = io.NopCloser(strings.NewReader(`{"a":2}`))
			return r
		}, wantMsg: "client request can't be validated", wantReason: "digest mismatch"},
		{name: "oversized by content length", cfg: HMACAuthConfig{ValidateRequestBody: true, MaxReqBodySize: 4},
			build:      func(t *testing.T) *http.Request { return hmacRequest(t, "POST", "/x", []byte("12345"), hmacNow, key) },
			wantStatus: http.StatusRequestEntityTooLarge, wantMsg: "client request can't be validated", wantReason: "body of 5 bytes exceeds max_req_body_size 4"},
		{name: "oversized without content length", cfg: HMACAuthConfig{ValidateRequestBody: true, MaxReqBodySize: 4}, build: func(t *testing.T) *http.Request {
			r := hmacRequest(t, "POST", "/x", []byte("12345"), hmacNow, key)
			r.ContentLength = -1
			return r
		}, wantStatus: http.StatusRequestEntityTooLarge, wantMsg: "client request can't be validated", wantReason: "body exceeds max_req_body_size 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestHMAC(t, tt.cfg)
			bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
			if err != nil {
				t.Fatal(err)
			}
			err = hmacCheck(p, tt.build(t), bd)
			switch {
			case tt.wantMsg != "":
				status := tt.wantStatus
				if status == 0 {
					status = http.StatusUnauthorized
				}
				d := localDenial(t, err, status, tt.wantMsg)
				if d.Reason != tt.wantReason {
					t.Errorf("got reason %q, want %q", d.Reason, tt.wantReason)
				}
			case !errors.Is(err, tt.wantErr):
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func localPtr[T any](v T) *T { return &v }

func TestHMACAuthBodyRestored(t *testing.T) {
	p := newTestHMAC(t, HMACAuthConfig{ValidateRequestBody: true})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"name":"world"}`)
	r := hmacRequest(t, "POST", "/x", body, hmacNow, SignInput{KeyID: "partner", Secret: "partner-secret"})
	if err := hmacCheck(p, r, bd); err != nil {
		t.Fatalf("got %v, want granted", err)
	}
	got, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("got body %q after verification, want %q", got, body)
	}
}

func TestHMACAuthNonce(t *testing.T) {
	clock := &localClock{now: hmacNow}
	p := newTestHMAC(t, HMACAuthConfig{NonceHeader: "X-Nonce", ClockSkew: localPtr(60), MaxNonces: 2, Now: clock.Now})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		t.Fatal(err)
	}
	signed := func(nonce string, covered bool) *http.Request {
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header.Set("Date", clock.Now().Format(http.TimeFormat))
		r.Header.Set("X-Nonce", nonce)
		headers := []string{"@request-target", "date"}
		if covered {
			headers = append(headers, "x-nonce")
		}
		if err := SignRequest(r, SignInput{KeyID: "partner", Secret: "partner-secret", Headers: headers}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	steps := []struct {
		name       string
		nonce      string
		covered    bool
		advance    time.Duration
		wantReason string
		wantErr    error
	}{
		{name: "first use", nonce: "n1", covered: true},
		{name: "replay", nonce: "n1", covered: true, wantReason: "nonce replayed"},
		{name: "unsigned nonce is refused", nonce: "n1", covered: false, wantReason: `header "x-nonce" not signed`},
		{name: "second nonce", nonce: "n2", covered: true},
		{name: "store full fails closed", nonce: "n3", covered: true, wantErr: idp.ErrUnavailable},
		{name: "replay after the window is a new use", nonce: "n1", covered: true, advance: 121 * time.Second},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clock.Advance(s.advance)
			err := hmacCheck(p, signed(s.nonce, s.covered), bd)
			switch {
			case s.wantReason != "":
				d := localDenial(t, err, http.StatusUnauthorized, "client request can't be validated")
				if d.Reason != s.wantReason {
					t.Errorf("got reason %q, want %q", d.Reason, s.wantReason)
				}
			case s.wantErr != nil:
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("got %v, want %v", err, s.wantErr)
				}
			case err != nil:
				t.Fatalf("got %v, want granted", err)
			}
		})
	}
}

func TestHMACAuthDenials(t *testing.T) {
	p := newTestHMAC(t, HMACAuthConfig{})
	localDenial(t, p.Missing(), http.StatusUnauthorized, "client request can't be validated: missing Authorization header")
	d := localDenial(t, p.Unknown(), http.StatusUnauthorized, "client request can't be validated")
	// APISIX's challenge (issue 16), which its clients and tests expect.
	if d.Challenge != `hmac realm="hmac"` {
		t.Errorf("got challenge %q, want %q", d.Challenge, `hmac realm="hmac"`)
	}
	if m := p.Missing(); m.Challenge != `hmac realm="hmac"` {
		t.Errorf("got missing challenge %q, want %q", m.Challenge, `hmac realm="hmac"`)
	}
}

func TestNewHMACAuthInvalid(t *testing.T) {
	_, err := NewHMACAuth(HMACAuthConfig{Name: "hmac", AllowedAlgorithms: []string{"hmac-md5"}, ClockSkew: localPtr(-1), MaxReqBodySize: -1}, nil)
	if err == nil {
		t.Fatal("got no error, want one")
	}
	for _, want := range []string{"hmac-md5", "clock_skew", "max_req_body_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestHMACAuthCompile(t *testing.T) {
	p := newTestHMAC(t, HMACAuthConfig{})
	tests := []struct {
		name    string
		spec    idp.BindingSpec
		wantErr bool
	}{
		{name: "ok", spec: idp.BindingSpec{KeyID: "k", Secret: "s"}},
		{name: "no key id", spec: idp.BindingSpec{Secret: "s"}, wantErr: true},
		{name: "quote in key id", spec: idp.BindingSpec{KeyID: `a"b`, Secret: "s"}, wantErr: true},
		{name: "no secret", spec: idp.BindingSpec{KeyID: "k"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := p.Compile(tt.spec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && b.Identifier() != "hmac:k" {
				t.Errorf("got identifier %q, want %q", b.Identifier(), "hmac:k")
			}
		})
	}
}

func TestHMACAuthHideCredentials(t *testing.T) {
	p := newTestHMAC(t, HMACAuthConfig{HideCredentials: true})
	r := hmacRequest(t, "GET", "/x", nil, hmacNow, SignInput{KeyID: "partner", Secret: "partner-secret"})
	r.Header.Add("Authorization", basicHeader("a", "b"))
	p.HideCredentials(r)
	if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != basicHeader("a", "b") {
		t.Fatalf("got Authorization %q, want only the Basic value kept", got)
	}
}

func TestParseSignatureParams(t *testing.T) {
	tests := []struct {
		in      string
		want    signatureParams
		wantErr bool
	}{
		{in: `keyId="k",algorithm="hmac-sha256",headers="@request-target date",signature="c2ln"`,
			want: signatureParams{keyID: "k", algorithm: "hmac-sha256", headers: []string{"@request-target", "date"}, signature: "c2ln"}},
		{in: ` keyId = "k" , signature="a,b", created="1" `, want: signatureParams{keyID: "k", signature: "a,b"}},
		{in: `keyId="k",`, want: signatureParams{keyID: "k"}},
		{in: `keyId="k`, wantErr: true},
		{in: `keyId=k`, wantErr: true},
		{in: `keyId="a",keyId="b"`, wantErr: true},
		{in: `keyId="a" signature="b"`, wantErr: true},
		{in: `="a"`, wantErr: true},
		{in: `k y="a"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSignatureParams(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got.keyID != tt.want.keyID || got.algorithm != tt.want.algorithm || got.signature != tt.want.signature ||
				strings.Join(got.headers, "|") != strings.Join(tt.want.headers, "|") {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSignHMACErrors(t *testing.T) {
	tests := []struct {
		name string
		in   SignInput
	}{
		{name: "no key id", in: SignInput{Secret: "s", Method: "GET", Headers: []string{"@request-target"}}},
		{name: "no secret", in: SignInput{KeyID: "k", Method: "GET", Headers: []string{"@request-target"}}},
		{name: "bad algorithm", in: SignInput{KeyID: "k", Secret: "s", Algorithm: "md5", Method: "GET", Headers: []string{"@request-target"}}},
		{name: "listed header absent", in: SignInput{KeyID: "k", Secret: "s", Method: "GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SignHMAC(tt.in); err == nil {
				t.Fatal("got no error, want one")
			}
		})
	}
}

// signatureParseErrors are every error text parseSignatureParams may give: a finite set, so that
// none can carry the header's bytes into a log.
func signatureParseErrors() map[string]bool {
	out := map[string]bool{
		"parameter without '='": true,
		"empty parameter name":  true,
		"a parameter name has a character other than A-Z, a-z, 0-9, '-' and '_'": true,
	}
	for _, label := range []string{`parameter "keyId"`, `parameter "algorithm"`, `parameter "headers"`, `parameter "signature"`, "an unknown parameter"} {
		for _, what := range []string{"is not a quoted string", "has no closing quote", "is followed by something other than ','", "is repeated"} {
			out[label+" "+what] = true
		}
	}
	return out
}

func FuzzParseSignature(f *testing.F) {
	for _, s := range []string{
		`keyId="k",algorithm="hmac-sha256",headers="@request-target date",signature="c2ln"`,
		``, `,,,`, `keyId="`, `keyId=""`, `="`, `a="b",`, `a="b"c`, "keyId=\"\x00\"", `headers="   "`,
		`keyId="k",algorithm="hmac-sha256",headers="",signature="c2ln"`,
		`keyId="k",algorithm="hmac-sha256",headers="@REQUEST-TARGET Date X-Date",signature="c2ln"`,
		`keyId="k",algorithm="hmac-sha256",headers="@request-target x-date digest x-nonce",signature="c2ln"`,
		`keyId="k",algorithm="hmac-sha256",headers="date",signature="c2ln"`,
		`keyId="k",algorithm="hmac-md5",headers="@request-target date",signature="c2ln"`,
		`keyId="k",keyId="k"`, `s3cretToken==`, `s3cret!Token="a"`, `s3cretToken="a"s3cretToken`, `s3cretToken="a`,
		`keyId="k",headers="@request-target date",signature="%%%"`, "keyId=\"k\",\theaders=\"a\tb\"",
	} {
		f.Add(s)
	}
	p := newTestHMAC(f, HMACAuthConfig{ClockSkew: localPtr(0)})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "k", Secret: "s"})
	if err != nil {
		f.Fatal(err)
	}
	parseErrors := signatureParseErrors()
	// vocabulary is the text of the fixed reasons: a value found in it is not evidence of a leak.
	vocabulary := strings.Join([]string{"algorithm is not one of " + strings.Join(HMACAlgorithms(), ", "),
		`header "@request-target" not signed`, "neither date nor x-date is signed: cannot check clock skew",
		"headers parameter is empty: the signature covers only the keyId", "keyId or signature missing",
		"algorithm missing", "signature is not base64", "malformed Signature parameters: "}, "\n")
	for e := range parseErrors {
		vocabulary += "\n" + e
	}
	f.Fuzz(func(t *testing.T, params string) {
		got, err := parseSignatureParams(params)
		if err != nil && !parseErrors[err.Error()] {
			t.Fatalf("got error %q, want one of the fixed texts", err)
		}
		if err == nil && strings.Contains(got.keyID, `"`) {
			t.Fatalf("got keyId %q with a quote", got.keyID)
		}
		for _, h := range got.headers {
			if h != strings.ToLower(h) || h == "" {
				t.Fatalf("got header name %q, want it lowercase and non-empty", h)
			}
		}
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header["Authorization"] = []string{"Signature " + params}
		cred, err := p.Extract(context.Background(), r)
		if err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) {
				t.Fatalf("got non-denial error %v", err)
			}
			// The signature, and an algorithm hmac-auth does not know, are the client's bytes.
			for _, v := range []string{got.signature, got.algorithm} {
				if len(v) >= 8 && hmacHash(v) == nil && strings.Contains(d.Reason, v) && !strings.Contains(vocabulary, v) {
					t.Fatalf("got reason %q quoting %q from the header", d.Reason, v)
				}
			}
			return
		}
		if cred == nil {
			t.Fatal("got no credential and no error for a Signature header")
		}
		// Whatever is accepted covers @request-target: it cannot be replayed on another path.
		if !slices.Contains(got.headers, requestTargetHeader) {
			t.Fatalf("got %q accepted without @request-target signed", params)
		}
		if cred.Lookup == bd.Lookup() {
			if err := p.Verify(context.Background(), r, cred, bd); err != nil {
				var d *idp.Denial
				if !errors.As(err, &d) {
					t.Fatalf("got non-denial error %v", err)
				}
			}
		}
	})
}

// FuzzSignHMACRoundTrip checks that what SignHMAC writes parses back to what was signed, with
// the header names lowercased, and that the verifier accepts it.
func FuzzSignHMACRoundTrip(f *testing.F) {
	f.Add("partner", "@request-target date", "GET", "/x?a=1")
	f.Add("k", "@REQUEST-TARGET Date X-Custom", "POST", "/")
	f.Add("k,id", "@request-target  date\tx-custom", "DELETE", "/a%20b")
	f.Add("k=", "date @request-target", "PUT", "/x")
	p := newTestHMAC(f, HMACAuthConfig{})
	f.Fuzz(func(t *testing.T, keyID, headers, method, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n") || method == "" || strings.ContainsAny(method, " \r\n") {
			return
		}
		h := http.Header{"Date": {hmacNow.Format(http.TimeFormat)}, "X-Custom": {"v"}}
		names := strings.Fields(headers)
		out, err := SignHMAC(SignInput{KeyID: keyID, Secret: "s", Method: method, Target: target, Headers: names, Header: h})
		if err != nil {
			return
		}
		got, err := parseSignatureParams(strings.TrimPrefix(out.Authorization, "Signature "))
		if err != nil {
			t.Fatalf("parsing %q: %v", out.Authorization, err)
		}
		if got.keyID != keyID || got.algorithm != "hmac-sha256" || strings.Join(got.headers, " ") != strings.ToLower(strings.Join(names, " ")) {
			t.Fatalf("got %+v back from %q, want keyId %q and headers %q", got, out.Authorization, keyID, names)
		}
		bd, err := p.Compile(idp.BindingSpec{KeyID: keyID, Secret: "s"})
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method, r.RequestURI = method, target
		r.Header = h.Clone()
		r.Header.Set("Authorization", out.Authorization)
		err = hmacCheck(p, r, bd)
		covered := slices.Contains(got.headers, requestTargetHeader) && slices.Contains(got.headers, "date")
		if covered && err != nil {
			t.Fatalf("got %v for %q, want granted", err, out.Authorization)
		}
		if !covered && err == nil {
			t.Fatalf("got %q granted, want refused: it does not cover @request-target and date", out.Authorization)
		}
	})
}

func BenchmarkHMAC(b *testing.B) {
	p := newTestHMAC(b, HMACAuthConfig{})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		b.Fatal(err)
	}
	r := hmacRequest(b, "GET", "/petstore/pets?limit=10", nil, hmacNow, SignInput{KeyID: "partner", Secret: "partner-secret"})
	b.ReportAllocs()
	for b.Loop() {
		if err := hmacCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHMACBody(b *testing.B) {
	p := newTestHMAC(b, HMACAuthConfig{ValidateRequestBody: true})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 4096)
	r := hmacRequest(b, "POST", "/petstore/pets", body, hmacNow, SignInput{KeyID: "partner", Secret: "partner-secret"})
	b.ReportAllocs()
	for b.Loop() {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := hmacCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}
