package gateway

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/internal/urlpath"
)

// recorder is an upstream that records the request targets it receives.
type recorder struct {
	mu   sync.Mutex
	uris []string
}

func (rc *recorder) handler(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.uris = append(rc.uris, r.RequestURI)
	rc.mu.Unlock()
	w.Write([]byte("ok"))
}

// take returns the targets received since the last call.
func (rc *recorder) take() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	u := rc.uris
	rc.uris = nil
	return u
}

// resolved is what a lenient upstream makes of a request target: escapes decoded, backslashes
// read as slashes, path parameters dropped, dot-segments resolved.
func resolved(uri string) string {
	p, _, _ := strings.Cut(uri, "?")
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	segs := strings.Split(strings.ReplaceAll(p, `\`, "/"), "/")
	for i, s := range segs {
		s, _, _ = strings.Cut(s, ";")
		segs[i] = s
	}
	return path.Clean("/" + strings.Join(segs, "/"))
}

// hasDotSegment reports a "." or ".." segment in a request target, as sent.
func hasDotSegment(uri string) bool {
	p, _, _ := strings.Cut(uri, "?")
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

const pathPolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "petsonly", "idps": [ { "idp": "keys", "key": "kp" } ] },
    { "username": "admin", "idps": [ { "idp": "keys", "key": "ka" } ] }
  ],
  "routes": [
    { "name": "pets", "paths": ["/pets", "/pets/{rest:.*}"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumers": { "allow": ["petsonly", "admin"] } },
    { "name": "admin", "paths": ["/adminpanel/{rest:.*}"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumers": { "allow": ["admin"] } },
    { "name": "files", "paths": ["/files/{name}"], "allow_encoded_slashes": true,
      "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "v1", "paths": ["/v1{rest:.*}"], "strip_prefix": "/v1", "allow_encoded_slashes": true,
      "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "based", "paths": ["/api/{rest:.*}"], "strip_prefix": "/api/",
      "upstream": { "targets": [ { "url": "%[1]s/base" } ] } }
  ]
}`

// TestPathAttacks sends the dot-segment and encoded-slash attacks of issue 11 as a consumer
// allowed on "pets" only: none reaches the upstream outside /pets, and none reaches it with a
// dot-segment.
func TestPathAttacks(t *testing.T) {
	rc := &recorder{}
	gw, _ := newTestGateway(t, pathPolicy, rc.handler)
	tests := []struct {
		name   string
		target string
		status int
		// upstream is the target the upstream receives; "" when it receives nothing.
		upstream string
	}{
		{"dot-dot", "/pets/../adminpanel/users", 403, ""},
		{"encoded dot-dot", "/pets/%2e%2e/adminpanel/users", 403, ""},
		{"half-encoded dot-dot", "/pets/.%2e/adminpanel/users", 403, ""},
		{"other half encoded", "/pets/%2E./adminpanel/users", 403, ""},
		{"Tomcat's ..;", "/pets/..;/adminpanel/users", 400, ""},
		{"encoded slashes around dot-dot", "/pets/%2f..%2fadminpanel/users", 400, ""},
		{"dot-dot before an encoded slash", "/pets/..%2fadminpanel/users", 400, ""},
		{"encoded slash", "/pets/x%2Fy", 400, ""},
		{"encoded backslash", "/pets/x%5cy", 400, ""},
		{"double-encoded dot-dot is data", "/pets/%252e%252e/adminpanel/users", 200, "/pets/%252e%252e/adminpanel/users"},
		{"double slash", "//adminpanel/users", 403, ""},
		{"raw backslash", `/pets\..\adminpanel\users`, 400, ""},
		{"above the root", "/pets/../../adminpanel/users", 400, ""},
		{"NUL", "/pets/%00/x", 400, ""},
		{"dot inside pets", "/pets/./12", 200, "/pets/12"},
		{"dot-dot inside pets", "/pets/a/../12?x=1", 200, "/pets/12?x=1"},
		{"unreserved escapes decoded", "/p%65ts/%31%32", 200, "/pets/12"},
		{"reserved escapes upper-cased", "/pets/a%3fb", 200, "/pets/a%3Fb"},
		{"back to the route's root", "/pets/12/..", 200, "/pets/"},
		{"leaves the route", "/pets/..", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(gw, "GET", tt.target, map[string]string{"apikey": "kp"})
			if rec.Code != tt.status {
				t.Errorf("status: got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			got := rc.take()
			for _, uri := range got {
				if v := resolved(uri); v != "/pets" && !strings.HasPrefix(v, "/pets/") {
					t.Errorf("the upstream received %q, which it resolves to %q, outside /pets", uri, v)
				}
				if hasDotSegment(uri) {
					t.Errorf("the upstream received %q, with a dot-segment", uri)
				}
			}
			switch {
			case tt.upstream == "" && len(got) > 0:
				t.Errorf("upstream: got %q, want nothing", got)
			case tt.upstream != "" && (len(got) != 1 || got[0] != tt.upstream):
				t.Errorf("upstream: got %q, want [%q]", got, tt.upstream)
			}
		})
	}
}

// TestStripPrefixOnTheNormalisedPath: strip_prefix removes whole segments of the normalised,
// still escaped, path.
func TestStripPrefixOnTheNormalisedPath(t *testing.T) {
	rc := &recorder{}
	gw, _ := newTestGateway(t, pathPolicy, rc.handler)
	tests := []struct {
		name, target string
		status       int
		upstream     string
	}{
		{"the prefix alone", "/v1", 200, "/"},
		{"the prefix and a slash", "/v1/", 200, "/"},
		{"under the prefix", "/v1/x/y?q=1", 200, "/x/y?q=1"},
		{"not at a segment boundary", "/v1x", 200, "/v1x"},
		{"an encoded slash stays encoded", "/v1/a%2fb", 200, "/a%2Fb"},
		{"dot-dot out of the prefix", "/v1/../x", 404, ""},
		{"dot-dot and an encoded slash", "/v1/..%2fx", 400, ""},
		{"dot-segments inside", "/v1/a/./b/../c", 200, "/a/c"},
		{"target base path", "/api/pets", 200, "/base/pets"},
		{"target base path, prefix only", "/api/", 200, "/base/"},
		{"target base path, dot-dot", "/api/pets/../../base/x", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(gw, "GET", tt.target, map[string]string{"apikey": "kp"})
			if rec.Code != tt.status {
				t.Errorf("status: got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			got := rc.take()
			switch {
			case tt.upstream == "" && len(got) > 0:
				t.Errorf("upstream: got %q, want nothing", got)
			case tt.upstream != "" && (len(got) != 1 || got[0] != tt.upstream):
				t.Errorf("upstream: got %q, want [%q]", got, tt.upstream)
			}
		})
	}
}

// TestEncodedSlashOptIn: a route that sets allow_encoded_slashes receives %2F inside a
// segment, still encoded; every other route refuses it.
func TestEncodedSlashOptIn(t *testing.T) {
	rc := &recorder{}
	gw, _ := newTestGateway(t, pathPolicy, rc.handler)
	tests := []struct {
		name, target string
		status       int
		upstream     string
	}{
		{"allowed, one segment", "/files/a%2fb", 200, "/files/a%2Fb"},
		{"allowed, backslash", "/files/a%5Cb", 200, "/files/a%5Cb"},
		{"allowed, but a dot-dot between them", "/files/a%2F..%2Fb", 400, ""},
		{"not allowed on pets", "/pets/a%2Fb", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(gw, "GET", tt.target, map[string]string{"apikey": "kp"})
			if rec.Code != tt.status {
				t.Errorf("status: got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			got := rc.take()
			switch {
			case tt.upstream == "" && len(got) > 0:
				t.Errorf("upstream: got %q, want nothing", got)
			case tt.upstream != "" && (len(got) != 1 || got[0] != tt.upstream):
				t.Errorf("upstream: got %q, want [%q]", got, tt.upstream)
			}
		})
	}
}

// TestHostMatchingIgnoresCaseAndTrailingDot: a host route catches every spelling of its host,
// and never lets one fall through to a catch-all.
func TestHostMatchingIgnoresCaseAndTrailingDot(t *testing.T) {
	gw, _ := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "user", "idps": [ { "idp": "keys", "key": "ku" } ] },
    { "username": "admin", "idps": [ { "idp": "keys", "key": "ka" } ] }
  ],
  "routes": [
    { "name": "admin", "hosts": ["Admin.Example.com."], "paths": ["/{rest:.*}"],
      "upstream": { "targets": [ { "url": "%[1]s" } ] }, "consumers": { "allow": ["admin"] } },
    { "name": "catch-all", "paths": ["/{rest:.*}"], "upstream": { "targets": [ { "url": "%[1]s" } ] } }
  ]
}`, nil)
	tests := []struct {
		name, host string
		status     int
	}{
		{"as configured, lower-case", "admin.example.com", 403},
		{"upper-case", "ADMIN.example.com", 403},
		{"trailing dot", "admin.example.com.", 403},
		{"mixed case, trailing dot and port", "Admin.EXAMPLE.com.:8080", 403},
		{"an empty label", "admin.example.com..", 400},
		{"a leading dot", ".admin.example.com", 400},
		{"another host", "www.example.com", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/x", nil)
			req.Host = tt.host
			req.Header.Set("apikey", "ku")
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Errorf("got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
		})
	}
}

// TestExplainNormalisesThePath: explain decides on the normalised path, as serving does.
func TestExplainNormalisesThePath(t *testing.T) {
	gw, _ := newTestGateway(t, pathPolicy, nil)
	tests := []struct {
		name, target string
		status       int
		detail       string
	}{
		{"dot-dot to another route", "/pets/%2e%2e/adminpanel/x", 403, `route "admin", on the normalised path /adminpanel/x`},
		{"refused path", "/pets/..;/x", 400, `cannot be normalised`},
		{"encoded slash refused by the route", "/pets/a%2Fb", 400, `route "pets" refuses the path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", "http://gw"+tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("apikey", "kp")
			e := gw.Explain(req)
			if e.Status != tt.status {
				t.Errorf("status: got %d (%s), want %d", e.Status, e.Message, tt.status)
			}
			if len(e.Steps) == 0 || !strings.Contains(e.Steps[0].Detail, tt.detail) {
				t.Errorf("match step: got %+v, want it to contain %q", e.Steps, tt.detail)
			}
		})
	}
}

func TestRequestPath(t *testing.T) {
	tests := []struct {
		name, uri, want string
	}{
		{"origin form", "/a/b?x=1", "/a/b"},
		{"raw backslash kept", `/a\b`, `/a\b`},
		{"absolute form", "http://h:8080/a%2Fb?x", "/a%2Fb"},
		{"absolute form without a path", "http://h", ""},
		{"absolute form, query only", "http://h?x=/y", ""},
		{"asterisk", "*", "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RequestURI: tt.uri, URL: &url.URL{}}
			if got := requestPath(r); got != tt.want {
				t.Errorf("requestPath(%q): got %q, want %q", tt.uri, got, tt.want)
			}
		})
	}
}

// FuzzMatchAndForward: whatever the request target, what the matched route forwards has no
// dot-segment (read as sent, or after decoding, or with ;parameters dropped), stays under the
// target's base path and the route's own paths, and is already normalised.
func FuzzMatchAndForward(f *testing.F) {
	for _, s := range []string{
		"/pets/../adminpanel/users", "/pets/%2e%2e/adminpanel", "/pets/.%2e/x", "/pets/%2E./x", "/pets/..;/x",
		"/pets/%2f..%2fx", "/pets/%252e%252e/x", "//adminpanel/x", `/pets\..\x`, "/v1/../x", "/v1/..%2fx",
		"/v1x", "/v1/a%2Fb", "/api/../../base/x", "/api/a%2F..", "/files/a%2F..%2Fb", "http://h/pets/../x", "*",
	} {
		f.Add(s)
	}
	gw, _ := newTestGateway(f, pathPolicy, nil)
	c := gw.acquire()
	defer c.inflight.RUnlock()
	// under is where each route's forwarded paths must stay, as an upstream resolves them.
	under := map[string]string{"pets": "/pets", "admin": "/adminpanel", "files": "/files", "v1": "/", "based": "/base"}
	f.Fuzz(func(t *testing.T, target string) {
		r := &http.Request{Method: "GET", Host: "gw", RequestURI: target, URL: &url.URL{}, Header: http.Header{}}
		x := &exchange{}
		rt, err := c.match(r, x)
		if err != nil {
			return
		}
		var u url.URL
		rt.upstreamURL(rt.upstream.Balancer.Targets()[0], r.URL, &u)
		uri := u.RequestURI()
		if hasDotSegment(uri) {
			t.Fatalf("%q is forwarded by route %s as %q, with a dot-segment", target, rt.name, uri)
		}
		base := strings.TrimPrefix(rt.upstream.Balancer.Targets()[0].URL.Path, "/")
		v := resolved(uri)
		if want := under[rt.name]; want != "/" && v != want && !strings.HasPrefix(v, want+"/") {
			t.Fatalf("%q is forwarded by route %s as %q, which resolves to %q, outside %q (base %q)", target, rt.name, uri, v, want, base)
		}
		p := u.EscapedPath()
		if n, _, err := urlpath.Normalize(p); err != nil || n != p {
			t.Fatalf("%q is forwarded as %q, which normalises to %q, %v", target, p, n, err)
		}
	})
}
