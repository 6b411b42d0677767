package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
	"time"
)

// rawRequest sends one request with exactly the given target and Host over a new connection
// (no client library to clean the path first) and returns the response.
func rawRequest(t *testing.T, gwURL, target, host string, header map[string]string) response {
	t.Helper()
	addr := strings.TrimPrefix(gwURL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialling the gateway: %v", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil { // a hung gateway fails the test, not the suite
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, host)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

// upstreamResolves is what a lenient upstream (Node's new URL, most frameworks) makes of a
// request target: escapes decoded, backslashes read as slashes, ;parameters dropped (Tomcat),
// dot-segments resolved.
func upstreamResolves(uri string) string {
	p, _, _ := strings.Cut(uri, "?")
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	segs := strings.Split(strings.ReplaceAll(p, `\`, "/"), "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return path.Clean("/" + strings.Join(segs, "/"))
}

// targets returns the request targets up received, and forgets them.
func (u *upstream) targets() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]string, 0, len(u.reqs))
	for _, r := range u.reqs {
		out = append(out, r.RequestURI)
	}
	u.reqs = nil
	return out
}

func pathsPolicy(pets, admin, v1, adminHost string) string {
	return fmt.Sprintf(`{
  "listen": "127.0.0.1:0",
  "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "PetsOnly", "idps": [ { "idp": "keys", "key": "pets-key" } ] },
    { "username": "Admin", "idps": [ { "idp": "keys", "key": "admin-key" } ] }
  ],
  "routes": [
    { "name": "admin-host", "hosts": ["admin.example.com"], "paths": ["/{rest:.*}"],
      "upstream": { "targets": [ { "url": %[4]q } ] }, "consumers": { "allow": ["Admin"] } },
    { "name": "pets", "paths": ["/pets", "/pets/{rest:.*}"],
      "upstream": { "targets": [ { "url": %[1]q } ] }, "consumers": { "allow": ["PetsOnly", "Admin"] } },
    { "name": "admin", "paths": ["/adminpanel/{rest:.*}"],
      "upstream": { "targets": [ { "url": %[2]q } ] }, "consumers": { "allow": ["Admin"] } },
    { "name": "v1", "paths": ["/v1{rest:.*}"], "strip_prefix": "/v1", "allow_encoded_slashes": true,
      "upstream": { "targets": [ { "url": %[3]q } ] } }
  ]
}`, pets, admin, v1, adminHost)
}

// TestPathNormalisation drives the built binary with the dot-segment and encoded-slash attacks
// of issue 11, sent byte for byte, as a consumer allowed on route "pets" only: the admin
// upstream receives nothing, and the pets upstream nothing outside /pets and no dot-segment.
func TestPathNormalisation(t *testing.T) {
	pets, admin, v1, adminHost := newUpstream(t, nil), newUpstream(t, nil), newUpstream(t, nil), newUpstream(t, nil)
	gw := startGateway(t, pathsPolicy(pets.URL, admin.URL, v1.URL, adminHost.URL))
	key := map[string]string{"apikey": "pets-key"}
	host := strings.TrimPrefix(gw.URL, "http://")

	t.Run("attacks", func(t *testing.T) {
		tests := []struct {
			name, target string
			status       int
			upstream     string // what the pets upstream receives; "" for nothing
		}{
			{"dot-dot", "/pets/../adminpanel/users", 403, ""},
			{"encoded dot-dot", "/pets/%2e%2e/adminpanel/users", 403, ""},
			{"half-encoded dot-dot", "/pets/.%2e/adminpanel/users", 403, ""},
			{"other half encoded", "/pets/%2E./adminpanel/users", 403, ""},
			{"Tomcat's ..;", "/pets/..;/adminpanel/users", 400, ""},
			{"..; with a value", "/pets/..;a=b/adminpanel/users", 400, ""},
			{"encoded slashes around dot-dot", "/pets/%2f..%2fadminpanel/users", 400, ""},
			{"dot-dot before an encoded slash", "/pets/..%2Fadminpanel/users", 400, ""},
			{"encoded slash", "/pets/a%2fb", 400, ""},
			{"double-encoded dot-dot stays data", "/pets/%252e%252e/adminpanel/users", 200, "/pets/%252e%252e/adminpanel/users"},
			{"double slash", "//adminpanel/users", 403, ""},
			{"raw backslash", `/pets\..\adminpanel\users`, 400, ""},
			{"encoded backslash", `/pets/..%5cadminpanel`, 400, ""},
			{"above the root", "/pets/../../adminpanel/users", 400, ""},
			{"NUL", "/pets/%00/x", 400, ""},
			{"to no route", "/pets/../secret", 404, ""},
			{"absolute form", "http://" + host + "/pets/%2e%2e/adminpanel/users", 403, ""},
			{"dot-segments inside pets", "/pets/a/./b/../12?x=1", 200, "/pets/a/12?x=1"},
			{"unreserved escapes", "/%70ets/%7Ebob", 200, "/pets/~bob"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := rawRequest(t, gw.URL, tt.target, host, key)
				if r.Status != tt.status {
					t.Errorf("status: got %d %q, want %d", r.Status, r.Body, tt.status)
				}
				if got := admin.targets(); len(got) > 0 {
					t.Errorf("the admin upstream received %q", got)
				}
				got := pets.targets()
				for _, uri := range got {
					if v := upstreamResolves(uri); v != "/pets" && !strings.HasPrefix(v, "/pets/") {
						t.Errorf("the pets upstream received %q, which it resolves to %q", uri, v)
					}
					for _, s := range strings.Split(strings.SplitN(uri, "?", 2)[0], "/") {
						if s == "." || s == ".." {
							t.Errorf("the pets upstream received %q, with a dot-segment", uri)
						}
					}
				}
				switch {
				case tt.upstream == "" && len(got) > 0:
					t.Errorf("the pets upstream received %q, want nothing", got)
				case tt.upstream != "" && (len(got) != 1 || got[0] != tt.upstream):
					t.Errorf("the pets upstream received %q, want [%q]", got, tt.upstream)
				}
			})
		}
	})

	t.Run("strip_prefix", func(t *testing.T) {
		tests := []struct {
			name, target string
			status       int
			upstream     string
		}{
			{"the prefix alone", "/v1", 200, "/"},
			{"under the prefix", "/v1/pets?x=1", 200, "/pets?x=1"},
			{"not at a segment boundary", "/v1x", 200, "/v1x"},
			{"an encoded slash stays encoded", "/v1/a%2fb", 200, "/a%2Fb"},
			{"dot-dot out of the prefix", "/v1/../adminpanel/users", 403, ""},
			{"dot-dot and an encoded slash", "/v1/..%2fadminpanel", 400, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := rawRequest(t, gw.URL, tt.target, host, key)
				if r.Status != tt.status {
					t.Errorf("status: got %d %q, want %d", r.Status, r.Body, tt.status)
				}
				if got := admin.targets(); len(got) > 0 {
					t.Errorf("the admin upstream received %q", got)
				}
				got := v1.targets()
				switch {
				case tt.upstream == "" && len(got) > 0:
					t.Errorf("the v1 upstream received %q, want nothing", got)
				case tt.upstream != "" && (len(got) != 1 || got[0] != tt.upstream):
					t.Errorf("the v1 upstream received %q, want [%q]", got, tt.upstream)
				}
			})
		}
	})

	t.Run("host", func(t *testing.T) {
		tests := []struct {
			name, host string
			status     int
		}{
			{"lower-case", "admin.example.com", 403},
			{"upper-case", "ADMIN.example.com", 403},
			{"trailing dot", "admin.example.com.", 403},
			{"mixed case, trailing dot, port", "Admin.Example.COM.:9080", 403},
			{"an empty label", "admin.example.com..", 400},
			{"another host reaches pets", "pets.example.com", 200},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := rawRequest(t, gw.URL, "/pets/1", tt.host, key)
				if r.Status != tt.status {
					t.Errorf("status: got %d %q, want %d", r.Status, r.Body, tt.status)
				}
				if got := adminHost.targets(); len(got) > 0 {
					t.Errorf("the admin-host upstream received %q", got)
				}
				pets.targets()
			})
		}
		if r := rawRequest(t, gw.URL, "/pets/1", "ADMIN.EXAMPLE.COM.", map[string]string{"apikey": "admin-key"}); r.Status != 200 {
			t.Errorf("Admin on ADMIN.EXAMPLE.COM.: got %d %q, want 200", r.Status, r.Body)
		}
		if got := adminHost.targets(); len(got) != 1 {
			t.Errorf("the admin-host upstream received %q, want the admin's request", got)
		}
	})
}
