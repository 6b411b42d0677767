package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawDo sends hand-written request bytes (head lines without the final blank line) to the
// gateway at base over a fresh connection, so that a header can be sent twice exactly as written.
func rawDo(t *testing.T, base string, lines ...string) response {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := strings.Join(lines, "\r\n") + "\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("writing request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// TestDuplicateCredentials: a second credential of a provider (the same header twice, a header
// and a query parameter that disagree, a second Basic or Signature) is refused with that
// provider's invalid message and never reaches the upstream.
func TestDuplicateCredentials(t *testing.T) {
	up := newUpstream(t, nil)
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "basic", "type": "basic-auth" },
    { "name": "jwt", "type": "jwt-auth" },
    { "name": "hmac", "type": "hmac-auth" }
  ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "keys", "key": "alice-key" } ] },
    { "username": "bob", "idps": [ { "idp": "basic", "username": "bob", "password": "bob-pw" } ] },
    { "username": "carol", "idps": [ { "idp": "jwt", "key": "carol", "secret": "carol-jwt-secret" } ] },
    { "username": "dave", "idps": [ { "idp": "hmac", "key_id": "dave", "secret": "dave-hmac-secret" } ] }
  ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": %q } ] } } ]
}`, up.URL))
	path := "/api/pets"
	tok := cliToken(t, "--key", "carol", "--secret", "carol-jwt-secret", "--ttl", "1h")
	other := cliToken(t, "--key", "carol", "--secret", "carol-jwt-secret", "--ttl", "2h")
	sig := signHeaders(t, "--key-id", "dave", "--secret", "dave-hmac-secret", "GET", path)
	sigLines := []string{"Date: " + sig["Date"], "Authorization: " + sig["Authorization"]}

	tests := []struct {
		name     string
		lines    []string
		status   int
		message  string
		consumer string
	}{
		{name: "key: one header", lines: []string{"GET " + path + " HTTP/1.1", "apikey: alice-key"}, status: 200, consumer: "alice"},
		{name: "key: valid header, invalid query", lines: []string{"GET " + path + "?apikey=wrong HTTP/1.1", "apikey: alice-key"},
			status: 401, message: "Invalid API key in request"},
		{name: "key: two headers", lines: []string{"GET " + path + " HTTP/1.1", "apikey: alice-key", "apikey: wrong"},
			status: 401, message: "Invalid API key in request"},
		{name: "key: two query parameters", lines: []string{"GET " + path + "?apikey=alice-key&apikey=alice-key HTTP/1.1"},
			status: 401, message: "Invalid API key in request"},
		{name: "basic: one header", lines: []string{"GET " + path + " HTTP/1.1", "Authorization: " + basic("bob", "bob-pw")}, status: 200, consumer: "bob"},
		{name: "basic: a second Basic header", lines: []string{"GET " + path + " HTTP/1.1",
			"Authorization: " + basic("bob", "bob-pw"), "Authorization: " + basic("mallory", "x")},
			status: 401, message: "Invalid authorization in request"},
		{name: "jwt: one header", lines: []string{"GET " + path + " HTTP/1.1", "Authorization: Bearer " + tok}, status: 200, consumer: "carol"},
		{name: "jwt: header and a different query token", lines: []string{"GET " + path + "?jwt=" + other + " HTTP/1.1", "Authorization: Bearer " + tok},
			status: 401, message: "JWT token invalid"},
		{name: "jwt: header and a different cookie", lines: []string{"GET " + path + " HTTP/1.1", "Authorization: Bearer " + tok, "Cookie: jwt=" + other},
			status: 401, message: "JWT token invalid"},
		{name: "hmac: one signature", lines: append([]string{"GET " + path + " HTTP/1.1"}, sigLines...), status: 200, consumer: "dave"},
		{name: "hmac: a second Signature header", lines: append([]string{"GET " + path + " HTTP/1.1"},
			append(sigLines, `Authorization: Signature keyId="dave",algorithm="hmac-sha256",headers="date",signature="AAAA"`)...),
			status: 401, message: "client request can't be validated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.count()
			r := rawDo(t, gw.URL, tt.lines...)
			if r.Status != tt.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, tt.status)
			}
			if tt.message != "" && r.message() != tt.message {
				t.Errorf("message: got %q, want %q", r.message(), tt.message)
			}
			if tt.status != 200 {
				if got := up.count(); got != before {
					t.Errorf("upstream requests: got %d, want %d: a refused request reached the upstream", got, before)
				}
				return
			}
			if got := up.last().Header.Get("X-Consumer-Username"); got != tt.consumer {
				t.Errorf("upstream X-Consumer-Username: got %q, want %q", got, tt.consumer)
			}
		})
	}
}

// decodeJSON decodes a response body into v.
// TestSharedPlaceProviders: two hmac-auth providers (one validating bodies, one not) and two
// key-auth providers on apikey serve their own consumers side by side; a credential is unknown
// only when neither knows it, and explain names the provider that claimed it.
func TestSharedPlaceProviders(t *testing.T) {
	up := newUpstream(t, nil)
	policy := fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [
    { "name": "hmac-body", "type": "hmac-auth", "validate_request_body": true },
    { "name": "hmac-plain", "type": "hmac-auth" },
    { "name": "keys-a", "type": "key-auth" },
    { "name": "keys-b", "type": "key-auth" }
  ],
  "consumers": [
    { "username": "bodyful", "idps": [ { "idp": "hmac-body", "key_id": "bodyful", "secret": "bodyful-secret" } ] },
    { "username": "plain", "idps": [ { "idp": "hmac-plain", "key_id": "plain", "secret": "plain-secret" } ] },
    { "username": "ann", "idps": [ { "idp": "keys-a", "key": "ann-key" } ] },
    { "username": "ben", "idps": [ { "idp": "keys-b", "key": "ben-key" } ] }
  ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": %q } ] } } ]
}`, up.URL)
	gw := startGateway(t, policy)
	path := "/api/pets"
	plainSig := signHeaders(t, "--key-id", "plain", "--secret", "plain-secret", "GET", path)
	bodySig := signHeaders(t, "--key-id", "bodyful", "--secret", "bodyful-secret", "GET", path)
	nobodySig := signHeaders(t, "--key-id", "nobody", "--secret", "x", "GET", path)

	tests := []struct {
		name     string
		header   map[string]string
		status   int
		message  string
		consumer string
	}{
		{name: "hmac: the second provider's keyId", header: plainSig, status: 200, consumer: "plain"},
		{name: "hmac: the first provider's keyId, its body rule applies", header: bodySig, status: 401, message: "client request can't be validated"},
		{name: "hmac: a keyId neither knows", header: nobodySig, status: 401, message: "client request can't be validated"},
		{name: "key: the first provider's key", header: map[string]string{"apikey": "ann-key"}, status: 200, consumer: "ann"},
		{name: "key: the second provider's key", header: map[string]string{"apikey": "ben-key"}, status: 200, consumer: "ben"},
		{name: "key: a key neither knows", header: map[string]string{"apikey": "no-key"}, status: 401, message: "Invalid API key in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "GET", gw.URL+path, tt.header)
			if r.Status != tt.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, tt.status)
			}
			if tt.message != "" && r.message() != tt.message {
				t.Errorf("message: got %q, want %q", r.message(), tt.message)
			}
			if tt.consumer != "" {
				if got := up.last().Header.Get("X-Consumer-Username"); got != tt.consumer {
					t.Errorf("upstream X-Consumer-Username: got %q, want %q", got, tt.consumer)
				}
			}
		})
	}

	t.Run("explain names the provider that claimed the credential", func(t *testing.T) {
		p := writeTemp(t, "policy.json", policy)
		stdout, _, code := runCLI(t, "", "explain", "-c", p, "-H", "apikey: ben-key", "GET", path)
		if code != 0 || !strings.Contains(stdout, "keys-a: not in this provider's index; claimed by keys-b") {
			t.Errorf("explain: exit %d, output:\n%s\nwant exit 0 and keys-b named as the claimer", code, stdout)
		}
	})
}

// TestBasicAuthUnknownScheme: with basic-auth and jwt-auth on Authorization, a header of a
// scheme neither reads is "Invalid authorization in request" (APISIX's answer), while jwt-auth's
// Bearer tokens on the same header keep working.
func TestBasicAuthUnknownScheme(t *testing.T) {
	up := newUpstream(t, nil)
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "basic", "type": "basic-auth" }, { "name": "jwt", "type": "jwt-auth" } ],
  "consumers": [
    { "username": "bob", "idps": [ { "idp": "basic", "username": "bob", "password": "bob-pw" } ] },
    { "username": "carol", "idps": [ { "idp": "jwt", "key": "carol", "secret": "carol-jwt-secret" } ] }
  ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": %q } ] } } ]
}`, up.URL))
	tok := cliToken(t, "--key", "carol", "--secret", "carol-jwt-secret", "--ttl", "1h")
	tests := []struct {
		name, authorization string
		status              int
		message             string
	}{
		{name: "unknown scheme", authorization: "Bad_header YmFyOmJhcgo=", status: 401, message: "Invalid authorization in request"},
		{name: "Basic", authorization: basic("bob", "bob-pw"), status: 200},
		{name: "a Bearer token for jwt-auth", authorization: "Bearer " + tok, status: 200},
		{name: "a Bearer value that is not a token", authorization: "Bearer not-a-token", status: 401, message: "Missing authorization in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "GET", gw.URL+"/api/x", map[string]string{"Authorization": tt.authorization})
			if r.Status != tt.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, tt.status)
			}
			if tt.message != "" && r.message() != tt.message {
				t.Errorf("message: got %q, want %q", r.message(), tt.message)
			}
		})
	}
}

// TestChallengePerRoute: the 401 of a request without credentials challenges with the providers
// that can admit a consumer on that route: a browser is asked for a password only where
// basic-auth can let someone in.
func TestChallengePerRoute(t *testing.T) {
	up := newUpstream(t, nil)
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "apikeys", "type": "key-auth" }, { "name": "basic", "type": "basic-auth" }, { "name": "jwt", "type": "jwt-auth" } ],
  "consumers": [
    { "username": "bot", "idps": [ { "idp": "apikeys", "key": "bot-key" } ] },
    { "username": "alice", "idps": [ { "idp": "basic", "username": "alice", "password": "pw" } ] },
    { "username": "carol", "idps": [ { "idp": "jwt", "key": "carol", "secret": "carol-secret" } ] }
  ],
  "routes": [
    { "name": "machines", "paths": ["/machines"], "consumers": { "allow": ["bot", "carol"] }, "upstream": { "targets": [ { "url": %[1]q } ] } },
    { "name": "portal", "paths": ["/portal"], "consumers": { "allow": ["alice"] }, "upstream": { "targets": [ { "url": %[1]q } ] } },
    { "name": "any", "paths": ["/any"], "upstream": { "targets": [ { "url": %[1]q } ] } }
  ]
}`, up.URL))
	tests := []struct {
		path, challenge, message string
	}{
		{path: "/machines", challenge: `apikey realm="apikeys", Bearer realm="jwt"`, message: "Missing API key in request"},
		{path: "/portal", challenge: `Basic realm="basic"`, message: "Missing authorization in request"},
		{path: "/any", challenge: `apikey realm="apikeys", Basic realm="basic", Bearer realm="jwt"`, message: "Missing API key in request"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := rawDo(t, gw.URL, "GET "+tt.path+" HTTP/1.1")
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("got %d %s, want 401", r.Status, r.Body)
			}
			if got := r.Header.Values("Www-Authenticate"); len(got) != 1 || got[0] != tt.challenge {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.challenge)
			}
			if r.message() != tt.message {
				t.Errorf("message: got %q, want %q", r.message(), tt.message)
			}
		})
	}
}
