package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// signHeaders runs `portcullis sign` and returns the header lines it prints.
func signHeaders(t *testing.T, args ...string) map[string]string {
	t.Helper()
	out, stderr, code := runCLI(t, "", append([]string{"sign"}, args...)...)
	if code != 0 {
		t.Fatalf("portcullis sign: exit %d: %s", code, stderr)
	}
	h := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("sign printed %q, want Name: value lines", line)
		}
		h[name] = value
	}
	return h
}

func cliToken(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := runCLI(t, "", append([]string{"token"}, args...)...)
	if code != 0 {
		t.Fatalf("portcullis token: exit %d: %s", code, stderr)
	}
	return strings.TrimSpace(out)
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestLocalProvidersAndChain drives every local provider and the chain rule through the real
// binary, with credentials made by the CLI helpers as a client would.
func TestLocalProvidersAndChain(t *testing.T) {
	up := newUpstream(t, nil)
	out, stderr, code := runCLI(t, "s3cret-pass\n", "hash-password")
	if code != 0 {
		t.Fatalf("hash-password: exit %d: %s", code, stderr)
	}
	hash := strings.TrimSpace(out)
	if !strings.HasPrefix(hash, "$2") {
		t.Fatalf("hash-password printed %q, want a bcrypt hash", hash)
	}

	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "second-keys", "type": "key-auth", "header": "X-Partner-Key" },
    { "name": "basic", "type": "basic-auth" },
    { "name": "jwt", "type": "jwt-auth" },
    { "name": "hmac", "type": "hmac-auth", "clock_skew": 300 }
  ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "basic", "username": "alice", "password": %q } ] },
    { "username": "bob", "idps": [ { "idp": "jwt", "key": "bob-jwt", "secret": "bob-jwt-secret", "algorithm": "HS256" } ] },
    { "username": "carol", "idps": [ { "idp": "hmac", "key_id": "carol", "secret": "carol-hmac-secret" } ] },
    { "username": "Partner", "idps": [ { "idp": "keys", "key": "partner-key" },
                                      { "idp": "hmac", "key_id": "partner", "secret": "partner-hmac-secret" } ] },
    { "username": "TwoKeys", "idps": [ { "idp": "keys", "key": "first-key" }, { "idp": "second-keys", "key": "second-key" } ] },
    { "username": "guest", "plugins": { "limit-count": { "count": 1, "time_window": 60 } } }
  ],
  "routes": [
    { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": %q } ] } },
    { "name": "open", "paths": ["/open"], "anonymous_consumer": "guest", "upstream": { "targets": [ { "url": %q } ] } }
  ]
}`, hash, up.URL, up.URL))
	url := gw.URL + "/api/pets"
	path := "/api/pets"

	bobToken := cliToken(t, "--key", "bob-jwt", "--secret", "bob-jwt-secret", "--ttl", "1h")
	expired := cliToken(t, "--key", "bob-jwt", "--secret", "bob-jwt-secret", "--claim", fmt.Sprintf("exp=%d", time.Now().Add(-time.Hour).Unix()))
	carolSig := signHeaders(t, "--key-id", "carol", "--secret", "carol-hmac-secret", "GET", path)
	partnerSig := signHeaders(t, "--key-id", "partner", "--secret", "partner-hmac-secret", "GET", path)
	staleSig := signHeaders(t, "--key-id", "carol", "--secret", "carol-hmac-secret",
		"--date", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), "GET", path)
	wrongSig := signHeaders(t, "--key-id", "carol", "--secret", "not-carols", "GET", path)

	tests := []struct {
		name     string
		url      string
		header   map[string]string
		status   int
		message  string
		consumer string
	}{
		{name: "basic: right password (bcrypt)", header: map[string]string{"Authorization": basic("alice", "s3cret-pass")}, status: 200, consumer: "alice"},
		{name: "basic: wrong password", header: map[string]string{"Authorization": basic("alice", "nope")}, status: 401, message: "Invalid user authorization"},
		{name: "basic: unknown user", header: map[string]string{"Authorization": basic("zed", "nope")}, status: 401, message: "Invalid user authorization"},
		{name: "basic: undecodable", header: map[string]string{"Authorization": "Basic !!!"}, status: 401, message: "Invalid authorization in request"},
		{name: "jwt: token from the CLI", header: map[string]string{"Authorization": "Bearer " + bobToken}, status: 200, consumer: "bob"},
		{name: "jwt: in the query string", url: url + "?jwt=" + bobToken, status: 200, consumer: "bob"},
		{name: "jwt: expired", header: map[string]string{"Authorization": "Bearer " + expired}, status: 401, message: "failed to verify jwt"},
		{name: "jwt: tampered", header: map[string]string{"Authorization": "Bearer " + bobToken[:len(bobToken)-3] + "AAA"}, status: 401, message: "failed to verify jwt"},
		{name: "hmac: signed by the CLI", header: carolSig, status: 200, consumer: "carol"},
		{name: "hmac: stale date", header: staleSig, status: 401, message: "client request can't be validated"},
		{name: "hmac: wrong secret", header: wrongSig, status: 401, message: "client request can't be validated"},
		{name: "chain: both credentials", header: merge(partnerSig, map[string]string{"apikey": "partner-key"}), status: 200, consumer: "Partner"},
		{name: "chain: second credential missing", header: map[string]string{"apikey": "partner-key"}, status: 401,
			message: "client request can't be validated: missing Authorization header"},
		{name: "chain: credentials of two consumers", header: merge(carolSig, map[string]string{"apikey": "partner-key"}), status: 401,
			message: "credentials belong to different consumers"},
		{name: "chain: a bad credential fails even when not needed", url: url + "?jwt=" + bobToken, header: map[string]string{"apikey": "no-such-key"},
			status: 401, message: "Invalid API key in request"},
		{name: "two key-auth providers: both keys", header: map[string]string{"apikey": "first-key", "X-Partner-Key": "second-key"}, status: 200, consumer: "TwoKeys"},
		{name: "two key-auth providers: one key", header: map[string]string{"apikey": "first-key"}, status: 401, message: "Missing API key in request"},
		{name: "no credential on an authenticated route", status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.url
			if u == "" {
				u = url
			}
			r := do(t, "GET", u, tt.header)
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
			if tt.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("a 401 without WWW-Authenticate")
			}
		})
	}

	t.Run("anonymous consumer with its own limit", func(t *testing.T) {
		if r := do(t, "GET", gw.URL+"/open", nil); r.Status != 200 {
			t.Fatalf("first: got %d %s, want 200", r.Status, r.Body)
		}
		if got := up.last().Header.Get("X-Consumer-Username"); got != "guest" {
			t.Errorf("upstream X-Consumer-Username: got %q, want guest", got)
		}
		if r := do(t, "GET", gw.URL+"/open", nil); r.Status != 429 {
			t.Fatalf("second: got %d, want 429 from guest's limit", r.Status)
		}
		// A caller with credentials is itself, not the guest.
		if r := do(t, "GET", gw.URL+"/open", map[string]string{"Authorization": "Bearer " + bobToken}); r.Status != 200 {
			t.Fatalf("bob on the open route: got %d %s, want 200", r.Status, r.Body)
		}
	})

	t.Run("no secret in the logs", func(t *testing.T) {
		logs := gw.stdout.String() + gw.stderr.String()
		for _, s := range []string{"s3cret-pass", "bob-jwt-secret", "carol-hmac-secret", "partner-hmac-secret", "partner-key", bobToken} {
			if strings.Contains(logs, s) {
				t.Errorf("a log line contains the secret %q", s)
			}
		}
	})

	t.Run("explain names the precise reason", func(t *testing.T) {
		p := writeTemp(t, "policy.json", mustRead(t, gw.PolicyPath))
		args := []string{"explain", "-c", p}
		for k, v := range staleSig {
			args = append(args, "-H", k+": "+v)
		}
		stdout, _, code := runCLI(t, "", append(args, "GET", path)...)
		if code != 1 || !strings.Contains(stdout, "clock skew") {
			t.Errorf("explain of a stale signature: exit %d, output:\n%s\nwant exit 1 and the clock skew reason", code, stdout)
		}
	})
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}
