package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/idp/local"
)

// bodyUpstream is an upstream that records the bodies it receives.
type bodyUpstream struct {
	*upstream
	mu     sync.Mutex
	bodies []string
}

func newBodyUpstream(t *testing.T) *bodyUpstream {
	t.Helper()
	u := &bodyUpstream{}
	u.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(b))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"consumer":%q}`, r.Header.Get("X-Consumer-Username"))
	})
	return u
}

func (u *bodyUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bodies...)
}

// doBody sends a request with a body through the gateway.
func doBody(t *testing.T, method, url, body string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// TestHMACReplay replays captured hmac-auth requests with another body through the built binary
// (issue 11 item 7): with validate_request_body, a signature that does not cover Digest is
// refused by default, so that whoever captured it cannot send another body with that body's
// Digest; a signature that covers Digest holds its body. The compat "apisix-loose" opt-in
// accepts what APISIX accepts.
func TestHMACReplay(t *testing.T) {
	const path = "/api/transfer"
	policy := func(compat string) string {
		return fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "hmac", "type": "hmac-auth", "validate_request_body": true%s } ],
  "consumers": [ { "username": "carol", "idps": [ { "idp": "hmac", "key_id": "carol", "secret": "carol-hmac-secret" } ] } ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "methods": ["POST"], "upstream": { "targets": [ { "url": %%q } ] } } ]
}`, compat)
	}
	original, forged := `{"to":"bob","amount":1}`, `{"to":"mallory","amount":1000}`
	bodyFile := writeTemp(t, "body.json", original)
	// What a client signing as APISIX's documentation shows sends: Digest present, not signed.
	unsignedDigest := signHeaders(t, "--key-id", "carol", "--secret", "carol-hmac-secret",
		"--headers", "@request-target date", "--body", bodyFile, "POST", path)
	// The CLI's default with a body signs Digest too.
	signedDigest := signHeaders(t, "--key-id", "carol", "--secret", "carol-hmac-secret", "--body", bodyFile, "POST", path)
	if !strings.Contains(signedDigest["Authorization"], `headers="@request-target date digest"`) {
		t.Fatalf("sign --body: got %q, want Digest signed", signedDigest["Authorization"])
	}
	withDigest := func(h map[string]string, body string) map[string]string {
		return merge(h, map[string]string{"Digest": local.BodyDigest([]byte(body))})
	}

	t.Run("strict", func(t *testing.T) {
		up := newBodyUpstream(t)
		gw := startGateway(t, fmt.Sprintf(policy(""), up.URL))
		tests := []struct {
			name, body string
			header     map[string]string
			status     int
		}{
			{name: "unsigned digest, original body", body: original, header: unsignedDigest, status: 401},
			{name: "unsigned digest, replayed with another body and its digest", body: forged, header: withDigest(unsignedDigest, forged), status: 401},
			{name: "signed digest, original body", body: original, header: signedDigest, status: 200},
			{name: "signed digest, replayed with another body and its digest", body: forged, header: withDigest(signedDigest, forged), status: 401},
			{name: "signed digest, replayed with another body", body: forged, header: signedDigest, status: 401},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := doBody(t, "POST", gw.URL+path, tt.body, tt.header)
				if r.Status != tt.status {
					t.Fatalf("got %d %s, want %d", r.Status, r.Body, tt.status)
				}
				if r.Status == 401 {
					if got, want := r.Header.Get("WWW-Authenticate"), `hmac realm="hmac"`; got != want {
						t.Errorf("got WWW-Authenticate %q, want %q (APISIX's)", got, want)
					}
					if got, want := r.message(), "client request can't be validated"; got != want {
						t.Errorf("got message %q, want %q", got, want)
					}
				}
			})
		}
		if got := up.seen(); len(got) != 1 || got[0] != original {
			t.Errorf("upstream got bodies %q, want only the original %q", got, original)
		}
	})

	t.Run("apisix-loose", func(t *testing.T) {
		up := newBodyUpstream(t)
		gw := startGateway(t, fmt.Sprintf(policy(`, "compat": "apisix-loose"`), up.URL))
		if r := doBody(t, "POST", gw.URL+path, original, unsignedDigest); r.Status != 200 {
			t.Fatalf("unsigned digest: got %d %s, want 200 (what APISIX accepts)", r.Status, r.Body)
		}
		// The digest is still compared with the body.
		if r := doBody(t, "POST", gw.URL+path, forged, unsignedDigest); r.Status != 401 {
			t.Fatalf("another body: got %d %s, want 401", r.Status, r.Body)
		}
	})
}

// TestHMACReasonsInTheAccessLog sends malformed and hostile Signature headers through the built
// binary and checks that the access log's reason never carries their bytes (issue 11).
func TestHMACReasonsInTheAccessLog(t *testing.T) {
	const marker = "s3cretMARKER"
	up := newUpstream(t, nil)
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "hmac", "type": "hmac-auth" } ],
  "consumers": [ { "username": "carol", "idps": [ { "idp": "hmac", "key_id": "carol", "secret": "carol-hmac-secret" } ] } ],
  "routes": [ { "name": "api", "paths": ["/api/{rest:.*}"], "upstream": { "targets": [ { "url": %q } ] } } ]
}`, up.URL))
	for _, auth := range []string{
		"Signature " + marker + "==",
		"Signature " + marker + "=x",
		`Signature keyId="carol",algorithm="` + marker + `",headers="@request-target date",signature="c2ln"`,
		`Signature keyId="carol",algorithm="hmac-sha256",headers="@request-target date",signature="` + marker + `"`,
		`Signature keyId="carol" ` + marker,
	} {
		r := do(t, "GET", gw.URL+"/api/x", map[string]string{"Authorization": auth, "Date": "Fri, 06 Sep 2024 06:41:29 GMT"})
		if r.Status != 401 {
			t.Fatalf("%s: got %d %s, want 401", auth, r.Status, r.Body)
		}
	}
	logs := gw.stdout.String() + gw.stderr.String()
	if !strings.Contains(logs, "malformed Signature parameters") {
		t.Fatalf("got access log\n%s\nwant the refusals' reasons in it", logs)
	}
	if strings.Contains(strings.ToLower(logs), strings.ToLower(marker)) {
		t.Errorf("got a log line with the credential's bytes %q:\n%s", marker, logs)
	}
}
