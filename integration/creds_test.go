package integration

import (
	"bufio"
	"encoding/json"
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
func decodeJSON(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
}
