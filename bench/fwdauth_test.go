package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TestOIDCLogin walks the issuer's authorization-code flow as oauth2-proxy does: /authorize
// redirects back with a code and the state, /token exchanges the code once for an id_token the
// issuer's JWKS verifies.
func TestOIDCLogin(t *testing.T) {
	o, err := newOIDCIssuer()
	if err != nil {
		t.Fatalf("newOIDCIssuer: %v", err)
	}
	defer o.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	const callback = "http://127.0.0.1:1/oauth2/callback"

	authorize := func(t *testing.T, client, responseType string) *http.Response {
		t.Helper()
		q := url.Values{"client_id": {client}, "redirect_uri": {callback}, "response_type": {responseType},
			"state": {"the-state"}, "nonce": {"the-nonce"}, "scope": {"openid email profile"}}
		resp, err := noRedirect.Get(o.issuer + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatalf("GET /authorize: %v", err)
		}
		resp.Body.Close()
		return resp
	}
	redeem := func(t *testing.T, secret, code string) (int, map[string]any) {
		t.Helper()
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {callback}}
		req, err := http.NewRequest(http.MethodPost, o.issuer+"/token", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(o2pClientID, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /token: %v", err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("decoding /token's answer: %v", err)
		}
		return resp.StatusCode, body
	}

	for _, tt := range []struct{ name, client, responseType string }{
		{"unknown client", "someone", "code"},
		{"implicit flow", o2pClientID, "id_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if resp := authorize(t, tt.client, tt.responseType); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
		})
	}

	resp := authorize(t, o2pClientID, "code")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET /authorize: status %d, want 302", resp.StatusCode)
	}
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("parsing Location: %v", err)
	}
	code := back.Query().Get("code")
	if got := back.Scheme + "://" + back.Host + back.Path; got != callback || code == "" || back.Query().Get("state") != "the-state" {
		t.Fatalf("redirected to %s, want %s with a code and state=the-state", back, callback)
	}

	if status, body := redeem(t, "wrong-secret", code); status != http.StatusBadRequest || body["error"] != "invalid_client" {
		t.Errorf("wrong secret: status %d %v, want 400 invalid_client", status, body)
	}
	status, body := redeem(t, o2pClientSecret, code)
	if status != http.StatusOK || body["token_type"] != "Bearer" {
		t.Fatalf("POST /token: status %d %v, want 200 with a Bearer token", status, body)
	}
	raw, _ := body["id_token"].(string)
	set, err := jwk.Fetch(t.Context(), o.issuer+"/jwks")
	if err != nil {
		t.Fatalf("fetching JWKS: %v", err)
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithIssuer(o.issuer), jwt.WithAudience(o2pClientID), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("verifying id_token: %v", err)
	}
	claims := tok.PrivateClaims()
	if tok.Subject() != o2pUser || claims["email"] != o2pEmail || claims["email_verified"] != true || claims["nonce"] != "the-nonce" {
		t.Errorf("id_token claims: sub %q, %v", tok.Subject(), claims)
	}
	if status, body := redeem(t, o2pClientSecret, code); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("code used twice: status %d %v, want 400 invalid_grant", status, body)
	}
}

func TestSessionCookie(t *testing.T) {
	csrf := &http.Cookie{Name: "_oauth2_proxy_csrf", Value: "c"}
	tests := []struct {
		name    string
		cookies []*http.Cookie
		want    string
	}{
		{"one", []*http.Cookie{csrf, {Name: "_oauth2_proxy", Value: "s"}}, "_oauth2_proxy=s"},
		{"split", []*http.Cookie{{Name: "_oauth2_proxy_0", Value: "a"}, csrf, {Name: "_oauth2_proxy_1", Value: "b"}},
			"_oauth2_proxy_0=a; _oauth2_proxy_1=b"},
		{"no session", []*http.Cookie{csrf, {Name: "_oauth2_proxy_-1", Value: "x"}, {Name: "other", Value: "y"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sessionCookie(tt.cookies, o2pCookieName, "_")
			if tt.want == "" {
				if err == nil {
					t.Errorf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}

// TestFwdNginxConf checks that the forward-auth configurations keep the example's shape, and
// that nginx accepts them (when it is installed).
func TestFwdNginxConf(t *testing.T) {
	dir := t.TempDir()
	l := &lab{dir: dir, upstreamPort: 9100}
	confs := map[string]string{
		"pc":  l.fwdNginxConf("pc", "127.0.0.1:8080", "127.0.0.1:9080", pcAuthLocation, "/.portcullis/auth/nginx", pcFwdCopy, pcFwdRefused),
		"o2p": l.fwdNginxConf("o2p", "127.0.0.1:8081", "127.0.0.1:4180", o2pAuthLocation, "/oauth2/auth", o2pFwdCopy, ""),
	}
	common := []string{
		"keepalive 64;", "proxy_pass_request_body off;", `proxy_set_header Content-Length "";`,
		"proxy_set_header X-Original-Method $request_method;", "proxy_set_header X-Original-URI    $request_uri;",
		`proxy_set_header X-Original-URL    "";`, "proxy_set_header Host              $host;", "internal;",
		"server 127.0.0.2:9100;", "proxy_pass http://up;",
	}
	want := map[string][]string{
		"pc": {"auth_request /.portcullis-auth;", "proxy_pass http://auth/.portcullis/auth/nginx;", "server 127.0.0.1:9080;",
			"proxy_set_header X-Consumer-Username     $portcullis_consumer;", "error_page 401 403 500 = @portcullis_refused;",
			"location @portcullis_refused {"},
		"o2p": {"auth_request /oauth2/auth;", "proxy_pass http://auth/oauth2/auth;", "server 127.0.0.1:4180;",
			"auth_request_set $o2p_user  $upstream_http_x_auth_request_user;"},
	}
	for name, conf := range confs {
		for _, s := range append(common, want[name]...) {
			if !strings.Contains(conf, s) {
				t.Errorf("%s: the configuration lacks %q:\n%s", name, s, conf)
			}
		}
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx not installed: the configurations are not checked by nginx -t")
	}
	for name, conf := range confs {
		path := filepath.Join(dir, name+".conf")
		if err := errors.Join(os.WriteFile(path, []byte(conf), 0o644), os.MkdirAll(filepath.Join(dir, name+"-tmp"), 0o777)); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(nginx, "-t", "-q", "-p", dir, "-e", filepath.Join(dir, name+".error.log"), "-c", path).CombinedOutput(); err != nil {
			t.Errorf("%s: nginx -t: %v: %s", name, err, out)
		}
	}
}

func TestPortcullisPolicyForwardAuth(t *testing.T) {
	l := &lab{upstreamPort: 9100}
	spec := pcSpec{idp: map[string]any{"name": "keys", "type": "key-auth"}, binding: map[string]any{"idp": "keys", "key": benchKey},
		limit: map[string]any{"count": limitCount, "time_window": 60}, forwardAuth: true}
	b, err := l.portcullisPolicy(spec, "127.0.0.1:9080", "127.0.0.1:9091")
	if err != nil {
		t.Fatalf("portcullisPolicy: %v", err)
	}
	var p struct {
		TrustedProxies []string          `json:"trusted_proxies"`
		ForwardAuth    map[string]any    `json:"forward_auth"`
		Routes         []map[string]any  `json:"routes"`
		Consumers      []json.RawMessage `json:"consumers"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("decoding policy: %v", err)
	}
	if len(p.TrustedProxies) != 1 || p.TrustedProxies[0] != "127.0.0.1" || p.ForwardAuth == nil || len(p.Consumers) != 1 {
		t.Errorf("policy: %s", b)
	}
	if len(p.Routes) != 1 || p.Routes[0]["upstream"] != nil {
		t.Errorf("want one route without upstream: %s", b)
	}
}

func TestForwardAuthTargets(t *testing.T) {
	sum := func(name string, rps ...float64) summary {
		s := summary{c: &contestant{name: name}, rps: rps[0], cpuUS: 1e6 / rps[0], roundRPS: map[int]float64{}}
		for i, r := range rps {
			s.roundRPS[i] = r
		}
		return s
	}
	if got := forwardAuthTargets(map[string]summary{"pc-key": sum("pc-key", 100)}); got != nil {
		t.Errorf("no forward-auth contestant: got %q, want none", got)
	}
	by := map[string]summary{
		"nginx-fwd-pc":           sum("nginx-fwd-pc", 8000, 4000),
		"nginx-fwd-oauth2-proxy": sum("nginx-fwd-oauth2-proxy", 4000, 2000),
		"nginx-key-limit":        sum("nginx-key-limit", 16000, 8000),
	}
	got := strings.Join(forwardAuthTargets(by), "\n")
	for _, s := range []string{"✅ nginx-fwd-pc ≥ 1.5 × nginx-fwd-oauth2-proxy: 2.00 × (by round: 2.00, 2.00)", "nginx-fwd-pc / nginx-key-limit", ": 0.50 ×",
		"by CPU per request, nginx-fwd-oauth2-proxy µs / nginx-fwd-pc µs: 2.00 ×"} {
		if !strings.Contains(got, s) {
			t.Errorf("got\n%s\nwant a line with %q", got, s)
		}
	}
	delete(by, "nginx-fwd-oauth2-proxy")
	if got := strings.Join(forwardAuthTargets(by), "\n"); !strings.Contains(got, "nginx-fwd-oauth2-proxy: not measured") {
		t.Errorf("oauth2-proxy skipped: got\n%s", got)
	}
}
