package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// challengePolicy has key-auth, basic-auth and jwt-auth consumers and routes that admit
// different ones of them.
const challengePolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" }, { "name": "basic", "type": "basic-auth" }, { "name": "jwt", "type": "jwt-auth" } ],
  "consumer_groups": [ { "name": "people" } ],
  "consumers": [
    { "username": "bot", "idps": [ { "idp": "keys", "key": "bot-key" } ] },
    { "username": "alice", "group": "people", "idps": [ { "idp": "basic", "username": "alice", "password": "pw" } ] },
    { "username": "carol", "idps": [ { "idp": "jwt", "key": "carol", "secret": "carol-secret" } ] }
  ],
  "routes": [
    { "name": "all", "paths": ["/all"], "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "bots", "paths": ["/bots"], "consumers": { "allow": ["bot"] }, "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "people", "paths": ["/people"], "consumer_groups": { "allow": ["people"] }, "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "no-people", "paths": ["/no-people"], "consumer_groups": { "deny": ["people"] }, "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "no-alice", "paths": ["/no-alice"], "consumers": { "deny": ["alice", "carol"] }, "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "nobody", "paths": ["/nobody"], "consumers": { "allow": ["bot"], "deny": ["bot"] }, "upstream": { "targets": [ { "url": "%[1]s" } ] } }
  ]
}`

// TestChallengePerRoute: a 401 without credentials challenges with the providers that can admit
// a consumer on the route, and says the first one's missing message; Basic only where
// basic-auth can admit someone.
func TestChallengePerRoute(t *testing.T) {
	gw, _ := newTestGateway(t, challengePolicy, nil)
	all := `apikey realm="keys", Basic realm="basic", Bearer realm="jwt"`
	tests := []struct {
		path, challenge, message string
	}{
		{path: "/all", challenge: all, message: "Missing API key in request"},
		{path: "/bots", challenge: `apikey realm="keys"`, message: "Missing API key in request"},
		{path: "/people", challenge: `Basic realm="basic"`, message: "Missing authorization in request"},
		{path: "/no-people", challenge: `apikey realm="keys", Bearer realm="jwt"`, message: "Missing API key in request"},
		{path: "/no-alice", challenge: `apikey realm="keys"`, message: "Missing API key in request"},
		{path: "/nobody", challenge: all, message: "Missing API key in request"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("got %d %s, want 401", w.Code, w.Body)
			}
			if got := w.Header().Values("Www-Authenticate"); len(got) != 1 || got[0] != tt.challenge {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.challenge)
			}
			if got := message(t, w); got != tt.message {
				t.Errorf("message: got %q, want %q", got, tt.message)
			}
			e := gw.Explain(httptest.NewRequest(http.MethodGet, tt.path, nil))
			if e.Status != http.StatusUnauthorized || e.Message != tt.message {
				t.Errorf("explain: got %d %q, want 401 %q", e.Status, e.Message, tt.message)
			}
		})
	}
}
