package policies

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
)

// TestHMACCompatSettings checks the hmac-auth settings of issue 11 item 7 and the body buffer
// bound: compat is strictly decoded, applies to hmac-auth only, and max_buffered_body_size cannot
// be set below what one body may need.
func TestHMACCompatSettings(t *testing.T) {
	const base = `{
  "idps": [
    { "name": "keys", "type": "key-auth"%KEYS% },
    { "name": "h", "type": "hmac-auth"%HMAC% }
  ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "h", "key_id": "a", "secret": "s" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`
	tests := []struct {
		name, keys, hmac string
		wantPath         string // "" when valid
		wantMsg          string
	}{
		{name: "defaults"},
		{name: "strict", hmac: `, "compat": "strict"`},
		{name: "apisix-loose", hmac: `, "compat": "apisix-loose"`},
		{name: "unknown compat", hmac: `, "compat": "loose"`, wantPath: "$.idps[1].compat", wantMsg: `want one of "strict", "apisix-loose"`},
		{name: "compat is not a boolean", hmac: `, "compat": true`, wantPath: "$.idps[1].compat"},
		{name: "compat on key-auth", keys: `, "compat": "apisix-loose"`, wantPath: "$.idps[0].compat", wantMsg: `not valid for an idp of type "key-auth"`},
		{name: "buffer budget", hmac: `, "validate_request_body": true, "max_buffered_body_size": 1048576, "max_req_body_size": 1048576`},
		{name: "buffer budget below one body", hmac: `, "max_buffered_body_size": 1024, "max_req_body_size": 2048`,
			wantPath: "$.idps[1]", wantMsg: "max_buffered_body_size 1024 is less than max_req_body_size 2048"},
		{name: "buffer budget below the default body size", hmac: `, "max_buffered_body_size": 1024`,
			wantPath: "$.idps[1]", wantMsg: "is less than max_req_body_size"},
		{name: "buffer budget zero", hmac: `, "max_buffered_body_size": 0`, wantPath: "$.idps[1].max_buffered_body_size"},
		{name: "buffer budget over 16 GiB", hmac: `, "max_buffered_body_size": 17179869185`, wantPath: "$.idps[1].max_buffered_body_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policy := strings.NewReplacer("%KEYS%", tt.keys, "%HMAC%", tt.hmac).Replace(base)
			dir := writeFiles(t, map[string]string{"p.json": policy})
			err := Validate(filepath.Join(dir, "p.json"), testOptions(nil, nil))
			if tt.wantPath == "" {
				if err != nil {
					t.Fatalf("got %v, want a valid policy", err)
				}
				return
			}
			var got []string
			for _, e := range Errors(err) {
				if strings.HasPrefix(e.Path, tt.wantPath) && strings.Contains(e.Msg, tt.wantMsg) {
					return
				}
				got = append(got, e.Path+": "+e.Msg)
			}
			t.Errorf("got errors %q, want one at %s containing %q", got, tt.wantPath, tt.wantMsg)
		})
	}
}

// TestHMACCompatReachesTheProvider checks that a loaded policy's compat decides what the provider
// accepts: a request signing neither @request-target nor Digest is APISIX's documented example.
func TestHMACCompatReachesTheProvider(t *testing.T) {
	tests := []struct {
		name, compat string
		wantGranted  bool
	}{
		{name: "default is strict", compat: ""},
		{name: "strict", compat: `, "compat": "strict"`},
		{name: "apisix-loose", compat: `, "compat": "apisix-loose"`, wantGranted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"p.json": `{
  "idps": [ { "name": "h", "type": "hmac-auth", "validate_request_body": true` + tt.compat + ` } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "h", "key_id": "a", "secret": "s" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`})
			snap, err := Load(filepath.Join(dir, "p.json"), testOptions(nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			p := snap.ProviderByName["h"]
			body := []byte(`{"name":"world"}`)
			r := httptest.NewRequest("POST", "/r", strings.NewReader(string(body)))
			r.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
			if err := local.SignRequest(r, local.SignInput{KeyID: "a", Secret: "s", Headers: []string{"date"}, Body: body}); err != nil {
				t.Fatal(err)
			}
			// The coverage is checked before any secret is used.
			cred, err := p.Extract(context.Background(), r)
			if tt.wantGranted {
				if err != nil || cred == nil {
					t.Fatalf("got %v, %v, want the credential accepted", cred, err)
				}
				return
			}
			var d *idp.Denial
			if !errors.As(err, &d) || d.Reason != `header "@request-target" not signed` {
				t.Fatalf("got %v, want a refusal because @request-target is not signed", err)
			}
		})
	}
}

// TestHMACLooseWarns: the loose mode loads, but validate and every load say what it gives up,
// unless a nonce stops replays.
func TestHMACLooseWarns(t *testing.T) {
	const route = `"routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]`
	tests := []struct {
		name, idp string
		want      []string
	}{
		{name: "strict", idp: `{ "name": "h", "type": "hmac-auth" }`},
		{name: "loose", idp: `{ "name": "h", "type": "hmac-auth", "compat": "apisix-loose" }`,
			want: []string{`p.json: $.idps[0].compat: idp "h" accepts signatures that do not cover @request-target, the date or digest ("compat": "apisix-loose") and has no nonce_header: a captured request can be replayed`}},
		{name: "loose with a nonce", idp: `{ "name": "h", "type": "hmac-auth", "compat": "apisix-loose", "nonce_header": "X-Nonce" }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(writeFiles(t, map[string]string{"p.json": `{ "idps": [ ` + tt.idp + ` ], ` + route + ` }`}), "p.json")
			warns, err := Check(path, Options{})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			var got []string
			for _, w := range warns {
				c := *w
				c.File = filepath.Base(c.File)
				got = append(got, c.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got warnings %q, want %q", got, tt.want)
			}
		})
	}
}
