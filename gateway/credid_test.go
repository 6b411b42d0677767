package gateway

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/policies"
)

// TestCredentialIdentifier: X-Credential-Identifier is a binding's id when set, otherwise
// "<idp>:<name>" with the binding's public name (the consumer's for key-auth, whose key is secret).
func TestCredentialIdentifier(t *testing.T) {
	gw, _ := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" }, { "name": "basic", "type": "basic-auth" } ],
  "consumers": [
    { "username": "bot", "idps": [ { "idp": "keys", "key": "bot-key" } ] },
    { "username": "tagged", "idps": [ { "idp": "keys", "key": "tagged-key", "id": "cred-42" } ] },
    { "username": "alice", "idps": [ { "idp": "basic", "username": "alice-login", "password": "pw" } ] }
  ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Id", r.Header.Get("X-Credential-Identifier"))
	})
	tests := []struct {
		name, header, value, want string
	}{
		{name: "key-auth default", header: "apikey", value: "bot-key", want: "keys:bot"},
		{name: "key-auth with id", header: "apikey", value: "tagged-key", want: "cred-42"},
		{name: "basic-auth default", header: "Authorization", value: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice-login:pw")), want: "basic:alice-login"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/r", nil)
			r.Header.Set(tt.header, tt.value)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", w.Code, w.Body)
			}
			if got := w.Header().Get("X-Seen-Id"); got != tt.want {
				t.Errorf("X-Credential-Identifier: got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCredentialIDValidated: an id that is not a plain header value (a space; a line break
// through a secret reference) is a positioned policy error.
func TestCredentialIDValidated(t *testing.T) {
	for name, id := range map[string]string{"space": "cred 42", "line break by reference": "${env:CRED_ID}"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.json")
			policy := `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "bot", "idps": [ { "idp": "keys", "key": "bot-key", "id": "` + id + `" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`
			if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
				t.Fatal(err)
			}
			env := func(string) (string, bool) { return "cred\r\nX-Consumer-Username: admin", true }
			errs := policies.Errors(policies.Validate(path, policies.Options{LookupEnv: env}))
			if len(errs) != 1 || errs[0].Path != "$.consumers[0].idps[0].id" || !strings.Contains(errs[0].Msg, "X-Credential-Identifier") {
				t.Fatalf("got %v, want one error at $.consumers[0].idps[0].id", errs)
			}
		})
	}
}
