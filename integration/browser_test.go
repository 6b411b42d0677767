package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// The browser the sign-in tests drive: Debian's headless Chromium over the DevTools protocol
// (chromedp, through a pipe). Each test gets its own browser with a fresh profile, so cookies
// never leak from one test to another. A sign-in test reads like this:
//
//	k := keycloakFor(t)
//	restore, err := k.SnapshotClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
//	t.Cleanup(func() { restore(context.Background()) })
//	k.ConfigureBrowserClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway,
//		[]string{gwURL + "/callback"}, backchannelURL) // back-channel URL on 127.0.0.1
//	b := newBrowser(t)
//	b.open(gwURL + "/app/")                            // redirected to Keycloak's login page
//	finalURL, text, err := b.signIn(kcfixture.UserAlice, kcfixture.AlicePassword)
//	session, err := b.cookie(gwURL, "session-cookie-name") // HttpOnly, SameSite, ...
//	status, body, err := b.fetch(gwURL+"/api/pets", nil)   // same-origin, with the cookie
//
// Serve the gateway on http://localhost:P when Keycloak is on http://127.0.0.1:K to make them
// different sites, as in production (a SameSite=Strict cookie is then not sent on the redirect
// back from the login page).

// browserActionTimeout bounds one call of the driver (a navigation with its redirects, a sign-in,
// a fetch): Keycloak renders its first login page slowly on a small machine.
const browserActionTimeout = 60 * time.Second

// browser is a headless Chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab's; no deadline (it bounds the browser's life)
	log *lockedBuffer   // Chromium's output and chromedp's errors, shown when the test fails
}

// chromiumPath finds the Chromium binary: Debian's /usr/bin/chromium, else chromium or
// chromium-browser on PATH.
func chromiumPath() (string, error) {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on this machine (apt-get install chromium)")
}

// newBrowser starts a headless Chromium with a fresh profile for t and closes it (waiting for
// the process to end) when t ends. Without Chromium the test is skipped, or fails when CI=true.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := chromiumPath()
	if err != nil {
		if kcfixture.InCI() {
			t.Fatalf("CI=true and the browser tests need Chromium: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	logs := &lockedBuffer{}
	// The profile directory is created before the cleanup that closes the browser is
	// registered, so that it is removed after the browser is gone.
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
		// Nothing outside this machine: other names do not resolve. The rule applies to IP
		// literals too, so the loopback addresses are excluded as well as localhost.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(logs),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(func(format string, args ...any) { fmt.Fprintf(logs, "chromedp: "+format+"\n", args...) }),
	)
	b := &browser{t: t, ctx: ctx, log: logs}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing the browser: %v", err)
		}
		cancelTab()
		cancelAlloc() // waits until the process has ended and its resources are freed
		if t.Failed() {
			t.Logf("browser log (tail):\n%s", tail(logs.String(), 40))
		}
	})
	// The first action starts the browser; its context must have no deadline (it would end the
	// browser), so a start that hangs is bounded here instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting Chromium %s: %v\n%s", path, err, tail(logs.String(), 40))
		}
	case <-time.After(browserActionTimeout):
		t.Fatalf("starting Chromium %s: not ready after %s\n%s", path, browserActionTimeout, tail(logs.String(), 40))
	}
	return b
}

// action returns a context for one call of the driver.
func (b *browser) action() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, browserActionTimeout)
}

// open navigates to url and waits until the page (after every HTTP redirect) has loaded. It
// returns the final URL and the page's text (document.body.innerText). An HTTP error status is
// a page like another; a failed load (connection refused, a name that does not resolve) is an
// error.
func (b *browser) open(url string) (finalURL, bodyText string, err error) {
	ctx, cancel := b.action()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return "", "", fmt.Errorf("opening %s: %w", url, err)
	}
	return b.current(ctx)
}

// page returns the current URL and text of the tab.
func (b *browser) page() (finalURL, bodyText string, err error) {
	ctx, cancel := b.action()
	defer cancel()
	return b.current(ctx)
}

func (b *browser) current(ctx context.Context) (string, string, error) {
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "", "", fmt.Errorf("reading the page's URL: %w", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return loc, "", fmt.Errorf("reading the text of %s: %w", loc, err)
	}
	return loc, text, nil
}

// onLoginPage reports whether the tab shows Keycloak's login form.
func (b *browser) onLoginPage() bool {
	ctx, cancel := b.action()
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("#kc-form-login") !== null`))
	if err != nil {
		b.t.Logf("looking for Keycloak's login form: %v", err)
		return false
	}
	return ok
}

// signIn fills Keycloak's login form on the current page with user and password, submits it,
// and waits until the page it leads to (after every redirect, e.g. back to the gateway's
// callback and on to the original URL) has loaded. It returns that page. A rejected sign-in is
// not an error: the result is Keycloak's login page again (onLoginPage), whose text carries
// Keycloak's message ("Invalid username or password."). It is an error to call signIn when the
// tab does not show the login form.
func (b *browser) signIn(user, password string) (finalURL, bodyText string, err error) {
	if !b.onLoginPage() {
		loc, text, _ := b.page()
		return "", "", fmt.Errorf("signing in as %s: not on Keycloak's login page but on %s: %q", user, loc, shorten(text, 300))
	}
	ctx, cancel := b.action()
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#username"), user),
		chromedp.SetValue(chromedp.CSS("#password"), password),
	); err != nil {
		return "", "", fmt.Errorf("signing in as %s: filling the login form: %w", user, err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#kc-login"))); err != nil {
		return "", "", fmt.Errorf("signing in as %s: submitting the login form: %w", user, err)
	}
	return b.current(ctx)
}

// cookies returns the cookies the browser holds for url (those it would send there), with their
// attributes: HttpOnly, Secure, SameSite (http.SameSiteDefaultMode when the cookie sets none),
// Domain, Path and Expires (zero for a session cookie).
func (b *browser) cookies(url string) ([]*http.Cookie, error) {
	ctx, cancel := b.action()
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	if err != nil {
		return nil, fmt.Errorf("reading the cookies of %s: %w", url, err)
	}
	out := make([]*http.Cookie, 0, len(res.Cookies))
	for _, c := range res.Cookies {
		hc := &http.Cookie{
			Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path,
			HttpOnly: c.HTTPOnly, Secure: c.Secure,
		}
		if !c.Session && c.Expires > 0 {
			hc.Expires = time.Unix(0, int64(c.Expires*float64(time.Second)))
		}
		switch c.SameSite {
		case network.CookieSameSiteStrict:
			hc.SameSite = http.SameSiteStrictMode
		case network.CookieSameSiteLax:
			hc.SameSite = http.SameSiteLaxMode
		case network.CookieSameSiteNone:
			hc.SameSite = http.SameSiteNoneMode
		default:
			hc.SameSite = http.SameSiteDefaultMode
		}
		out = append(out, hc)
	}
	return out, nil
}

// cookie returns the browser's cookie named name for url, or nil.
func (b *browser) cookie(url, name string) (*http.Cookie, error) {
	cs, err := b.cookies(url)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, nil
}

// fetch runs fetch(url) with headers in the current page, as the page's own script would: the
// browser sends its cookies when url is of the page's origin (open a page of that origin
// first), and applies CORS otherwise. Redirects are not followed: a redirect answer gives status
// 0 and an empty body (fetch's "opaqueredirect"). A request the browser refuses (a network
// error, a CORS failure) is an error.
func (b *browser) fetch(url string, headers map[string]string) (status int, body string, err error) {
	return b.fetchRequest(http.MethodGet, url, headers, "")
}

// fetchRequest is fetch with a method and a body ("" for none).
func (b *browser) fetchRequest(method, url string, headers map[string]string, body string) (status int, respBody string, err error) {
	if headers == nil {
		headers = map[string]string{}
	}
	init := map[string]any{"method": method, "headers": headers, "redirect": "manual", "credentials": "same-origin"}
	if body != "" {
		init["body"] = body
	}
	rawURL, _ := json.Marshal(url)
	rawInit, _ := json.Marshal(init)
	script := `(async () => {
		try {
			const r = await fetch(` + string(rawURL) + `, ` + string(rawInit) + `);
			return {status: r.status, body: await r.text(), error: ""};
		} catch (e) {
			return {status: 0, body: "", error: String(e)};
		}
	})()`
	ctx, cancel := b.action()
	defer cancel()
	res, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
		Error  string `json:"error"`
	}](script, chromedp.EvalAwaitPromise))
	if err != nil {
		return 0, "", fmt.Errorf("fetch %s %s: %w", method, url, err)
	}
	if res.Error != "" {
		return 0, "", fmt.Errorf("fetch %s %s: %s", method, url, res.Error)
	}
	return res.Status, res.Body, nil
}

// tail returns the last lines of a browser log, without Chromium's complaints about the D-Bus
// a test machine does not run.
func tail(s string, lines int) string {
	var parts []string
	for line := range strings.Lines(s) {
		if !strings.Contains(line, "dbus/") {
			parts = append(parts, strings.TrimRight(line, "\n"))
		}
	}
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// TestBrowserHarness proves the driver: against a page of an httptest server (a cookie, a
// redirect, text, a same-origin fetch), and against Keycloak (the authorization-code flow with
// PKCE of client gateway, signed in through the login form, back at a callback with a code that
// Keycloak then exchanges for tokens; a deleted session reaches the back-channel logout URL).
func TestBrowserHarness(t *testing.T) {
	t.Run("page", testBrowserPage)
	t.Run("keycloak sign-in", testBrowserKeycloakSignIn)
}

func testBrowserPage(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /start", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "harness", Value: "v1", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /landing", func(w http.ResponseWriter, r *http.Request) {
		got := "none"
		if c, err := r.Cookie("harness"); err == nil {
			got = c.Value
		}
		fmt.Fprintf(w, "<!doctype html><title>landing</title><body><h1>Landed</h1><p>cookie harness=%s</p></body>", got)
	})
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("harness")
		if err != nil {
			http.Error(w, "no session", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "api cookie=%s x-test=%s", c.Value, r.Header.Get("X-Test"))
	})
	mux.HandleFunc("GET /elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/landing", http.StatusFound)
	})
	ts := httptest.NewServer(mux) // on 127.0.0.1
	t.Cleanup(ts.Close)

	b := newBrowser(t)
	// localhost goes through the host resolver rule, 127.0.0.1 does not.
	localhostURL := strings.Replace(ts.URL, "127.0.0.1", "localhost", 1)
	opens := []struct {
		name     string
		url      string
		wantURL  string
		wantText []string
	}{
		{"redirect that sets a cookie", ts.URL + "/start", ts.URL + "/landing", []string{"Landed", "cookie harness=v1"}},
		{"the cookie is sent again", ts.URL + "/landing", ts.URL + "/landing", []string{"cookie harness=v1"}},
		{"localhost is another site, without the cookie", localhostURL + "/landing", localhostURL + "/landing", []string{"cookie harness=none"}},
		{"an error status is a page", ts.URL + "/missing", ts.URL + "/missing", []string{"404 page not found"}},
	}
	for _, tc := range opens {
		t.Run("open "+tc.name, func(t *testing.T) {
			gotURL, text, err := b.open(tc.url)
			if err != nil {
				t.Fatalf("open(%s): %v", tc.url, err)
			}
			if gotURL != tc.wantURL {
				t.Errorf("final URL = %s, want %s", gotURL, tc.wantURL)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(text, w) {
					t.Errorf("page text = %q, want it to contain %q", text, w)
				}
			}
		})
	}

	t.Run("a name outside is not resolved", func(t *testing.T) {
		if _, _, err := b.open("http://portcullis.invalid-name.example/"); err == nil {
			t.Error("open of an outside name succeeded, want a load error")
		}
	})

	t.Run("cookies", func(t *testing.T) {
		cs, err := b.cookies(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 {
			t.Fatalf("got %d cookies %v, want 1", len(cs), cs)
		}
		c := cs[0]
		if c.Name != "harness" || c.Value != "v1" || !c.HttpOnly || c.Secure || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || !c.Expires.IsZero() {
			t.Errorf("cookie = %+v, want harness=v1, HttpOnly, not Secure, SameSite=Lax, Path=/, a session cookie", c)
		}
		if other, err := b.cookies(localhostURL); err != nil || len(other) != 0 {
			t.Errorf("cookies of %s = %v, %v; want none", localhostURL, other, err)
		}
		lookups := []struct {
			name      string
			wantValue string // "" for no cookie
		}{
			{"harness", "v1"},
			{"absent", ""},
		}
		for _, l := range lookups {
			c, err := b.cookie(ts.URL, l.name)
			switch {
			case err != nil:
				t.Errorf("cookie(%s): %v", l.name, err)
			case l.wantValue == "" && c != nil:
				t.Errorf("cookie(%s) = %v, want nil", l.name, c)
			case l.wantValue != "" && (c == nil || c.Value != l.wantValue):
				t.Errorf("cookie(%s) = %v, want value %s", l.name, c, l.wantValue)
			}
		}
	})

	t.Run("fetch", func(t *testing.T) {
		if _, _, err := b.open(ts.URL + "/landing"); err != nil {
			t.Fatal(err)
		}
		fetches := []struct {
			name       string
			url        string
			headers    map[string]string
			wantStatus int
			wantBody   string
		}{
			{"same origin carries the cookie", ts.URL + "/api", map[string]string{"X-Test": "42"}, http.StatusOK, "api cookie=v1 x-test=42"},
			{"a redirect is not followed", ts.URL + "/elsewhere", nil, 0, ""},
			{"an error status", ts.URL + "/missing", nil, http.StatusNotFound, "404 page not found"},
		}
		for _, tc := range fetches {
			t.Run(tc.name, func(t *testing.T) {
				status, body, err := b.fetch(tc.url, tc.headers)
				if err != nil {
					t.Fatal(err)
				}
				if status != tc.wantStatus {
					t.Errorf("status = %d, want %d (body %q)", status, tc.wantStatus, body)
				}
				if !strings.Contains(body, tc.wantBody) {
					t.Errorf("body = %q, want it to contain %q", body, tc.wantBody)
				}
			})
		}
	})

	t.Run("a second browser has its own cookies", func(t *testing.T) {
		other := newBrowser(t)
		if _, text, err := other.open(ts.URL + "/landing"); err != nil || !strings.Contains(text, "cookie harness=none") {
			t.Errorf("the second browser's page = %q, %v; want it without the first one's cookie", text, err)
		}
		if other.onLoginPage() {
			t.Error("onLoginPage on a page without Keycloak's form = true, want false")
		}
	})
}

func testBrowserKeycloakSignIn(t *testing.T) {
	k := keycloakFor(t)
	ctx := t.Context()

	callbacks := make(chan url.Values, 8)
	logoutTokens := make(chan string, 8)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		callbacks <- r.URL.Query()
		fmt.Fprint(w, "<!doctype html><body><p>callback reached</p></body>")
	})
	mux.HandleFunc("POST /backchannel-logout", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		logoutTokens <- r.PostForm.Get("logout_token")
	})
	cb := httptest.NewServer(mux) // 127.0.0.1: reachable by the Keycloak server too
	t.Cleanup(cb.Close)
	redirectURI := cb.URL + "/callback"

	restore, err := k.SnapshotClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restore(context.Background()); err != nil {
			t.Errorf("restoring client gateway: %v", err)
		}
	})
	if err := k.ConfigureBrowserClient(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway,
		[]string{redirectURI}, cb.URL+"/backchannel-logout"); err != nil {
		t.Fatal(err)
	}

	verifier := randomToken(t)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	state, nonce := randomToken(t), randomToken(t)
	authURL := func(pkce bool) string {
		q := url.Values{
			"response_type": {"code"}, "client_id": {kcfixture.ClientGateway}, "redirect_uri": {redirectURI},
			"scope": {"openid email profile"}, "state": {state}, "nonce": {nonce},
		}
		if pkce {
			q.Set("code_challenge", challenge)
			q.Set("code_challenge_method", "S256")
		}
		return k.Issuer(kcfixture.RealmCorp) + "/protocol/openid-connect/auth?" + q.Encode()
	}
	// callbackQuery checks that the browser is at the callback and returns its parameters.
	callbackQuery := func(t *testing.T, finalURL string) url.Values {
		t.Helper()
		u, err := url.Parse(finalURL)
		if err != nil {
			t.Fatalf("final URL %q: %v", finalURL, err)
		}
		if got := u.Scheme + "://" + u.Host + u.Path; got != redirectURI {
			t.Fatalf("final URL = %s, want the callback %s", finalURL, redirectURI)
		}
		select {
		case q := <-callbacks:
			return q
		default:
			t.Fatal("the callback server saw no request")
			return nil
		}
	}

	b := newBrowser(t)

	t.Run("PKCE is required", func(t *testing.T) {
		finalURL, _, err := b.open(authURL(false))
		if err != nil {
			t.Fatal(err)
		}
		q := callbackQuery(t, finalURL)
		if got := q.Get("error"); got != "invalid_request" {
			t.Errorf("error = %q, want invalid_request (%v)", got, q)
		}
	})

	if _, _, err := b.open(authURL(true)); err != nil {
		t.Fatal(err)
	}
	if !b.onLoginPage() {
		loc, text, _ := b.page()
		t.Fatalf("the authorization URL shows %s %q, want Keycloak's login page", loc, shorten(text, 300))
	}

	t.Run("wrong password", func(t *testing.T) {
		_, text, err := b.signIn(kcfixture.UserAlice, "not-"+kcfixture.AlicePassword)
		if err != nil {
			t.Fatal(err)
		}
		if !b.onLoginPage() {
			t.Fatalf("after a wrong password the page is %q, want the login page again", shorten(text, 300))
		}
		if want := "Invalid username or password"; !strings.Contains(text, want) {
			t.Errorf("page text = %q, want it to contain %q", shorten(text, 300), want)
		}
	})

	finalURL, text, err := b.signIn(kcfixture.UserAlice, kcfixture.AlicePassword)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "callback reached") {
		t.Errorf("page text = %q, want the callback's", shorten(text, 300))
	}
	q := callbackQuery(t, finalURL)
	if q.Get("code") == "" || q.Get("state") != state {
		t.Fatalf("callback parameters = %v, want a code and state %s", q, state)
	}

	tr, err := k.TokenRequest(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway, kcfixture.GatewaySecret, url.Values{
		"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirectURI}, "code_verifier": {verifier},
	})
	if err != nil {
		t.Fatalf("exchanging the code: %v", err)
	}
	id := jwtPart(t, tr.IDToken, 1)
	sid, _ := id["sid"].(string)
	claims := []struct {
		claim string
		ok    bool
	}{
		{"sub", id["sub"] == kcfixture.AliceSubject},
		{"nonce", id["nonce"] == nonce},
		{"sid", sid != ""},
		{"email", id["email"] == "alice@example.com"},
		{"groups", claimContainsString(id["groups"], kcfixture.GroupEngineering)},
	}
	for _, c := range claims {
		if !c.ok {
			t.Errorf("ID token claim %s = %v, want alice's (ID token %v)", c.claim, id[c.claim], id)
		}
	}

	t.Run("the Keycloak session signs in again without the form", func(t *testing.T) {
		finalURL, _, err := b.open(authURL(true))
		if err != nil {
			t.Fatal(err)
		}
		if q := callbackQuery(t, finalURL); q.Get("code") == "" {
			t.Errorf("callback parameters = %v, want a code", q)
		}
	})

	t.Run("deleting the session sends a back-channel logout", func(t *testing.T) {
		if err := k.DeleteUserSessions(ctx, kcfixture.RealmCorp, kcfixture.UserAlice); err != nil {
			t.Fatal(err)
		}
		var tok string
		select {
		case tok = <-logoutTokens:
		case <-time.After(30 * time.Second):
			t.Fatal("no back-channel logout within 30s of deleting the session")
		}
		lt := jwtPart(t, tok, 1)
		events, _ := lt["events"].(map[string]any)
		if _, ok := events["http://schemas.openid.net/event/backchannel-logout"]; !ok {
			t.Errorf("logout token events = %v, want the back-channel-logout event", lt["events"])
		}
		if lt["sid"] != sid {
			t.Errorf("logout token sid = %v, want the ID token's %v", lt["sid"], sid)
		}
		if !claimContainsString(lt["aud"], kcfixture.ClientGateway) {
			t.Errorf("logout token aud = %v, want %s", lt["aud"], kcfixture.ClientGateway)
		}
		_, err := k.TokenRequest(ctx, kcfixture.RealmCorp, kcfixture.ClientGateway, kcfixture.GatewaySecret, url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken},
		})
		var se *kcfixture.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
			t.Errorf("refresh after the session was deleted: err = %v, want a 400 answer", err)
		}
	})
}

func randomToken(t *testing.T) string {
	t.Helper()
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}
