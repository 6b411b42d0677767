package policies

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestWarnings(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   []string
	}{
		{name: "no routes", policy: `{}`, want: []string{"p.json: the policy has no routes: every request is answered 404"}},
		{name: "only consumers", policy: `{"idps": [{"name": "k", "type": "key-auth"}], "consumers": [{"username": "a", "idps": [{"idp": "k", "key": "x"}]}]}`,
			want: []string{"p.json: the policy has no routes: every request is answered 404"}},
		{name: "body-validating hmac on a forward-auth route", policy: `{"trusted_proxies": ["127.0.0.1"], "forward_auth": {},
  "idps": [{"name": "h", "type": "hmac-auth", "validate_request_body": true}, {"name": "h2", "type": "hmac-auth"}],
  "consumers": [{"username": "a", "idps": [{"idp": "h", "key_id": "a", "secret": "s"}]}, {"username": "b", "idps": [{"idp": "h", "key_id": "b", "secret": "s"}, {"idp": "h2", "key_id": "b", "secret": "s"}]}],
  "routes": [{"name": "fwd", "paths": ["/"]}, {"name": "denied", "paths": ["/x"], "consumers": {"deny": ["a", "b"]}},
    {"name": "proxied", "paths": ["/p"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`,
			want: []string{`p.json: route "fwd" is decided only by forward auth, and idp "h" validates the request body (validate_request_body): nginx auth_request and Caddy forward_auth send no body, so a request with one is refused; only Envoy ext_authz with with_request_body sends it`}},
		{name: "hide_credentials on a forward-auth route", policy: `{"forward_auth": {"allow": ["127.0.0.1"]},
  "idps": [{"name": "k", "type": "key-auth", "hide_credentials": true}],
  "consumers": [{"username": "a", "idps": [{"idp": "k", "key": "x"}]}, {"username": "b", "idps": [{"idp": "k", "key": "y"}]}],
  "routes": [{"name": "fwd", "paths": ["/"]}]}`,
			want: []string{`p.json: route "fwd" is decided only by forward auth, where idp "k" cannot hide_credentials: the proxy in front forwards the client's request; remove the credential there`}},
		{name: "a strip_prefix no path starts with", policy: `{"routes": [{"name": "r", "paths": ["/api/{rest:.*}"], "strip_prefix": "/v1",
  "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}, {"name": "ok", "paths": ["/v1/x", "/{p}/y"], "strip_prefix": "/v1",
  "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`,
			want: []string{`p.json: route "r" strips "/v1", which none of its paths starts with: nothing is stripped`}},
		{name: "a path an earlier route takes", policy: `{"routes": [
  {"name": "all", "paths": ["/pets/{id}"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}},
  {"name": "never", "paths": ["/pets/{id}"], "methods": ["GET"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}},
  {"name": "other-host", "hosts": ["a.example"], "paths": ["/x"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}},
  {"name": "any-host", "paths": ["/x"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}},
  {"name": "get", "paths": ["/y"], "methods": ["GET"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}},
  {"name": "post", "paths": ["/y"], "methods": ["POST"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`,
			want: []string{`p.json: route "never"'s path "/pets/{id}" is route "all"'s too, for the same hosts and methods: routes are tried in policy order, so "never" never gets it`}},
		{name: "a route", policy: `{"routes": [{"name": "r", "paths": ["/"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(writeFiles(t, map[string]string{"p.json": tt.policy}), "p.json")
			warns, err := Check(path, Options{})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			var got []string
			for _, w := range warns {
				got = append(got, filepath.Base(w.File)+": "+w.Msg)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Check warnings: got %q, want %q", got, tt.want)
			}
			snap, err := Load(path, Options{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer snap.Close()
			if len(snap.Warnings) != len(tt.want) {
				t.Errorf("Snapshot.Warnings: got %v, want %d", snap.Warnings, len(tt.want))
			}
		})
	}
}

// TestLoadRecoversPanics: a panic anywhere in loading (here in a dependency) is a failed load
// with an error, never a dead process.
func TestLoadRecoversPanics(t *testing.T) {
	path := filepath.Join(writeFiles(t, map[string]string{"p.json": smallPolicy}), "p.json")
	opts := Options{ReadFile: func(string) ([]byte, error) { panic("boom") }}
	for name, load := range map[string]func() error{
		"Load":     func() error { _, err := Load(path, opts); return err },
		"Validate": func() error { return Validate(path, opts) },
	} {
		t.Run(name, func(t *testing.T) {
			err := load()
			errs := Errors(err)
			if len(errs) != 1 || errs[0].File != path || !strings.Contains(errs[0].Msg, "internal error while loading the policy") || !strings.Contains(errs[0].Msg, "boom") {
				t.Errorf("got %v, want one *Error at %s naming the panic", err, path)
			}
		})
	}
}

func TestDidYouMean(t *testing.T) {
	names := []string{"keys", "corp", "partners", "username"}
	tests := []struct{ got, want string }{
		{"keyz", ` (did you mean "keys"?)`},
		{"usernmae", ` (did you mean "username"?)`},
		{"Partner", ` (did you mean "partners"?)`},
		{"apikey", ""},
		{"ab", ""},
		{"keys", ""},
	}
	for _, tt := range tests {
		t.Run(tt.got, func(t *testing.T) {
			if got := didYouMean(tt.got, names); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
