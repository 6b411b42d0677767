package integration

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
	"github.com/portcullis/portcullis/internal/redistest"
)

// The sign-in tests of this file run the built binary against the real Keycloak, with a Go
// HTTP client and a cookie jar in the browser's place (the browser tests drive Chromium
// through the same flow).

const sessionSecretEnv = "SESSION_SECRET=a-session-secret-of-at-least-32-bytes-for-the-tests"

// signInPolicy fronts up with realm corp's client gateway signing people in: People is every
// api-user, two requests an hour each (key subject).
func signInPolicy(t *testing.T, k *kcfixture.Keycloak, upURL string, session map[string]any) string {
	return signInPolicyWith(t, k, upURL, session, nil)
}

// signInPolicyWith is signInPolicy with extra top-level fields (a redis block).
func signInPolicyWith(t *testing.T, k *kcfixture.Keycloak, upURL string, session, extra map[string]any) string {
	t.Helper()
	s := map[string]any{"secrets": []string{"${env:SESSION_SECRET}"}, "cookie_secure": false}
	for key, v := range session {
		s[key] = v
	}
	people := consumerOf("People", map[string]any{"idp": "corp", "realm_roles": []string{kcfixture.RoleAPIUser}})
	people["plugins"] = map[string]any{"limit-count": map[string]any{"count": 1000, "time_window": 3600, "key": "subject"}}
	app := route("app", upURL, nil)
	app["paths"] = []string{"/app", "/app/{rest:.*}"}
	app["login"] = "corp"
	p := map[string]any{
		"idps":      []any{corpIdP(k, map[string]any{"session": s})},
		"consumers": []any{people},
		"routes":    []any{app},
	}
	for key, v := range extra {
		p[key] = v
	}
	return policyJSON(t, p)
}

// enableSignIn lets client gateway of realm corp sign people in at origin (gw's URL, or the
// same port on localhost): the code flow with PKCE, the callback as redirect URI, gw's
// back-channel logout endpoint (on 127.0.0.1, which the Keycloak server reaches) when
// backchannel is set. The client is restored when the test ends.
func enableSignIn(t *testing.T, k *kcfixture.Keycloak, gw *gatewayProc, backchannel bool, origins ...string) {
	t.Helper()
	ctx := t.Context()
	restore, err := k.SnapshotClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restore(context.Background()); err != nil {
			t.Errorf("restoring client gateway: %v", err)
		}
	})
	if len(origins) == 0 {
		origins = []string{gw.URL}
	}
	var redirects []string
	for _, o := range origins {
		redirects = append(redirects, o+"/.portcullis/corp/callback", o+"/*")
	}
	bc := ""
	if backchannel {
		bc = gw.URL + "/.portcullis/corp/backchannel-logout"
	}
	if err := k.ConfigureBrowserClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway, redirects, bc); err != nil {
		t.Fatalf("configuring client gateway for sign-in: %v", err)
	}
}

// person is a browser stand-in: a client with its own cookie jar that follows redirects.
type person struct {
	t      *testing.T
	client *http.Client
}

func newPerson(t *testing.T) *person {
	jar, _ := cookiejar.New(nil)
	return &person{t: t, client: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// get navigates to u as a browser does (Accept: text/html), following redirects.
func (p *person) get(u string) (*http.Response, string) {
	p.t.Helper()
	return p.do("GET", u, "text/html,application/xhtml+xml", nil)
}

func (p *person) do(method, u, accept string, form url.Values) (*http.Response, string) {
	p.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var loginForm = regexp.MustCompile(`<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"`)

// signIn submits Keycloak's login form of page as user.
func (p *person) signIn(page, user, password string) (*http.Response, string) {
	p.t.Helper()
	m := loginForm.FindStringSubmatch(page)
	if m == nil {
		p.t.Fatalf("not Keycloak's login page:\n%.2000s", page)
	}
	return p.do("POST", html.UnescapeString(m[1]), "text/html", url.Values{"username": {user}, "password": {password}, "credentialId": {""}})
}

func (p *person) onLoginPage(page string) bool { return loginForm.MatchString(page) }

// cookieHeader is the Cookie header the person sends to gwURL: every chunk of the session.
func (p *person) cookieHeader(gwURL string) string {
	u, _ := url.Parse(gwURL + "/app")
	var parts []string
	for _, c := range p.client.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// sessionCookie is the gateway's session cookie in the jar, or "".
func (p *person) sessionCookie(gwURL string) string {
	u, _ := url.Parse(gwURL + "/app")
	for _, c := range p.client.Jar.Cookies(u) {
		if c.Name == "portcullis_corp" {
			return c.Value
		}
	}
	return ""
}

func TestSignInWithKeycloak(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	gw := startGateway(t, signInPolicy(t, k, up.URL, nil), corpSecretEnv, sessionSecretEnv)
	enableSignIn(t, k, gw, true)
	page := gw.URL + "/app/page?tab=1"

	alice := newPerson(t)
	t.Run("a protected page sends the browser to sign in and back", func(t *testing.T) {
		resp, body := alice.get(page)
		if !alice.onLoginPage(body) {
			t.Fatalf("got %d at %s, want Keycloak's login page", resp.StatusCode, resp.Request.URL)
		}
		resp, body = alice.signIn(body, kcfixture.UserAlice, kcfixture.AlicePassword)
		if resp.StatusCode != 200 || resp.Request.URL.String() != page {
			t.Fatalf("after signing in: got %d at %s (%.300s), want 200 at %s", resp.StatusCode, resp.Request.URL, body, page)
		}
		h := up.last().Header
		if h.Get("X-Consumer-Username") != "People" || h.Get("X-Consumer-Subject") != kcfixture.AliceSubject {
			t.Errorf("upstream: got consumer %q subject %q, want People %s", h.Get("X-Consumer-Username"), h.Get("X-Consumer-Subject"), kcfixture.AliceSubject)
		}
		if strings.Contains(h.Get("Cookie"), "portcullis_corp") {
			t.Errorf("upstream got the session cookie: %q", h.Get("Cookie"))
		}
	})
	t.Run("the session serves pages and API calls", func(t *testing.T) {
		if resp, _ := alice.get(page); resp.StatusCode != 200 || resp.Request.URL.String() != page {
			t.Fatalf("reload: got %d at %s, want 200 without a sign-in", resp.StatusCode, resp.Request.URL)
		}
		if resp, body := alice.do("GET", gw.URL+"/app/api/items", "application/json", nil); resp.StatusCode != 200 {
			t.Fatalf("an API call with the session: got %d %s, want 200", resp.StatusCode, body)
		}
	})
	t.Run("explain decides a request carrying the session cookie", func(t *testing.T) {
		t.Setenv("CORP_SECRET", kcfixture.GatewaySecret)
		name, value, _ := strings.Cut(sessionSecretEnv, "=")
		t.Setenv(name, value)
		out, stderr, code := runCLI(t, "", "explain", "-c", gw.PolicyPath, "-H", "Cookie: "+alice.cookieHeader(gw.URL), "GET", "/app/page")
		if code != 0 || !strings.Contains(out, `claim-matched: consumer "People"`) {
			t.Errorf("explain: exit %d\n%s%s\nwant the session's person matched to People", code, out, stderr)
		}
	})
	t.Run("API calls without a session get 401, not a redirect", func(t *testing.T) {
		noClientRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, accept := range []string{"application/json", "*/*"} {
			req, _ := http.NewRequest("GET", page, nil)
			req.Header.Set("Accept", accept)
			resp, err := noClientRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("Accept %s: got %d, want 401", accept, resp.StatusCode)
			}
		}
		req, _ := http.NewRequest("GET", page, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := noClientRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || !strings.HasPrefix(loc, k.Issuer(kcfixture.RealmCorp)) {
			t.Errorf("a browser: got %d to %q, want 302 to the realm", resp.StatusCode, loc)
		}
	})
	t.Run("logout ends the session here and at Keycloak", func(t *testing.T) {
		resp, _ := alice.get(gw.URL + "/.portcullis/corp/logout")
		if got := resp.Request.URL.String(); got != gw.URL+"/" {
			t.Errorf("after logout: landed at %s, want %s/ (the post-logout redirect)", got, gw.URL)
		}
		if _, body := alice.get(page); !alice.onLoginPage(body) {
			t.Errorf("the next visit: want Keycloak's login page (the Keycloak session ended too)")
		}
	})
	t.Run("an admin signing the user out ends the session at once (back-channel logout)", func(t *testing.T) {
		bob := newPerson(t)
		_, body := bob.get(page)
		if resp, _ := bob.signIn(body, kcfixture.UserBob, kcfixture.BobPassword); resp.StatusCode != 200 {
			t.Fatalf("bob signing in: got %d", resp.StatusCode)
		}
		if err := k.LogoutUser(t.Context(), kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
			t.Fatal(err)
		}
		// Keycloak posts the logout token before its admin call answers.
		if resp, body := bob.do("GET", gw.URL+"/app/api/items", "application/json", nil); resp.StatusCode != 401 {
			t.Errorf("after the back-channel logout: got %d %s, want 401", resp.StatusCode, body)
		}
		if got := gw.metric("portcullis_idp_request_duration_seconds_count", `op="backchannel_logout"`, `outcome="ok"`); got < 1 {
			t.Errorf("back-channel logouts counted: %v, want at least 1", got)
		}
	})
	t.Run("nothing secret is logged", func(t *testing.T) {
		logs := gw.stderr.String() + gw.stdout.String()
		if c := alice.sessionCookie(gw.URL); c != "" && strings.Contains(logs, c[:40]) {
			t.Errorf("the logs hold a session cookie")
		}
		for _, s := range []string{"code=", "state=", "id_token_hint", kcfixture.GatewaySecret} {
			if strings.Contains(logs, s) {
				t.Errorf("the logs hold %q", s)
			}
		}
	})
}

// TestSignInRefresh: with the realm's access-token lifespan shortened, requests keep working
// past the token's expiry and a new cookie is set; once the user's Keycloak session is
// deleted, the next refresh fails and the person is signed out.
func TestSignInRefresh(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	// Access tokens of 3 s, refreshed 1 s before they expire.
	const lifespan = 3
	before, err := k.RealmSettings(t.Context(), kcfixture.RealmCorp)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetAccessTokenLifespan(t.Context(), kcfixture.RealmCorp, lifespan); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.SetAccessTokenLifespan(context.Background(), kcfixture.RealmCorp, before.AccessTokenLifespan); err != nil {
			t.Errorf("restoring the access-token lifespan: %v", err)
		}
	})
	gw := startGateway(t, signInPolicy(t, k, up.URL, map[string]any{"refresh_leeway": "1s"}), corpSecretEnv, sessionSecretEnv)
	// Without a back-channel logout URL, so that only the failing refresh can end the session.
	enableSignIn(t, k, gw, false)
	page := gw.URL + "/app/page"
	alice := newPerson(t)
	_, body := alice.get(page)
	if resp, _ := alice.signIn(body, kcfixture.UserAlice, kcfixture.AlicePassword); resp.StatusCode != 200 {
		t.Fatalf("signing in: got %d", resp.StatusCode)
	}
	first := alice.sessionCookie(gw.URL)
	// Past the access token's expiry: what is awaited is the IdP's clock, not another process.
	time.Sleep(lifespan * time.Second)
	resp, _ := alice.do("GET", gw.URL+"/app/api", "application/json", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("past the access token's expiry: got %d, want 200 (refreshed)", resp.StatusCode)
	}
	if second := alice.sessionCookie(gw.URL); second == "" || second == first {
		t.Errorf("the refreshed session's cookie was not re-issued")
	}
	if got := gw.metric("portcullis_idp_request_duration_seconds_count", `op="refresh"`, `outcome="ok"`); got < 1 {
		t.Errorf("refreshes counted: %v, want at least 1", got)
	}

	if err := k.DeleteUserSessions(t.Context(), kcfixture.RealmCorp, kcfixture.UserAlice); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lifespan * time.Second) // the refreshed token expires: the next request refreshes
	if resp, body := alice.do("GET", gw.URL+"/app/api", "application/json", nil); resp.StatusCode != 401 {
		t.Errorf("after the Keycloak session was deleted: got %d %s, want 401 (the refresh fails, the session ends)", resp.StatusCode, body)
	}
	if alice.sessionCookie(gw.URL) != "" {
		t.Errorf("the ended session's cookie is still set")
	}
	if got := gw.metric("portcullis_idp_request_duration_seconds_count", `op="refresh"`, `outcome="error"`); got < 1 {
		t.Errorf("failed refreshes counted: %v, want at least 1", got)
	}
}

// TestSignInLogoutAcrossReplicas: two replicas share Redis; Keycloak's back-channel logout
// reaches one, and the session ends on both, whether the session is the cookie or is stored in
// Redis (the cookie then holds only an id).
func TestSignInLogoutAcrossReplicas(t *testing.T) {
	k := keycloakFor(t)
	rd := redistest.Start(t)
	for _, store := range []string{"cookie", "redis"} {
		t.Run("store "+store, func(t *testing.T) {
			up := newUpstream(t, nil)
			policy := signInPolicyWith(t, k, up.URL, map[string]any{"store": store}, map[string]any{"redis": map[string]any{"addr": rd.Addr}})
			a := startGateway(t, policy, corpSecretEnv, sessionSecretEnv)
			b := startGateway(t, policy, corpSecretEnv, sessionSecretEnv)
			enableSignIn(t, k, a, true)

			// Both replicas listen on 127.0.0.1: the jar sends the session to either.
			bob := newPerson(t)
			_, body := bob.get(a.URL + "/app/page")
			if resp, _ := bob.signIn(body, kcfixture.UserBob, kcfixture.BobPassword); resp.StatusCode != 200 {
				t.Fatalf("signing in at replica a: got %d", resp.StatusCode)
			}
			if c := bob.sessionCookie(a.URL); store == "redis" && (c == "" || len(c) > 200) {
				t.Errorf("store redis: the session cookie is %d bytes, want a short id", len(c))
			}
			for name, gw := range map[string]*gatewayProc{"a": a, "b": b} {
				if resp, body := bob.do("GET", gw.URL+"/app/api", "application/json", nil); resp.StatusCode != 200 {
					t.Fatalf("replica %s before the logout: got %d %s, want 200", name, resp.StatusCode, body)
				}
			}
			if err := k.LogoutUser(t.Context(), kcfixture.RealmCorp, kcfixture.UserBob); err != nil {
				t.Fatal(err)
			}
			for name, gw := range map[string]*gatewayProc{"b": b, "a": a} {
				if resp, body := bob.do("GET", gw.URL+"/app/api", "application/json", nil); resp.StatusCode != 401 {
					t.Errorf("replica %s after the back-channel logout at a: got %d %s, want 401", name, resp.StatusCode, body)
				}
			}
		})
	}
}
