package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TestOIDCLoginPKCE walks the issuer's code flow as Portcullis's session sign-in does: a
// code_challenge (S256) at /authorize, the code_verifier at /token with the client credentials
// in the form, and tokens a session can use: an RS256 access token for the provider's audience
// and an id_token for the client with the nonce and a sid.
func TestOIDCLoginPKCE(t *testing.T) {
	o, err := newOIDCIssuer()
	if err != nil {
		t.Fatalf("newOIDCIssuer: %v", err)
	}
	defer o.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	const callback = "http://127.0.0.1:1/.portcullis/sso/callback"
	const verifier = "a-verifier-of-at-least-forty-three-characters-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])

	authorize := func(t *testing.T, method string) *http.Response {
		t.Helper()
		q := url.Values{"client_id": {pcSessionClientID}, "redirect_uri": {callback}, "response_type": {"code"},
			"state": {"the-state"}, "nonce": {"the-nonce"}, "scope": {"openid"}, "code_challenge": {challenge}, "code_challenge_method": {method}}
		resp, err := noRedirect.Get(o.issuer + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatalf("GET /authorize: %v", err)
		}
		resp.Body.Close()
		return resp
	}
	code := func(t *testing.T) string {
		t.Helper()
		resp := authorize(t, "S256")
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("GET /authorize: status %d, want 302", resp.StatusCode)
		}
		back, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || back.Query().Get("state") != "the-state" || back.Query().Get("code") == "" {
			t.Fatalf("redirected to %q (%v), want the callback with a code and the state", resp.Header.Get("Location"), err)
		}
		return back.Query().Get("code")
	}
	redeem := func(t *testing.T, code, verifier string) (int, map[string]any) {
		t.Helper()
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {callback},
			"client_id": {pcSessionClientID}, "client_secret": {pcSessionClientSecret}}
		if verifier != "" {
			form.Set("code_verifier", verifier)
		}
		resp, err := http.PostForm(o.issuer+"/token", form)
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

	if resp := authorize(t, "plain"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("code_challenge_method plain: status %d, want 400", resp.StatusCode)
	}
	for _, tt := range []struct{ name, verifier string }{{"no verifier", ""}, {"wrong verifier", verifier + "x"}} {
		t.Run(tt.name, func(t *testing.T) {
			if status, body := redeem(t, code(t), tt.verifier); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
				t.Errorf("status %d %v, want 400 invalid_grant", status, body)
			}
		})
	}

	status, body := redeem(t, code(t), verifier)
	if status != http.StatusOK || body["token_type"] != "Bearer" {
		t.Fatalf("POST /token: status %d %v, want 200 with a Bearer token", status, body)
	}
	set, err := jwk.Fetch(t.Context(), o.issuer+"/jwks")
	if err != nil {
		t.Fatalf("fetching JWKS: %v", err)
	}
	parse := func(t *testing.T, field, aud string) jwt.Token {
		t.Helper()
		raw, _ := body[field].(string)
		tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithIssuer(o.issuer), jwt.WithAudience(aud), jwt.WithValidate(true))
		if err != nil {
			t.Fatalf("verifying %s: %v", field, err)
		}
		return tok
	}
	access := parse(t, "access_token", oidcAudience)
	id := parse(t, "id_token", pcSessionClientID)
	sid, _ := id.PrivateClaims()["sid"].(string)
	if access.Subject() != pcSessionUser || id.Subject() != pcSessionUser || id.PrivateClaims()["nonce"] != "the-nonce" || sid == "" {
		t.Errorf("access sub %q, id_token sub %q, claims %v", access.Subject(), id.Subject(), id.PrivateClaims())
	}
}

func TestPKCEMatches(t *testing.T) {
	sum := sha256.Sum256([]byte("v"))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	tests := []struct {
		name, challenge, verifier string
		want                      bool
	}{
		{"no PKCE", "", "", true},
		{"verifier without challenge", "", "v", false},
		{"right verifier", challenge, "v", true},
		{"wrong verifier", challenge, "w", false},
		{"no verifier", challenge, "", false},
		{"the challenge as verifier", challenge, challenge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pkceMatches(tt.challenge, tt.verifier); got != tt.want {
				t.Errorf("pkceMatches(%q, %q) = %v, want %v", tt.challenge, tt.verifier, got, tt.want)
			}
		})
	}
}

func TestSessionCookiePortcullis(t *testing.T) {
	flow := &http.Cookie{Name: "portcullis_sso_flow", Value: "f"}
	got, err := sessionCookie([]*http.Cookie{flow, {Name: "portcullis_sso", Value: "a"}, {Name: "portcullis_sso.1", Value: "b"},
		{Name: "portcullis_sso_1", Value: "x"}}, "portcullis_sso", ".")
	if want := "portcullis_sso=a; portcullis_sso.1=b"; err != nil || got != want {
		t.Errorf("got %q, %v, want %q", got, err, want)
	}
	if got, err := sessionCookie([]*http.Cookie{flow}, "portcullis_sso", "."); err == nil {
		t.Errorf("only the sign-in cookie: got %q, want an error", got)
	}
}

func TestPortcullisPolicySession(t *testing.T) {
	l := &lab{upstreamPort: 9100, oidc: &oidcIssuer{issuer: "http://127.0.0.1:9200"}}
	spec := l.pcSessionSpec(map[string]any{"count": limitCount, "time_window": 60})
	b, err := l.portcullisPolicy(spec, "127.0.0.1:9080", "127.0.0.1:9091")
	if err != nil {
		t.Fatalf("portcullisPolicy: %v", err)
	}
	var p struct {
		IdPs []struct {
			Name, Issuer, Audience string
			ClientID               string `json:"client_id"`
			ClientSecret           string `json:"client_secret"`
			Session                struct {
				Secrets      []string
				CookieSecure *bool `json:"cookie_secure"`
			}
		}
		Consumers []struct {
			IdPs    []map[string]any
			Plugins map[string]map[string]any
		}
		Routes []map[string]any
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("decoding policy: %v", err)
	}
	if len(p.IdPs) != 1 || len(p.Consumers) != 1 || len(p.Routes) != 1 {
		t.Fatalf("want one provider, consumer and route: %s", b)
	}
	idp, cons := p.IdPs[0], p.Consumers[0]
	if idp.Issuer != l.oidc.issuer || idp.Audience != oidcAudience || idp.ClientID != pcSessionClientID || idp.ClientSecret != pcSessionClientSecret ||
		len(idp.Session.Secrets) != 1 || len(idp.Session.Secrets[0]) < 32 || idp.Session.CookieSecure == nil || *idp.Session.CookieSecure {
		t.Errorf("provider: %s", b)
	}
	if len(cons.IdPs) != 1 || cons.IdPs[0]["idp"] != idp.Name || cons.IdPs[0]["subject"] != nil {
		t.Errorf("want one claim-matched binding (no subject): %s", b)
	}
	if lc := cons.Plugins["limit-count"]; lc["key"] != "subject" || lc["count"] != float64(limitCount) {
		t.Errorf("limit-count: %v", lc)
	}
	if p.Routes[0]["login"] != idp.Name || p.Routes[0]["upstream"] == nil {
		t.Errorf("route: %v", p.Routes[0])
	}
}

// TestPCSessionSignIn starts pc-session as the load benchmark does, against the built gateway
// (../bin/portcullis; skipped without it) and a stand-in upstream: the sign-in through the
// issuer completes, the cookie reaches the upstream's answer, no cookie is a 401.
func TestPCSessionSignIn(t *testing.T) {
	bin, err := filepath.Abs("../bin/portcullis")
	if err != nil || !isExecutable(bin) {
		t.Skip("no ../bin/portcullis (make build)")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("taskset not installed (util-linux)")
	}
	o, err := newOIDCIssuer()
	if err != nil {
		t.Fatalf("newOIDCIssuer: %v", err)
	}
	defer o.Close()
	ln, err := net.Listen("tcp", net.JoinHostPort(upstreamProxyIP.String(), "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", upstreamProxyIP, err)
	}
	var sawCookie atomic.Bool
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cookie") != "" {
			sawCookie.Store(true)
		}
		w.Write([]byte("ok"))
	}))
	up.Listener.Close()
	up.Listener = ln
	up.Start()
	defer up.Close()

	ps := &procs{dir: t.TempDir()}
	defer ps.Close()
	l := &lab{cfg: config{portcullis: bin, contestantCPU: "0"}, dir: ps.dir, procs: ps, oidc: o,
		client:       &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		upstreamPort: ln.Addr().(*net.TCPAddr).Port}
	c, err := l.portcullis(t.Context(), l.pcSessionSpec(map[string]any{"count": limitCount, "time_window": 60}))
	if err != nil {
		t.Fatalf("starting pc-session: %v", err)
	}
	if cookie := c.header.Get("Cookie"); !strings.HasPrefix(cookie, "portcullis_sso=") {
		t.Errorf("Cookie header %q, want the portcullis_sso session", cookie)
	}
	if sawCookie.Load() {
		t.Error("the session cookie reached the upstream")
	}
	if err := redirectsTo(c.url, o.issuer+"/authorize"); err != nil {
		t.Error(err)
	}
}

func TestSessionTargets(t *testing.T) {
	sum := func(name string, rps ...float64) summary {
		s := summary{c: &contestant{name: name}, rps: rps[0], cpuUS: 1e6 / rps[0], roundRPS: map[int]float64{}}
		for i, r := range rps {
			s.roundRPS[i] = r
		}
		return s
	}
	if got := sessionTargets(map[string]summary{"pc-key": sum("pc-key", 100)}); got != nil {
		t.Errorf("no session contestant: got %q, want none", got)
	}
	by := map[string]summary{
		"pc-session":           sum("pc-session", 8000, 4000),
		"pc-key":               sum("pc-key", 10000, 5000),
		"oauth2-proxy-session": sum("oauth2-proxy-session", 2000, 1000),
	}
	got := strings.Join(sessionTargets(by), "\n")
	for _, s := range []string{"❌ pc-session ≥ 0.9 × pc-key: 0.80 × (by round: 0.80, 0.80)",
		"✅ pc-session ≥ 1.5 × oauth2-proxy-session: 4.00 ×", "by CPU per request, oauth2-proxy-session µs / pc-session µs: 4.00 ×"} {
		if !strings.Contains(got, s) {
			t.Errorf("got\n%s\nwant a line with %q", got, s)
		}
	}
	delete(by, "oauth2-proxy-session")
	if got := strings.Join(sessionTargets(by), "\n"); !strings.Contains(got, "pc-session ≥ 1.5 × oauth2-proxy-session: not measured") {
		t.Errorf("oauth2-proxy skipped: got\n%s", got)
	}
}
