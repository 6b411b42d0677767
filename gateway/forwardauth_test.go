package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/idp/local"
)

// forwardAuthPolicy: the proxy in front is 192.0.2.1 (httptest's client address); "pets" is
// proxied and decided by forward auth alike, "internal" only by forward auth.
const forwardAuthPolicy = `{
  "trusted_proxies": ["192.0.2.1"],
  "forward_auth": {},
  "idps": [ { "name": "keys", "type": "key-auth" },
            { "name": "sig", "type": "hmac-auth", "validate_request_body": true } ],
  "consumer_groups": [ { "name": "bots" } ],
  "consumers": [
    { "username": "FetchBot", "group": "bots", "idps": [ { "idp": "keys", "key": "fb-key" } ],
      "plugins": { "limit-count": { "count": 2, "time_window": 60 } } },
    { "username": "Signer", "idps": [ { "idp": "sig", "key_id": "signer", "secret": "s3cret" } ] }
  ],
  "routes": [
    { "name": "pets", "paths": ["/pets/{rest:.*}"], "methods": ["GET", "HEAD"], "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "pets-by-host", "hosts": ["pets.example"], "paths": ["/{rest:.*}"] },
    { "name": "internal", "paths": ["/internal/{rest:.*}"] }
  ]
}`

func askForwardAuth(gw *Gateway, method, target, peer string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	if peer != "" {
		req.RemoteAddr = peer
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, req)
	return rec
}

func TestForwardAuthConventions(t *testing.T) {
	// FetchBot's limit is not what is tested here.
	gw, _ := newTestGateway(t, strings.Replace(forwardAuthPolicy, `"count": 2`, `"count": 1000`, 1), nil)
	tests := []struct {
		name         string
		method, path string
		peer         string
		header       map[string]string
		wantStatus   int
		wantConsumer string
		wantMessage  string
	}{
		{name: "forwarded headers (Traefik, Caddy)", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1?x=1", "X-Forwarded-Host": "gw.example", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "forwarded without a key", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1"},
			wantStatus: 401, wantMessage: "Missing API key in request"},
		{name: "forwarded with a wrong key", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1", "apikey": "nope"},
			wantStatus: 401, wantMessage: "Invalid API key in request"},
		{name: "forwarded method the route does not serve", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/pets/1", "apikey": "fb-key"},
			wantStatus: 404, wantMessage: "404 Route Not Found"},
		{name: "forwarded without the URI", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: X-Forwarded-Uri must be set exactly once"},
		{name: "forwarded with an absolute URI", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "http://evil/pets/1", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: the original URI is not a path with an optional query"},
		{name: "forwarded with a method that is no token", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET /x", "X-Forwarded-Uri": "/pets/1", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: the original method is not an HTTP method token"},
		{name: "forwarded path normalised before matching", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/../internal/x", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "forwarded host selects the route", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/anything", "X-Forwarded-Host": "PETS.example:8443", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "nginx X-Original-URI", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "HEAD", "X-Original-URI": "/pets/1", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "ingress-nginx X-Original-URL", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "PUT", "X-Original-URL": "https://pets.example/a?b=c", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "nginx with a URI and a URL that disagree", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/pets/1", "X-Original-URL": "http://pets.example/", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: X-Original-URI and X-Original-URL name different requests"},
		{name: "ingress-nginx with auth-method: a URI and a URL that agree", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/x?y", "X-Original-URL": "http://pets.example/x?y", "Host": "portcullis.svc", "apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "nginx with neither URI nor URL", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "GET", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: X-Original-URI or X-Original-URL must be set"},
		{name: "nginx without the method", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-URI": "/pets/1", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: X-Original-Method must be set exactly once"},
		{name: "nginx with a URL that is not http", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "GET", "X-Original-URL": "ftp://pets.example/", "apikey": "fb-key"},
			wantStatus: 400, wantMessage: "forward auth: X-Original-URL is not an absolute http or https URL"},
		{name: "envoy original path after the prefix", method: "GET", path: "/.portcullis/auth/envoy/pets/1?q=1",
			header:     map[string]string{"apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "envoy keeps the original method", method: "POST", path: "/.portcullis/auth/envoy/pets/1",
			header:     map[string]string{"apikey": "fb-key"},
			wantStatus: 404, wantMessage: "404 Route Not Found"},
		{name: "a route only forward auth decides", method: "GET", path: "/.portcullis/auth/envoy/internal/x",
			header:     map[string]string{"apikey": "fb-key"},
			wantStatus: 200, wantConsumer: "FetchBot"},
		{name: "no convention at the path", method: "GET", path: "/.portcullis/auth/traefik",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1", "apikey": "fb-key"},
			wantStatus: 404, wantMessage: "no forward auth convention at this path"},
		{name: "an untrusted peer", method: "GET", path: "/.portcullis/auth", peer: "198.51.100.7:4444",
			header:     map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1", "apikey": "fb-key", "X-Forwarded-For": "192.0.2.1"},
			wantStatus: 403, wantMessage: "forward auth answers trusted proxies only"},
		{name: "an untrusted peer at an unknown convention", method: "GET", path: "/.portcullis/auth/x", peer: "198.51.100.7:4444",
			wantStatus: 403, wantMessage: "forward auth answers trusted proxies only"},
		{name: "a proxied request for a route only forward auth decides", method: "GET", path: "/internal/x",
			header:     map[string]string{"apikey": "fb-key"},
			wantStatus: 404, wantMessage: "404 Route Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := askForwardAuth(gw, tt.method, tt.path, tt.peer, tt.header)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d (%s), want %d", rec.Code, rec.Body, tt.wantStatus)
			}
			if got := rec.Header().Get("X-Consumer-Username"); got != tt.wantConsumer {
				t.Errorf("X-Consumer-Username: got %q, want %q", got, tt.wantConsumer)
			}
			if tt.wantStatus == 200 {
				_, hasUserinfo := rec.Header()["X-Userinfo"] // empty, but there: the proxy replaces the client's copy
				if rec.Body.Len() != 0 || rec.Header().Get("X-Consumer-Groups") != "bots" || rec.Header().Get("X-Credential-Identifier") == "" || !hasUserinfo {
					t.Errorf("answer: got body %q and headers %v, want an empty body with the four identity headers", rec.Body, rec.Header())
				}
				return
			}
			if got := message(t, rec); got != tt.wantMessage {
				t.Errorf("message: got %q, want %q", got, tt.wantMessage)
			}
			wantBodyHeader := ""
			if strings.HasPrefix(tt.path, "/.portcullis/auth/nginx") {
				wantBodyHeader = strings.TrimSuffix(rec.Body.String(), "\n")
			}
			if got := rec.Header().Get("X-Portcullis-Body"); got != wantBodyHeader {
				t.Errorf("X-Portcullis-Body: got %q, want %q", got, wantBodyHeader)
			}
		})
	}
}

// TestForwardAuthLimitsAndMetrics: each forward-auth decision spends the limits once, answers
// the X-RateLimit-* headers and the refusal's Retry-After, and is counted apart from proxied
// requests.
func TestForwardAuthLimitsAndMetrics(t *testing.T) {
	gw, _ := newTestGateway(t, forwardAuthPolicy, nil)
	ask := map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/pets/1", "apikey": "fb-key"}
	for i, want := range []struct {
		status    int
		remaining string
	}{{200, "1"}, {200, "0"}, {429, "0"}} {
		rec := askForwardAuth(gw, "GET", "/.portcullis/auth/nginx", "", ask)
		if rec.Code != want.status || rec.Header().Get("X-Ratelimit-Remaining") != want.remaining || rec.Header().Get("X-Ratelimit-Limit") != "2" {
			t.Fatalf("request %d: got %d with X-RateLimit-Limit %q, -Remaining %q; want %d, 2, %q", i+1, rec.Code,
				rec.Header().Get("X-Ratelimit-Limit"), rec.Header().Get("X-Ratelimit-Remaining"), want.status, want.remaining)
		}
		if want.status == 429 && rec.Header().Get("Retry-After") == "" {
			t.Errorf("request %d: got no Retry-After on the refusal", i+1)
		}
	}
	m := gw.metrics
	for status, want := range map[string]float64{"200": 2, "429": 1} {
		// "other": the policy tracks no consumer (metrics_test.go tests tracking).
		if got := counterValue(t, m.forwardAuth.WithLabelValues("pets", "other", status)); got != want {
			t.Errorf("portcullis_forward_auth_requests_total{status=%q}: got %v, want %v", status, got, want)
		}
	}
	ch := make(chan prometheus.Metric, 16)
	m.requests.Collect(ch)
	if got := len(ch); got != 0 {
		t.Errorf("portcullis_requests_total: got %d series, want none (forward auth is counted apart)", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestForwardAuthEnvoyBody: Envoy's ext_authz with_request_body sends the body, so a body
// digest is verified; the proxies that send none are refused by such a provider.
func TestForwardAuthEnvoyBody(t *testing.T) {
	gw, _ := newTestGateway(t, forwardAuthPolicy, nil)
	body := `{"name":"rex"}`
	sign := func(r *http.Request, target string) {
		r.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		in := local.SignInput{KeyID: "signer", Secret: "s3cret", Body: []byte(body)}
		in.Method, in.Target, in.Header = "POST", target, r.Header
		out, err := local.SignHMAC(in)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", out.Authorization)
		r.Header.Set("Digest", out.Digest)
	}
	t.Run("envoy with the body", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/.portcullis/auth/envoy/internal/pets", strings.NewReader(body))
		sign(req, "/internal/pets")
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("X-Consumer-Username") != "Signer" {
			t.Errorf("got %d %s (consumer %q), want 200 for Signer", rec.Code, rec.Body, rec.Header().Get("X-Consumer-Username"))
		}
	})
	t.Run("forwarded headers without the body", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/.portcullis/auth", nil)
		req.Header.Set("X-Forwarded-Method", "POST")
		req.Header.Set("X-Forwarded-Uri", "/internal/pets")
		sign(req, "/internal/pets")
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Errorf("got %d %s, want 401: the digest covers a body the endpoint never saw", rec.Code, rec.Body)
		}
	})
}

func TestASCIIJSON(t *testing.T) {
	tests := []struct{ name, msg string }{
		{name: "ascii", msg: `slow "down"`},
		{name: "latin", msg: "trop de requêtes"},
		{name: "beyond the BMP", msg: "quota 🚦 exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := asciiJSON(jsonField("error_msg", tt.msg))
			for i := 0; i < len(got); i++ {
				if got[i] < ' ' || got[i] > '~' {
					t.Fatalf("got %q: byte %d is not visible ASCII", got, i)
				}
			}
			var back map[string]string
			if err := json.Unmarshal([]byte(got), &back); err != nil || back["error_msg"] != tt.msg {
				t.Errorf("got %q decoding to %q (%v), want %q", got, back["error_msg"], err, tt.msg)
			}
		})
	}
}

// FuzzForwardAuthDescribe: whatever the proxy (or a client through it) writes, describe never
// panics, and what it accepts is an origin-form target, a method token and a clean host.
func FuzzForwardAuthDescribe(f *testing.F) {
	f.Add("GET", "/pets/1?x=1", "pets.example", "/.portcullis/auth", "")
	f.Add("POST", "http://a/b", "a:1", "/.portcullis/auth/nginx", "https://h/p?q")
	f.Add("PUT", "/%2e%2e/x", "[::1]:80", "/.portcullis/auth/envoy/x%20y?z", "")
	f.Add("\x00", "//x", "a/b", "/.portcullis/auth/envoy", "http://")
	fa := &forwardAuth{path: "/.portcullis/auth"}
	f.Fuzz(func(t *testing.T, method, uri, host, target, fullURL string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		r := &http.Request{Method: "GET", RequestURI: target, Host: host, Header: http.Header{
			"X-Forwarded-Method": {method}, "X-Forwarded-Uri": {uri}, "X-Forwarded-Host": {host},
			"X-Original-Method": {method}, "X-Original-Uri": {uri},
		}}
		if fullURL != "" {
			r.Header["X-Original-Url"] = []string{fullURL}
			delete(r.Header, "X-Original-Uri")
		}
		for _, conv := range []convention{conventionForwarded, conventionNginx, conventionEnvoy} {
			d, err := fa.describe(r, conv)
			if err != nil {
				var he *HTTPError
				if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
					t.Fatalf("%v: got %v, want a 400", conv, err)
				}
				continue
			}
			if !validTarget(d.RequestURI) || !validMethod(d.Method) || !validHost(d.Host) || d.URL == nil {
				t.Fatalf("%v: accepted method %q, target %q, host %q", conv, d.Method, d.RequestURI, d.Host)
			}
		}
	})
}
