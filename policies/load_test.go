package policies

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFiles writes name → content into a fresh folder and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// errorLines formats the *Error values of err with base file names.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range Errors(err) {
		c := *e
		// Messages pointing at other places name files in full.
		c.Msg = strings.ReplaceAll(c.Msg, filepath.Dir(c.File)+string(filepath.Separator), "")
		c.File = filepath.Base(c.File)
		out = append(out, c.Error())
	}
	if err != nil && len(Errors(err)) == 0 {
		t.Fatalf("error is not made of *Error values: %v", err)
	}
	return out
}

func testOptions(env map[string]string, files map[string]string) Options {
	return Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		ReadFile: func(p string) ([]byte, error) {
			if v, ok := files[p]; ok {
				return []byte(v), nil
			}
			return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
		},
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   []string
	}{
		{
			name: "a provider reading a reserved identity header",
			policy: `{
  "idps": [ { "name": "corp", "type": "oidc", "issuer": "https://id.example.com", "header": "X-Consumer-Token" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "corp", "subject": "s" } ] } ]
}`,
			want: []string{`p.json:2:93: $.idps[0].header: header "X-Consumer-Token" is reserved: the gateway drops it from every request so that clients cannot claim an identity`},
		},
		{
			name: "a misspelt field, and APISIX's name for one",
			policy: `{"consumers": [{"usernmae": "a", "idps": []}],
  "routes": [{"name": "r", "uri": "/x", "paths": ["/x"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`,
			want: []string{
				`p.json:1:17: $.consumers[0].usernmae: unknown field "usernmae" (did you mean "username"?)`,
				`p.json:2:28: $.routes[0].uri: unknown field "uri" (APISIX's uri; here: a route's "paths")`,
			},
		},
		{
			name:   "a number where a duration belongs",
			policy: `{"routes": [{"name": "r", "paths": ["/x"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}], "timeout": 5}}]}`,
			want:   []string{`p.json:1:112: $.routes[0].upstream.timeout: got a number, want a duration string such as "5s" or "1m30s"`},
		},
		{
			name:   "a route without upstream and no forward_auth",
			policy: `{"routes": [{"name": "r", "paths": ["/"]}]}`,
			want:   []string{`p.json:1:13: $.routes[0].upstream: route "r" has no upstream: only a route decided by forward auth (with forward_auth set) may have none`},
		},
		{
			name:   "forward_auth without anyone allowed to ask",
			policy: `{"forward_auth": {}, "routes": [{"name": "r", "paths": ["/"]}]}`,
			want:   []string{`p.json:1:18: $.forward_auth: forward_auth needs allow or trusted_proxies: only the proxies in front may ask, or anyone could probe credentials and spend others' limits through it`},
		},
		{
			name:   "forward_auth with a bad allow entry and a path that is not normalised",
			policy: `{"forward_auth": {"path": "/a/../auth", "allow": ["10.0.0.0/33"]}}`,
			want: []string{
				`p.json:1:27: $.forward_auth.path: forward_auth path "/a/../auth" is not a normalised path (no "." or ".." segments): requests are matched on their normalised path`,
				`p.json:1:51: $.forward_auth.allow[0]: trusted proxy "10.0.0.0/33" is not a CIDR prefix (10.0.0.0/8, fd00::/8)`,
			},
		},
		{
			name:   "forward_auth with a path outside the schema",
			policy: `{"forward_auth": {"path": "auth/", "allow": ["127.0.0.1"]}}`,
			want:   []string{`p.json:1:27: $.forward_auth.path: "auth/" does not match "^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"`},
		},
		{
			name:   "a misspelt metrics field",
			policy: `{"metrics": {"consumer": ["Alice"]}}`,
			want:   []string{`p.json:1:14: $.metrics.consumer: unknown field "consumer" (did you mean "consumers"?)`},
		},
		{
			name: "metrics naming unknown consumers and groups, and the untracked label",
			policy: `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "partners" } ],
  "consumers": [ { "username": "Alice", "group": "partners", "idps": [ { "idp": "keys", "key": "k1" } ] },
                 { "username": "other", "idps": [ { "idp": "keys", "key": "k2" } ] } ],
  "metrics": { "consumers": ["Alise", "other"], "consumer_groups": ["partner"] }
}`,
			want: []string{
				`p.json:6:30: $.metrics.consumers[0]: unknown consumer "Alise" (did you mean "Alice"?)`,
				`p.json:6:39: $.metrics.consumers[1]: consumer "other" cannot be tracked: "other" is the consumer label of the untracked consumers`,
				`p.json:6:69: $.metrics.consumer_groups[0]: unknown consumer group "partner" (did you mean "partners"?)`,
			},
		},
		{
			name:   "syntax error",
			policy: "{\n  \"listen\": \"a:1\",\n  \"idps\": [ }\n}",
			want:   []string{`p.json:3:13: $.idps: invalid JSON: invalid character '}' looking for beginning of value`},
		},
		{
			name:   "unexpected end of file",
			policy: "{\n  \"idps\": [",
			want:   []string{`p.json:2:12: $.idps: invalid JSON: unexpected end of file`},
		},
		{
			name:   "trailing data",
			policy: "{}\n{}",
			want:   []string{`p.json:2:1: $: invalid JSON: unexpected data after the top-level value`},
		},
		{
			name:   "duplicate key",
			policy: "{\n  \"listen\": \"a:1\",\n  \"listen\": \"b:2\"\n}",
			want:   []string{`p.json:3:3: $.listen: duplicate key "listen" (first at line 2, column 3)`},
		},
		{
			name: "unknown fields point at the key",
			policy: `{
  "lisen": "a:1",
  "idps": [
    { "name": "keys", "type": "key-auth", "colour": "red" }
  ]
}`,
			want: []string{
				`p.json:2:3: $.lisen: unknown field "lisen" (did you mean "listen"?)`,
				`p.json:4:43: $.idps[0].colour: unknown field "colour"`,
			},
		},
		{
			name: "idp fields by type",
			policy: `{
  "idps": [
    { "name": "keys", "type": "key-auth", "issuer": "https://x" },
    { "name": "kc", "type": "keycloak", "url": "http://kc" },
    { "name": "partner", "type": "oidc" },
    { "name": "h", "type": "hmac-auth", "allowed_algorithms": ["hmac-sha256", "md5"] },
    { "name": "what", "type": "ldap" }
  ]
}`,
			want: []string{
				`p.json:3:43: $.idps[0].issuer: field "issuer" is not valid for an idp of type "key-auth"`,
				`p.json:4:5: $.idps[1]: missing required field "realm"`,
				`p.json:4:5: $.idps[1]: missing required field "client_id"`,
				`p.json:5:5: $.idps[2]: missing required field "issuer"`,
				`p.json:6:79: $.idps[3].allowed_algorithms[1]: got "md5", want one of "hmac-sha1", "hmac-sha256", "hmac-sha512"`,
				`p.json:7:31: $.idps[4].type: got "ldap", want one of "key-auth", "basic-auth", "jwt-auth", "hmac-auth", "oidc", "keycloak"`,
			},
		},
		{
			name: "limit bounds",
			policy: `{
  "consumer_groups": [
    { "name": "g", "plugins": { "limit-count": { "count": 0, "time_window": 0, "rejected_code": 600 } } },
    { "name": "h", "plugins": { "limit-count": { "count": 1, "time_window": 1, "key": "ip", "policy": "memcache", "window_type": "rolling" } } },
    { "name": "i", "plugins": { "limit-req": { "rate": 0, "burst": -1 } } }
  ]
}`,
			want: []string{
				`p.json:3:59: $.consumer_groups[0].plugins["limit-count"].count: must be at least 1, got 0`,
				`p.json:3:77: $.consumer_groups[0].plugins["limit-count"].time_window: must be at least 1, got 0`,
				`p.json:3:97: $.consumer_groups[0].plugins["limit-count"].rejected_code: must be at most 599, got 600`,
				`p.json:4:87: $.consumer_groups[1].plugins["limit-count"].key: got "ip", want one of "consumer", "route", "remote_addr", "subject"`,
				`p.json:4:103: $.consumer_groups[1].plugins["limit-count"].policy: got "memcache", want one of "local", "redis"`,
				`p.json:4:130: $.consumer_groups[1].plugins["limit-count"].window_type: got "rolling", want one of "fixed", "sliding"`,
				`p.json:5:56: $.consumer_groups[2].plugins["limit-req"].rate: must be greater than 0, got 0`,
				`p.json:5:68: $.consumer_groups[2].plugins["limit-req"].burst: must be at least 0, got -1`,
			},
		},
		{
			name: "durations and types",
			policy: `{
  "redis": { "addr": "r:6379", "timeout": "5 s", "db": "0" }
}`,
			want: []string{
				`p.json:2:43: $.redis.timeout: invalid duration "5 s": want a Go duration like "30s" or "1m30s"`,
				`p.json:2:56: $.redis.db: got string, want integer`,
			},
		},
		{
			name: "duplicate names point at the second",
			policy: `{
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "keys", "type": "key-auth" }
  ],
  "consumer_groups": [ { "name": "g" }, { "name": "g" } ],
  "consumers": [
    { "username": "a", "idps": [ { "idp": "keys", "key": "k1" } ] },
    { "username": "a", "idps": [ { "idp": "keys", "key": "k2" } ] }
  ],
  "routes": [
    { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] } },
    { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] } }
  ]
}`,
			want: []string{
				`p.json:4:15: $.idps[1].name: idp "keys" is already defined at p.json:3:15`,
				`p.json:6:51: $.consumer_groups[1].name: consumer group "g" is already defined at p.json:6:34`,
				`p.json:9:19: $.consumers[1].username: consumer "a" is already defined at p.json:8:19`,
				`p.json:13:15: $.routes[1].name: route "r" is already defined at p.json:12:15`,
			},
		},
		{
			name: "references",
			policy: `{
  "idps": [ { "name": "keys", "type": "key-auth" }, { "name": "more", "type": "key-auth" } ],
  "consumers": [
    { "username": "a", "group": "nobody", "idps": [ { "idp": "keyz", "key": "k1" } ] },
    { "username": "b", "idps": [ { "idp": "keys", "key": "k2" }, { "idp": "keys", "key": "k3" } ] }
  ],
  "routes": [
    { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] },
      "consumers": { "allow": ["a", "c"], "deny": ["d"] },
      "consumer_groups": { "allow": ["gg"] },
      "anonymous_consumer": "guest" }
  ]
}`,
			want: []string{
				`p.json:4:33: $.consumers[0].group: unknown consumer group "nobody"`,
				`p.json:4:62: $.consumers[0].idps[0].idp: unknown idp "keyz" (did you mean "keys"?)`,
				`p.json:5:75: $.consumers[1].idps[1].idp: consumer "b" binds idp "keys" twice (first at p.json:5:34)`,
				`p.json:9:37: $.routes[0].consumers.allow[1]: unknown consumer "c"`,
				`p.json:9:52: $.routes[0].consumers.deny[0]: unknown consumer "d"`,
				`p.json:10:38: $.routes[0].consumer_groups.allow[0]: unknown consumer group "gg"`,
				`p.json:11:29: $.routes[0].anonymous_consumer: unknown consumer "guest"`,
			},
		},
		{
			name: "credential conflict names the holder, never the key",
			policy: `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "a", "idps": [ { "idp": "keys", "key": "s3cret-key" } ] },
    { "username": "b", "idps": [ { "idp": "keys", "key": "s3cret-key" } ] }
  ]
}`,
			want: []string{
				`p.json:5:34: $.consumers[1].idps[0]: credential for idp "keys" is already bound to consumer "a"`,
			},
		},
		{
			name: "binding fields by idp type",
			policy: `{
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "basic", "type": "basic-auth" },
    { "name": "jwt", "type": "jwt-auth" },
    { "name": "corp", "type": "oidc", "issuer": "https://id.example" }
  ],
  "consumers": [
    { "username": "a", "idps": [ { "idp": "keys", "subject": "x" } ] },
    { "username": "b", "idps": [ { "idp": "basic", "username": "b" } ] },
    { "username": "c", "idps": [ { "idp": "jwt", "key": "c", "secret": "s", "public_key": "p" } ] },
    { "username": "d", "idps": [ { "idp": "corp", "subject": "d", "key": "k" } ] }
  ]
}`,
			want: []string{
				`p.json:9:34: $.consumers[0].idps[0]: a binding to idp "keys" of type "key-auth" needs "key"`,
				`p.json:9:51: $.consumers[0].idps[0].subject: field "subject" is not valid in a binding to idp "keys" of type "key-auth"`,
				`p.json:10:34: $.consumers[1].idps[0]: a binding to idp "basic" of type "basic-auth" needs "password"`,
				`p.json:11:34: $.consumers[2].idps[0]: a binding to idp "jwt" of type "jwt-auth" needs exactly one of "secret" or "public_key"`,
				`p.json:12:67: $.consumers[3].idps[0].key: field "key" is not valid in a binding to idp "corp" of type "oidc"`,
			},
		},
		{
			name: "consumer without bindings",
			policy: `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "a" },
    { "username": "b", "idps": [] },
    { "username": "guest", "idps": [] }
  ],
  "routes": [
    { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] }, "anonymous_consumer": "guest" }
  ]
}`,
			want: []string{
				`p.json:4:19: $.consumers[0].username: consumer "a" has no idps: a consumer needs at least one binding (only a route's anonymous_consumer may have none)`,
				`p.json:5:32: $.consumers[1].idps: consumer "b" has no idps: a consumer needs at least one binding (only a route's anonymous_consumer may have none)`,
			},
		},
		{
			name: "routes",
			policy: `{
  "routes": [
    { "name": "a", "paths": ["petstore", "/x/{id", "/y/{id:[}"], "strip_prefix": "api",
      "upstream": { "targets": [ { "url": "/relative" }, { "url": "ftp://h/" }, { "url": "http:///p" } ] } }
  ]
}`,
			want: []string{
				`p.json:3:30: $.routes[0].paths[0]: path "petstore" must start with "/"`,
				`p.json:3:42: $.routes[0].paths[1]: path "/x/{id" has unbalanced braces`,
				`p.json:3:52: $.routes[0].paths[2]: invalid path template "/y/{id:[}": error parsing regexp: missing closing ]: ` + "`[$`",
				`p.json:3:82: $.routes[0].strip_prefix: strip_prefix "api" must start with "/"`,
				`p.json:4:43: $.routes[0].upstream.targets[0].url: upstream URL "/relative" must be absolute http or https`,
				`p.json:4:67: $.routes[0].upstream.targets[1].url: upstream URL "ftp://h/" must be absolute http or https`,
				`p.json:4:90: $.routes[0].upstream.targets[2].url: upstream URL "http:///p" has no host`,
			},
		},
		{
			name: "path template with a capture group",
			policy: `{
  "routes": [
    { "name": "a", "paths": ["/petstore", "/petstore/{id:(cats|dogs)}", "/x/{n:(?P<m>y)}", "/ok/{id:(?:cats|dogs)}"],
      "hosts": ["{sub:(a|b)}.example.com"],
      "upstream": { "targets": [ { "url": "http://u" } ] } }
  ]
}`,
			want: []string{
				`p.json:3:43: $.routes[0].paths[1]: invalid path template "/petstore/{id:(cats|dogs)}": the pattern of {id} has a capture group, which is not allowed: write (?:...) instead of (...)`,
				`p.json:3:73: $.routes[0].paths[2]: invalid path template "/x/{n:(?P<m>y)}": the pattern of {n} has a capture group, which is not allowed: write (?:...) instead of (...)`,
				`p.json:4:17: $.routes[0].hosts[0]: invalid host template "{sub:(a|b)}.example.com": the pattern of {sub} has a capture group, which is not allowed: write (?:...) instead of (...)`,
			},
		},
		{
			name: "paths, prefixes, targets and hosts that requests are never normalised to",
			policy: `{
  "routes": [
    { "name": "a", "paths": ["/a//b", "/a/../b", "/%70ets", "/x/{id}/./y", "/files/a%2Fb", "/ok/v1.2/{rest:.*}", "/a%3Fb"],
      "strip_prefix": "/v1/../v2",
      "hosts": ["api.example.com:8080", "API.Example.com.", "a b", "x..y", "[::1]"],
      "upstream": { "targets": [ { "url": "http://u/base/../x" }, { "url": "http://u/base/" } ] } },
    { "name": "b", "paths": ["/files/a%2Fb"], "allow_encoded_slashes": true, "strip_prefix": "/files/",
      "upstream": { "targets": [ { "url": "http://u" } ] } }
  ]
}`,
			want: []string{
				`p.json:3:30: $.routes[0].paths[0]: path "/a//b" never matches: requests are matched on their normalised path; write "/a/b"`,
				`p.json:3:39: $.routes[0].paths[1]: path "/a/../b" never matches: requests are matched on their normalised path; write "/b"`,
				`p.json:3:50: $.routes[0].paths[2]: path "/%70ets" never matches: requests are matched on their normalised path; write "/pets"`,
				`p.json:3:61: $.routes[0].paths[3]: path "/x/{id}/./y" never matches: requests are matched on their normalised path (no "." or ".." segments, no "//", unreserved characters unescaped, other escapes in upper case)`,
				`p.json:3:76: $.routes[0].paths[4]: path "/files/a%2Fb" never matches: it has an encoded slash and the route does not set allow_encoded_slashes`,
				`p.json:4:23: $.routes[0].strip_prefix: strip_prefix "/v1/../v2" is not a normalised path: write "/v2"`,
				`p.json:5:17: $.routes[0].hosts[0]: host "api.example.com:8080" has a port: hosts are matched without the port; write "api.example.com"`,
				`p.json:5:61: $.routes[0].hosts[2]: host "a b" is not a host name`,
				`p.json:5:68: $.routes[0].hosts[3]: host "x..y" is not a host name: it has an empty label`,
				`p.json:6:43: $.routes[0].upstream.targets[0].url: the upstream URL's path "/base/../x" is not a normalised path: write "/x"`,
			},
		},
		{
			name: "redis policy without redis",
			policy: `{
  "routes": [
    { "name": "a", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] },
      "plugins": { "limit-count": { "count": 1, "time_window": 1, "policy": "redis" } } }
  ]
}`,
			want: []string{
				`p.json:4:77: $.routes[0].plugins["limit-count"].policy: policy "redis" needs a top-level "redis" block`,
			},
		},
		{
			name: "addresses",
			policy: `{
  "listen": "9080",
  "admin_listen": "127.0.0.1:9091",
  "redis": { "addr": "r:6379", "addrs": ["r:1"] }
}`,
			want: []string{
				`p.json:2:13: $.listen: invalid address "9080": want host:port`,
				`p.json:4:12: $.redis: redis needs exactly one of addr (one server) or addrs (a cluster)`,
			},
		},
		{
			name: "trusted proxies",
			policy: `{
  "trusted_proxies": ["10.0.0.0/8", "proxy.local", "10.0.0.1/33", "::1"]
}`,
			want: []string{
				`p.json:2:37: $.trusted_proxies[1]: trusted proxy "proxy.local" is not an IP address or a CIDR prefix`,
				`p.json:2:52: $.trusted_proxies[2]: trusted proxy "10.0.0.1/33" is not a CIDR prefix (10.0.0.0/8, fd00::/8)`,
			},
		},
		{
			name: "tls key pair that does not load",
			policy: `{
  "tls": { "cert_file": "/nonexistent/tls.crt", "key_file": "/nonexistent/tls.key" }
}`,
			want: []string{
				`p.json:2:25: $.tls.cert_file: reading the TLS key pair: stat /nonexistent/tls.crt: no such file or directory`,
			},
		},
		{
			name: "binding rejected by the provider",
			policy: `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "${env:EMPTY}" } ] } ]
}`,
			want: []string{
				`p.json:3:47: $.consumers[0].idps[0]: idp "keys" rejects the binding: key-auth binding needs a non-empty key`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"p.json": tt.policy})
			opts := testOptions(map[string]string{"EMPTY": ""}, nil)
			snap, err := Load(filepath.Join(dir, "p.json"), opts)
			if snap != nil {
				t.Errorf("Load returned a snapshot for an invalid policy")
			}
			got := errorLines(t, err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			// Validate sees exactly what Load sees.
			if vgot := errorLines(t, Validate(filepath.Join(dir, "p.json"), opts)); !reflect.DeepEqual(vgot, got) {
				t.Errorf("Validate errors differ from Load:\ngot:\n%s\nwant:\n%s", strings.Join(vgot, "\n"), strings.Join(got, "\n"))
			}
		})
	}
}

func TestErrorsAreStructured(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.json": "{\n  \"listen\": 1,\n  \"oops\": true\n}"})
	_, err := Load(filepath.Join(dir, "p.json"), Options{})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(*Error) failed on %v", err)
	}
	all := Errors(err)
	if len(all) != 2 {
		t.Fatalf("got %d errors, want 2 at once: %v", len(all), err)
	}
	want := Error{File: filepath.Join(dir, "p.json"), Line: 2, Col: 13, Path: "$.listen", Msg: "got number, want string"}
	if *all[0] != want {
		t.Errorf("got %#v, want %#v", *all[0], want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{"positioned", Error{File: "p.json", Line: 3, Col: 7, Path: "$.idps[0].idp", Msg: "bad"}, "p.json:3:7: $.idps[0].idp: bad"},
		{"whole file", Error{File: "dir", Msg: "empty"}, "dir: empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestJSONPathKeys(t *testing.T) {
	tests := []struct {
		name string
		got  jsonPath
		want jsonPath
	}{
		{"identifier", rootPath.key("consumers").index(1).key("idps"), "$.consumers[1].idps"},
		{"dashed key", rootPath.key("plugins").key("limit-count"), `$.plugins["limit-count"]`},
		{"odd key", rootPath.key(`a"[b`), `$["a\"[b"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %s, want %s", tt.got, tt.want)
			}
			parent, ok := parentPath(tt.got)
			if !ok || !strings.HasPrefix(string(tt.got), string(parent)) || parent == tt.got {
				t.Errorf("parentPath(%s) = %s, %v", tt.got, parent, ok)
			}
		})
	}
}

func TestPetstoreLoads(t *testing.T) {
	snap, err := Load("../examples/petstore.json", Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer snap.Close()
	p := snap.Policy
	if p.Listen != "127.0.0.1:9080" || p.AdminListen != "127.0.0.1:9091" {
		t.Errorf("listen %q admin %q", p.Listen, p.AdminListen)
	}
	if len(snap.Providers) != 1 || snap.ProviderByName["keys"] != snap.Providers[0] {
		t.Fatalf("providers: %v", snap.Providers)
	}
	if got := snap.Consumers.Len(); got != 2 {
		t.Errorf("got %d consumers, want 2", got)
	}
	if lc := snap.ConsumerPlugins["FetchBot"].LimitCount; lc == nil || lc.Count != 2 || lc.TimeWindow != 5 || lc.Key != "consumer" {
		t.Errorf("FetchBot limit-count: %+v", lc)
	}
	if len(snap.Version) != 12 || snap.Source != "../examples/petstore.json" || snap.LoadedAt.IsZero() {
		t.Errorf("version %q source %q loaded %v", snap.Version, snap.Source, snap.LoadedAt)
	}
	for _, tt := range []struct{ key, want string }{{"bot-key", "FetchBot"}, {"john-key", "JohnDoe"}} {
		t.Run(tt.want, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/petstore/pets", nil)
			r.Header.Set("apikey", tt.key)
			res, err := snap.Chain.Evaluate(context.Background(), r, "", nil)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if res.Consumer != tt.want {
				t.Errorf("got consumer %q, want %q", res.Consumer, tt.want)
			}
		})
	}
}

func TestForwardAuthCompiles(t *testing.T) {
	tests := []struct {
		name, policy   string
		path, allowing string
	}{
		{name: "allow defaults to the trusted proxies", policy: `{"trusted_proxies": ["10.1.2.3/8"], "forward_auth": {}}`,
			path: DefaultForwardAuthPath, allowing: "10.0.0.0/8"},
		{name: "its own allow list", policy: `{"trusted_proxies": ["10.0.0.0/8"], "forward_auth": {"path": "/_auth", "allow": ["127.0.0.1", "::1"]}}`,
			path: "/_auth", allowing: "127.0.0.1/32 ::1/128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"p.json": tt.policy})
			snap, err := Load(filepath.Join(dir, "p.json"), Options{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer snap.Close()
			fa := snap.ForwardAuth
			if fa == nil {
				t.Fatal("Snapshot.ForwardAuth is nil")
			}
			var got []string
			for _, p := range fa.Allow {
				got = append(got, p.String())
			}
			if fa.Path != tt.path || strings.Join(got, " ") != tt.allowing {
				t.Errorf("ForwardAuth: got path %q allowing %q, want %q allowing %q", fa.Path, got, tt.path, tt.allowing)
			}
		})
	}
	dir := writeFiles(t, map[string]string{"p.json": `{"trusted_proxies": ["10.0.0.0/8"]}`})
	snap, err := Load(filepath.Join(dir, "p.json"), Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer snap.Close()
	if snap.ForwardAuth != nil {
		t.Errorf("without forward_auth: got %+v, want nil", snap.ForwardAuth)
	}
}

func TestTrustedProxiesCompile(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.json": `{ "trusted_proxies": ["10.1.2.3/8", "::ffff:192.0.2.1", "2001:db8::/32"] }`})
	snap, err := Load(filepath.Join(dir, "p.json"), Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer snap.Close()
	var got []string
	for _, p := range snap.TrustedProxies {
		got = append(got, p.String())
	}
	if want := "10.0.0.0/8 192.0.2.1/32 2001:db8::/32"; strings.Join(got, " ") != want {
		t.Errorf("TrustedProxies: got %q, want %q (masked, one host per address, IPv4-mapped unmapped)", got, want)
	}
}

func TestDefaults(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.json": `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "g", "plugins": { "limit-count": { "count": 5, "time_window": 1 } } } ],
  "consumers": [ { "username": "a", "group": "g", "idps": [ { "idp": "keys", "key": "k" } ],
    "plugins": { "limit-count": { "count": 1, "time_window": 1 }, "limit-req": { "rate": 1 } } } ],
  "routes": [ { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" }, { "url": "http://v", "weight": 3 } ] },
    "plugins": { "limit-count": { "count": 1, "time_window": 1 } } } ]
}`})
	snap, err := Load(filepath.Join(dir, "p.json"), Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer snap.Close()
	p := snap.Policy
	wantLC := func(key string) LimitCount {
		return LimitCount{Key: key, Policy: "local", WindowType: "fixed", RejectedCode: 429}
	}
	strip := func(lc *LimitCount) LimitCount {
		c := *lc
		c.Count, c.TimeWindow = 0, 0
		return c
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", p.Listen, "127.0.0.1:9080"},
		{"admin_listen", p.AdminListen, "127.0.0.1:9091"},
		{"group limit-count", strip(snap.GroupPlugins["g"].LimitCount), wantLC("consumer")},
		{"consumer limit-count", strip(snap.ConsumerPlugins["a"].LimitCount), wantLC("consumer")},
		{"consumer limit-req key", p.Consumers[0].Plugins.LimitReq.Key, "consumer"},
		{"route limit-count", strip(p.Routes[0].Plugins.LimitCount), wantLC("route")},
		{"target weight", p.Routes[0].Upstream.Targets[0].Weight, 1},
		{"explicit weight", p.Routes[0].Upstream.Targets[1].Weight, 3},
		{"upstream timeout", p.Routes[0].Upstream.Timeout, Duration(30 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
	t.Run("hmac clock_skew", func(t *testing.T) {
		five := 5
		p := Policy{IdPs: []IdP{{Name: "h", Type: "hmac-auth"}, {Name: "h2", Type: "hmac-auth", ClockSkew: &five}}}
		p.applyDefaults()
		if got := *p.IdPs[0].ClockSkew; got != 300 {
			t.Errorf("got %d, want 300", got)
		}
		if got := *p.IdPs[1].ClockSkew; got != 5 {
			t.Errorf("explicit: got %d, want 5", got)
		}
	})
}

func TestFolder(t *testing.T) {
	idps := `{
  "listen": "127.0.0.1:8000",
  "idps": [ { "name": "keys", "type": "key-auth" } ]
}`
	people := `{
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "k" } ] } ],
  "routes": [ { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] },
    "consumers": { "allow": ["a"] } } ]
}`
	t.Run("merges sorted files, skipping hidden and others", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{
			"10-idps.json":   idps,
			"20-people.json": people,
			".hidden.json":   `not json`,
			"notes.txt":      `not json`,
		})
		snap, err := Load(dir, Options{})
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		defer snap.Close()
		if snap.Policy.Listen != "127.0.0.1:8000" || len(snap.Providers) != 1 || snap.Consumers.Len() != 1 || len(snap.Policy.Routes) != 1 {
			t.Errorf("merged policy: %+v", snap.Policy)
		}
	})
	t.Run("conflicts across files", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{
			"a.json": idps,
			"b.json": `{
  "listen": "127.0.0.1:8001",
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "k" } ] } ]
}`,
			"c.json": people,
		})
		_, err := Load(dir, Options{})
		want := []string{
			`b.json:2:13: $.listen: "listen" is already set in a.json:2:13`,
			`b.json:3:23: $.idps[0].name: idp "keys" is already defined at a.json:3:23`,
			`c.json:2:32: $.consumers[0].username: consumer "a" is already defined at b.json:4:32`,
		}
		if got := errorLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("metrics in a file of its own", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{
			"a.json": `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "k" } ] } ]
}`,
			"z-metrics.json": `{ "metrics": { "consumers": ["a", "b"] } }`,
		})
		_, err := Load(dir, Options{})
		want := []string{`z-metrics.json:1:35: $.metrics.consumers[1]: unknown consumer "b"`}
		if got := errorLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("errors of every file at once", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"a.json": `{ "x": 1 }`, "b.json": `{ "y": 1 }`})
		want := []string{`a.json:1:3: $.x: unknown field "x"`, `b.json:1:3: $.y: unknown field "y"`}
		if got := errorLines(t, Validate(dir, Options{})); !reflect.DeepEqual(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("empty folder", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"readme.md": "#"})
		want := []string{filepath.Base(dir) + ": the folder holds no *.json policy file"}
		if got := errorLines(t, Validate(dir, Options{})); !reflect.DeepEqual(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("version follows content", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"a.json": idps, "b.json": people})
		v1 := loadVersion(t, dir)
		if v := loadVersion(t, dir); v != v1 {
			t.Errorf("same content: version %s then %s", v1, v)
		}
		if err := os.WriteFile(filepath.Join(dir, "b.json"), []byte(strings.Replace(people, `"/"`, `"/x"`, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if v := loadVersion(t, dir); v == v1 {
			t.Errorf("changed content kept version %s", v)
		}
	})
}

func loadVersion(t *testing.T, path string) string {
	t.Helper()
	snap, err := Load(path, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer snap.Close()
	return snap.Version
}

func TestMissingPath(t *testing.T) {
	err := Validate(filepath.Join(t.TempDir(), "nope.json"), Options{})
	want := []string{"nope.json: cannot read policy: no such file or directory"}
	if got := errorLines(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSchemaCompiles(t *testing.T) {
	if _, err := compiledSchema(); err != nil {
		t.Fatalf("embedded schema: %v", err)
	}
}

func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if got := errorLines(t, Validate(f, Options{})); len(got) != 0 {
				t.Errorf("got errors:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

func TestSchemaIsPublishable(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(Schema(), &doc); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if got := doc["$id"]; got != SchemaURL {
		t.Errorf("$id: got %v, want %s", got, SchemaURL)
	}
	if got := doc["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema: got %v", got)
	}
}

func TestIssuersOf(t *testing.T) {
	got := issuersOf([]IdP{
		{Name: "keys", Type: "key-auth"},
		{Name: "corp", Type: "keycloak", URL: "http://127.0.0.1:8080/", Realm: "corp"},
		{Name: "partner", Type: "oidc", Issuer: "https://id.partner.example"},
	})
	want := []string{"http://127.0.0.1:8080/realms/corp", "https://id.partner.example"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBindingSpecClaims(t *testing.T) {
	var b Binding
	if err := json.Unmarshal([]byte(`{"idp":"corp","subject":"s","claims":{"aud":"api","groups":["a","b"]}}`), &b); err != nil {
		t.Fatal(err)
	}
	spec := bindingSpec(b, "alice")
	want := map[string][]string{"aud": {"api"}, "groups": {"a", "b"}}
	if !reflect.DeepEqual(spec.Claims, want) || spec.Consumer != "alice" || spec.Subject != "s" {
		t.Errorf("got %+v, want claims %v", spec, want)
	}
}
