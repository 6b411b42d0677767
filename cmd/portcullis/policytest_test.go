package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testPolicy has a provider of every offline kind, a chain, allow and deny lists, limits by
// consumer and by client address, and an oidc provider (which test cannot ask offline).
func testPolicy(t *testing.T, ecPublic string) string {
	t.Helper()
	pub, _ := json.Marshal(ecPublic)
	return fmt.Sprintf(`{
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "basic", "type": "basic-auth" },
    { "name": "jwt", "type": "jwt-auth" },
    { "name": "hmac", "type": "hmac-auth", "validate_request_body": true },
    { "name": "corp", "type": "oidc", "issuer": "https://id.example", "header": "X-Corp-Token" }
  ],
  "consumer_groups": [ { "name": "staff" } ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "keys", "key": "alice-key" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } },
    { "username": "bob", "group": "staff", "idps": [ { "idp": "basic", "username": "bob", "password": "bob-pw" } ] },
    { "username": "carol", "idps": [ { "idp": "jwt", "key": "carol", "secret": "carol-jwt-secret-of-32-bytes-min" } ] },
    { "username": "erin", "idps": [ { "idp": "jwt", "key": "erin", "public_key": %s, "algorithm": "ES256" } ] },
    { "username": "dave", "idps": [ { "idp": "hmac", "key_id": "dave", "secret": "dave-hmac-secret" } ] },
    { "username": "partner", "idps": [ { "idp": "keys", "key": "partner-key" },
                                       { "idp": "hmac", "key_id": "partner", "secret": "partner-hmac-secret" } ] },
    { "username": "mallory", "idps": [ { "idp": "keys", "key": "mallory-key" } ] },
    { "username": "olivia", "idps": [ { "idp": "corp", "subject": "olivia" } ] }
  ],
  "routes": [
    { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": "http://127.0.0.1:9" } ] },
      "consumers": { "deny": ["mallory"] } },
    { "name": "staff", "paths": ["/staff"], "upstream": { "targets": [ { "url": "http://127.0.0.1:9" } ] },
      "consumer_groups": { "allow": ["staff"] },
      "plugins": { "limit-req": { "rate": 1, "burst": 0, "key": "remote_addr" } } }
  ]
}`, pub)
}

// ecKeys returns a P-256 private key and its public key, PEM-encoded.
func ecKeys(t *testing.T) (private, public string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCmd runs the CLI and returns its exit code and output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	var ee exitError
	switch {
	case errors.As(err, &ee):
		code = int(ee)
	case err != nil:
		code = 1
		errb.WriteString(err.Error())
	}
	return code, out.String(), errb.String()
}

func TestPolicyTestCases(t *testing.T) {
	private, public := ecKeys(t)
	dir := t.TempDir()
	policy := writeFile(t, dir, "policy.json", testPolicy(t, public))
	privJSON, _ := json.Marshal(private)
	t.Setenv("PORTCULLIS_TEST_DAVE", "dave-hmac-secret")

	tests := []struct {
		name string
		// c is the case, a JSON object.
		c    string
		pass bool
		// want are in stdout (for a failing case: the difference and the trace).
		want []string
	}{
		{name: "no credential", c: `{"request": {"url": "/api/x"}, "expect": {"status": 401, "step": "authenticate", "route": "api"}}`, pass: true},
		{name: "apikey", c: `{"request": {"url": "/api/x", "apikey": "alice-key"},
			"expect": {"status": 200, "consumer": "alice", "step": "proxy",
			           "headers": {"X-Consumer-Username": "alice", "X-Credential-Identifier": "keys:alice", "X-RateLimit-Remaining": "0"}}}`, pass: true},
		{name: "apikey in a header", c: `{"request": {"url": "/api/x", "headers": {"apikey": "alice-key"}}, "expect": {"status": 200, "consumer": "alice"}}`, pass: true},
		{name: "limit after 1", c: `{"request": {"url": "/api/x", "apikey": "alice-key"}, "after": 1,
			"expect": {"status": 429, "step": "limit", "headers": {"X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0"}}}`, pass: true},
		{name: "limits start fresh in each case", c: `{"request": {"url": "/api/x", "apikey": "alice-key"}, "expect": {"status": 200}}`, pass: true},
		{name: "basic", c: `{"request": {"url": "/staff", "basic": {"user": "bob", "password": "bob-pw"}},
			"expect": {"status": 200, "consumer": "bob", "route": "staff", "headers": {"X-Consumer-Groups": "staff"}}}`, pass: true},
		{name: "basic wrong password", c: `{"request": {"url": "/staff", "basic": {"user": "bob", "password": "nope"}},
			"expect": {"status": 401, "step": "authenticate"}}`, pass: true},
		{name: "limit by remote address", c: `{"request": {"url": "/staff", "basic": {"user": "bob", "password": "bob-pw"}, "remote_addr": "10.0.0.1"},
			"after": 1, "expect": {"status": 503, "step": "limit"}}`, pass: true},
		{name: "jwt secret", c: `{"request": {"url": "/api/x", "jwt": {"claims": {"key": "carol"}, "secret": "carol-jwt-secret-of-32-bytes-min"}},
			"expect": {"status": 200, "consumer": "carol", "headers": {"X-Credential-Identifier": "jwt:carol"}}}`, pass: true},
		{name: "jwt private key", c: `{"request": {"url": "/api/x", "jwt": {"claims": {"key": "erin", "role": "admin"}, "private_key": ` + string(privJSON) + `}},
			"expect": {"status": 200, "consumer": "erin"}}`, pass: true},
		{name: "jwt expired", c: `{"request": {"url": "/api/x", "jwt": {"claims": {"key": "carol", "exp": 1000}, "secret": "carol-jwt-secret-of-32-bytes-min"}},
			"expect": {"status": 401}}`, pass: true},
		{name: "hmac with a body and an env secret", c: `{"request": {"method": "POST", "url": "/api/orders", "body": "{}",
			"hmac": {"key_id": "dave", "secret": "${env:PORTCULLIS_TEST_DAVE}", "algorithm": "hmac-sha512"}},
			"expect": {"status": 200, "consumer": "dave"}}`, pass: true},
		{name: "hmac wrong secret", c: `{"request": {"url": "/api/x", "hmac": {"key_id": "dave", "secret": "wrong"}}, "expect": {"status": 401}}`, pass: true},
		{name: "chain: both", c: `{"request": {"url": "/api/x", "apikey": "partner-key", "hmac": {"key_id": "partner", "secret": "partner-hmac-secret"}},
			"expect": {"status": 200, "consumer": "partner", "headers": {"X-Credential-Identifier": "keys:partner"}}}`, pass: true},
		{name: "chain: key only", c: `{"request": {"url": "/api/x", "apikey": "partner-key"}, "expect": {"status": 401, "consumer": ""}}`, pass: true},
		{name: "chain: another consumer's signature", c: `{"request": {"url": "/api/x", "apikey": "partner-key", "hmac": {"key_id": "dave", "secret": "dave-hmac-secret"}},
			"expect": {"status": 401}}`, pass: true},
		{name: "deny list", c: `{"request": {"url": "/api/x", "apikey": "mallory-key"}, "expect": {"status": 403, "consumer": "mallory", "step": "authorize"}}`, pass: true},
		{name: "group allow list", c: `{"request": {"url": "/staff", "apikey": "alice-key"}, "expect": {"status": 403, "step": "authorize"}}`, pass: true},
		{name: "no route", c: `{"request": {"url": "http://other.example/nope"}, "expect": {"status": 404, "route": "", "step": "match"}}`, pass: true},
		{name: "oidc without a token is decided offline", c: `{"request": {"url": "/api/x"}, "expect": {"status": 401}}`, pass: true},

		{name: "wrong status", c: `{"request": {"url": "/api/x", "apikey": "alice-key"}, "after": 1, "expect": {"status": 200, "consumer": "alice"}}`,
			want: []string{`"wrong status": status: got 429, want 200`, "after 1 identical request(s)", "FAIL limit", "exceeded", `=> 429 {"message":"Too Many Requests"}`}},
		{name: "wrong consumer and step", c: `{"request": {"url": "/api/x", "apikey": "alice-key"}, "expect": {"status": 200, "consumer": "bob", "step": "limit"}}`,
			want: []string{`consumer: got "alice", want "bob"; step: got proxy, want limit`, "=> allowed (200; the upstream is not called)"}},
		{name: "wrong header", c: `{"request": {"url": "/api/x", "apikey": "alice-key"}, "expect": {"status": 200, "headers": {"x-consumer-username": "bob"}}}`,
			want: []string{`header X-Consumer-Username: got "alice", want "bob"`}},
		{name: "wrong route", c: `{"request": {"url": "/nope"}, "expect": {"status": 404, "route": "api"}}`,
			want: []string{`route: got "", want "api"`, "no route matches GET /nope"}},
		{name: "oidc token is not supported offline", c: `{"request": {"url": "/api/x", "headers": {"X-Corp-Token": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJodHRwczovL2lkLmV4YW1wbGUiLCJzdWIiOiJvbGl2aWEifQ.c2ln"}},
			"expect": {"status": 200, "consumer": "olivia"}}`,
			want: []string{`not supported offline yet: idp "corp" (oidc)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c map[string]any
			if err := json.Unmarshal([]byte(tt.c), &c); err != nil {
				t.Fatalf("case is not JSON: %v", err)
			}
			c["name"] = tt.name
			b, _ := json.Marshal(map[string]any{"tests": []any{c}})
			file := writeFile(t, t.TempDir(), "case.test.json", string(b))
			code, stdout, stderr := runCmd(t, "test", "-c", policy, file)
			wantCode, wantSummary := 1, "0 passed, 1 failed"
			if tt.pass {
				wantCode, wantSummary = 0, "1 passed, 0 failed"
			}
			if code != wantCode || !strings.Contains(stdout, wantSummary) {
				t.Fatalf("got exit %d, want %d and %q\nstdout: %s\nstderr: %s", code, wantCode, wantSummary, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestPolicyTestExamplePasses(t *testing.T) {
	policy := filepath.Join("..", "..", "examples", "petstore.json")
	file := filepath.Join("..", "..", "examples", "tests", "petstore.test.json")
	code, stdout, stderr := runCmd(t, "test", "-c", policy, file)
	if code != 0 || stdout != "7 passed, 0 failed\n" {
		t.Errorf("got exit %d, stdout %q, stderr %q; want 0 and \"7 passed, 0 failed\"", code, stdout, stderr)
	}
}

func TestPolicyTestJUnit(t *testing.T) {
	policy := filepath.Join("..", "..", "examples", "petstore.json")
	dir := t.TempDir()
	file := writeFile(t, dir, "p.test.json", `{"tests": [
  {"name": "ok", "request": {"url": "/petstore"}, "expect": {"status": 401}},
  {"name": "bad <&>", "request": {"url": "/petstore", "apikey": "bot-key"}, "expect": {"status": 403}}
]}`)
	broken := writeFile(t, dir, "broken.test.json", `{"tests": []}`)
	code, stdout, stderr := runCmd(t, "test", "-c", policy, "-format", "junit", file, broken)
	if code != 1 {
		t.Fatalf("got exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	var got junitSuites
	if err := xml.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not XML: %v\n%s", err, stdout)
	}
	if got.Tests != 3 || got.Failures != 1 || got.Errors != 1 || len(got.Suites) != 2 {
		t.Fatalf("got tests %d, failures %d, errors %d, %d suites; want 3, 1, 1, 2\n%s", got.Tests, got.Failures, got.Errors, len(got.Suites), stdout)
	}
	s := got.Suites[0]
	if s.Name != file || len(s.Cases) != 2 || s.Cases[0].Failure != nil || s.Cases[1].Failure == nil {
		t.Fatalf("got suite %+v, want %s with case 2 failing", s, file)
	}
	if f := s.Cases[1]; f.Name != "bad <&>" || f.Failure.Message != "status: got 200, want 403" || !strings.Contains(f.Failure.Text, "ok   limit") {
		t.Errorf("got failing case %q: %q\n%s", f.Name, f.Failure.Message, f.Failure.Text)
	}
	if e := got.Suites[1].Cases[0].Error; e == nil || !strings.Contains(e.Text, "$.tests: needs at least 1") && !strings.Contains(e.Text, "$.tests") {
		t.Errorf("got the broken file's error %+v, want it located at $.tests", e)
	}
	if !strings.Contains(stderr, "1 passed, 1 failed, 1 file(s) with errors") {
		t.Errorf("stderr lacks the summary: %s", stderr)
	}
}

func TestPolicyTestUsage(t *testing.T) {
	petstore := filepath.Join("..", "..", "examples", "petstore.json")
	file := filepath.Join("..", "..", "examples", "tests", "petstore.test.json")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no -c", []string{"test", file}, 2, "missing -c PATH"},
		{"no file", []string{"test", "-c", petstore}, 2, "missing the test FILE"},
		{"bad format", []string{"test", "-c", petstore, "-format", "tap", file}, 2, `-format: got "tap", want text or junit`},
		{"policy does not load", []string{"test", "-c", "nope.json", file}, 1, "loading policy nope.json"},
		{"missing test file", []string{"test", "-c", petstore, "nope.test.json"}, 1, "nope.test.json: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("got exit %d, stderr %q (stdout %q); want %d and %q", code, stderr, stdout, tt.wantCode, tt.wantStderr)
			}
		})
	}
}

func TestParseTestFileErrors(t *testing.T) {
	env := func(name string) (string, bool) {
		if name == "SET" {
			return "value", true
		}
		return "", false
	}
	tests := []struct {
		name string
		file string
		want []string
	}{
		{name: "not JSON", file: "{\n  \"tests\": [,]\n}", want: []string{"f.json:2:13: invalid JSON"}},
		{name: "unknown fields", file: `{
  "tests": [
    { "name": "a", "request": { "url": "/", "colour": "red" }, "expect": { "status": 200, "stauts": 1 } }
  ],
  "extra": true
}`, want: []string{
			`f.json:3:45: $.tests[0].request.colour: unknown field "colour"`,
			`f.json:3:91: $.tests[0].expect.stauts: unknown field "stauts"`,
			`f.json:5:3: $.extra: unknown field "extra"`}},
		{name: "missing and wrong types", file: `{"tests": [{"name": "a", "request": {"url": "/", "headers": {"X": 1}}, "after": -1, "expect": {"step": "sideways"}}]}`, want: []string{
			`f.json:1:67: $.tests[0].request.headers.X: got number, want string`,
			`f.json:1:81: $.tests[0].after: minimum: got -1, want 0`,
			`f.json:1:95: $.tests[0].expect: missing required field "status"`,
			`f.json:1:104: $.tests[0].expect.step: got "sideways", want one of "match"`}},
		{name: "env", file: `{"tests": [{"name": "a", "request": {"url": "/", "apikey": "${env:UNSET}", "basic": {"user": "u", "password": "${env:SET}"}}, "expect": {"status": 200}}]}`,
			want: []string{`f.json:1:60: $.tests[0].request.apikey: environment variable UNSET is not set`}},
		{name: "bad reference", file: `{"tests": [{"name": "a", "request": {"url": "/", "apikey": "${file:/etc/x}"}, "expect": {"status": 200}}]}`,
			want: []string{`$.tests[0].request.apikey: unknown reference ${file:/etc/x}: want ${env:NAME}`}},
		{name: "semantic", file: `{"tests": [
  {"name": "a", "request": {"url": "/", "remote_addr": "nowhere", "jwt": {"claims": {}}}, "expect": {"status": 200}},
  {"name": "a", "request": {"url": "/"}, "expect": {"status": 200}}
]}`, want: []string{
			`f.json:2:56: $.tests[0].request.remote_addr: got "nowhere", want an IP address or HOST:PORT`,
			`f.json:2:74: $.tests[0].request.jwt: give exactly one of secret and private_key`,
			`f.json:3:12: $.tests[1].name: duplicate case name "a" (first at line 2)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTestFile("f.json", []byte(tt.file), env)
			if err == nil {
				t.Fatalf("got no error, want %q", tt.want)
			}
			got := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors lack %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestParseTestFileEnv(t *testing.T) {
	env := func(name string) (string, bool) { return map[string]string{"K": "bot-key"}[name], name == "K" }
	tf, err := parseTestFile("f.json", []byte(`{"tests": [
  {"name": "a", "request": {"url": "/", "apikey": "${env:K}", "body": "$${env:K}"}, "expect": {"status": 200}}
]}`), env)
	if err != nil {
		t.Fatal(err)
	}
	r := tf.Tests[0].Request
	if r.APIKey != "bot-key" || r.Body != "${env:K}" || tf.Tests[0].line != 2 {
		t.Errorf("got apikey %q, body %q, line %d; want bot-key, ${env:K}, 2", r.APIKey, r.Body, tf.Tests[0].line)
	}
}

func TestRemoteAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "127.0.0.1:40000"},
		{"10.0.0.1", "10.0.0.1:40000"},
		{"10.0.0.1:5000", "10.0.0.1:5000"},
		{"::1", "[::1]:40000"},
		{"[::1]", "[::1]:40000"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := remoteAddr(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestTestSchemaIsPublishable(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(testSchemaJSON, &doc); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if got := doc["$id"]; got != testSchemaURL {
		t.Errorf("$id: got %v, want %s", got, testSchemaURL)
	}
	if _, err := testSchema(); err != nil {
		t.Errorf("the schema does not compile: %v", err)
	}
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "tests", "petstore.test.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ex map[string]any
	if err := json.Unmarshal(example, &ex); err != nil || ex["$schema"] != testSchemaURL {
		t.Errorf("the example's $schema: got %v (%v), want %s", ex["$schema"], err, testSchemaURL)
	}
}

// TestPolicyTestOIDCOffline: oidc and keycloak cases run offline with tokens signed by the
// file's issuer_key, which the providers find in their issuers' JWKS, served in process.
func TestPolicyTestOIDCOffline(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rk)
	if err != nil {
		t.Fatal(err)
	}
	// RS256: the providers' default, and an algorithm is pinned per provider.
	private := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	dir := t.TempDir()
	policy := writeFile(t, dir, "policy.json", `{
  "idps": [ { "name": "corp", "type": "keycloak", "url": "https://sso.example.com", "realm": "corp", "client_id": "gateway" },
            { "name": "partner", "type": "oidc", "issuer": "https://id.partner.example", "audience": "portcullis", "header": "X-Partner-Token" } ],
  "consumers": [
    { "username": "FetchBot", "idps": [ { "idp": "corp", "subject": "fetch-bot" } ] },
    { "username": "People", "idps": [ { "idp": "corp", "realm_roles": ["api-user"] } ] },
    { "username": "Partner", "idps": [ { "idp": "partner", "subject": "svc-1" } ] }
  ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`)
	key, _ := json.Marshal(private)
	tests := []struct {
		name string
		c    string
		pass bool
	}{
		{name: "a person by claims", pass: true,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "alice", "realm_access": {"roles": ["api-user"]}}}},
			     "expect": {"status": 200, "consumer": "People", "headers": {"X-Consumer-Subject": "alice"}}}`},
		{name: "an exact subject", pass: true,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "fetch-bot", "realm_access": {"roles": ["api-user"]}}}},
			     "expect": {"status": 200, "consumer": "FetchBot"}}`},
		{name: "no role", pass: true,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "eve"}}}, "expect": {"status": 403}}`},
		{name: "expired", pass: true,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "alice", "exp": 1000}}}, "expect": {"status": 401}}`},
		{name: "a generic oidc provider in its own header", pass: true,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "partner", "claims": {"sub": "svc-1"}}}, "expect": {"status": 200, "consumer": "Partner"}}`},
		{name: "a wrong expectation fails", pass: false,
			c: `{"request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "alice", "realm_access": {"roles": ["api-user"]}}}}, "expect": {"status": 403}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, t.TempDir(), "cases.json", `{"issuer_key": {"private_key": `+string(key)+`}, "tests": [`+
				strings.Replace(tt.c, `{"request"`, `{"name": "case", "request"`, 1)+`]}`)
			code, out, stderr := runCmd(t, "test", "-c", policy, file)
			if got := code == 0; got != tt.pass {
				t.Errorf("exit %d, want pass %v:\n%s%s", code, tt.pass, out, stderr)
			}
		})
	}
	t.Run("without issuer_key an oidc credential is an error", func(t *testing.T) {
		file := writeFile(t, t.TempDir(), "cases.json", `{"tests": [{"name": "c", "request": {"url": "/api/x", "oidc": {"idp": "corp", "claims": {"sub": "a"}}}, "expect": {"status": 200}}]}`)
		code, out, _ := runCmd(t, "test", "-c", policy, file)
		if code != 1 || !strings.Contains(out, "needs the file's issuer_key") {
			t.Errorf("exit %d:\n%s\nwant 1 naming issuer_key", code, out)
		}
	})
}
