package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
	"github.com/portcullis/portcullis/internal/idptest"
)

const testSessionSecret = "0123456789abcdef0123456789abcdef-one"

// signInFixture is an oidc provider with a session against the in-process issuer, whose token
// endpoint checks the PKCE verifier of the last sign-in and answers signed tokens.
type signInFixture struct {
	*oidcFixture
	mu        sync.Mutex
	challenge string // code_challenge of the last LoginRedirect
	nonce     string // nonce to put in the next ID token ("" = the sign-in's)
	sid       string
}

func newSignInFixture(t *testing.T, mod func(*SessionConfig)) *signInFixture {
	t.Helper()
	sc := SessionConfig{Secrets: []string{testSessionSecret}}
	if mod != nil {
		mod(&sc)
	}
	f := &signInFixture{sid: "sid-1"}
	f.oidcFixture = newOIDCFixture(t, func(c *Config) {
		c.ClientID, c.ClientSecret, c.Session = "gateway", "gw-secret", &sc
	})
	f.is.mu.Lock()
	f.is.token = f.tokenEndpoint(t)
	f.is.mu.Unlock()
	return f
}

// tokenEndpoint answers the code grant (checking PKCE) and the refresh grant.
func (f *signInFixture) tokenEndpoint(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		now := f.clock.Now()
		switch r.PostForm.Get("grant_type") {
		case "authorization_code":
			sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
			f.mu.Lock()
			challenge, nonce := f.challenge, f.nonce
			f.mu.Unlock()
			if r.PostForm.Get("code") != "good-code" || base64.RawURLEncoding.EncodeToString(sum[:]) != challenge {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
				return
			}
			id := f.is.claims(now, "alice")
			id["aud"], id["nonce"], id["sid"] = "gateway", nonce, f.sid
			f.writeTokens(w, f.is.sign("k1", f.is.claims(now, "alice")), f.is.sign("k1", id), "refresh-1")
		case "refresh_token":
			if r.PostForm.Get("refresh_token") != "refresh-1" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
				return
			}
			c := f.is.claims(now, "alice")
			c["refreshed"] = true
			f.writeTokens(w, f.is.sign("k1", c), "", "refresh-1")
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}
}

func (f *signInFixture) writeTokens(w http.ResponseWriter, access, id, refresh string) {
	w.Header().Set("Content-Type", "application/json")
	m := map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 300, "refresh_token": refresh}
	if id != "" {
		m["id_token"] = id
	}
	_ = json.NewEncoder(w).Encode(m)
}

// login runs LoginRedirect for target and returns the flow cookie and the state.
func (f *signInFixture) login(t *testing.T, target string) (*http.Cookie, string) {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	loc, c, err := f.p.LoginRedirect(t.Context(), r, "https://app.example")
	if err != nil {
		t.Fatalf("LoginRedirect: %v", err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != "https://app.example/.portcullis/corp/callback" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Fatalf("authorization URL %s: want S256 PKCE, a nonce, a state and the callback as redirect_uri", loc)
	}
	f.mu.Lock()
	f.challenge = q.Get("code_challenge")
	if f.nonce == "" {
		f.nonce = q.Get("nonce")
	}
	f.mu.Unlock()
	return c, q.Get("state")
}

// callback runs the callback with the given flow cookie, state and code.
func (f *signInFixture) callback(t *testing.T, flowCookie *http.Cookie, state, code string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", "/.portcullis/corp/callback?"+url.Values{"state": {state}, "code": {code}}.Encode(), nil)
	if flowCookie != nil {
		r.AddCookie(flowCookie)
	}
	w := httptest.NewRecorder()
	if err := f.p.Callback(w, r, "https://app.example"); err != nil {
		var d *idp.Denial
		if !errors.As(err, &d) {
			t.Fatalf("Callback: %v, want a *Denial or success", err)
		}
		w.Code = d.Status
	}
	return w
}

// sessionRequest is a request carrying the session cookies a response set.
func sessionRequest(w *httptest.ResponseRecorder) *http.Request {
	r := httptest.NewRequest("GET", "/app", nil)
	for _, c := range w.Result().Cookies() {
		if c.MaxAge >= 0 && c.Value != "" {
			r.AddCookie(c)
		}
	}
	return r
}

func TestSignInCallback(t *testing.T) {
	tests := []struct {
		name       string
		flow       bool // send the flow cookie
		state      string
		code       string
		nonce      string
		wantStatus int
	}{
		{name: "a complete sign-in", flow: true, code: "good-code", wantStatus: http.StatusFound},
		{name: "a state of another sign-in", flow: true, state: "forged", code: "good-code", wantStatus: http.StatusBadRequest},
		{name: "no sign-in in progress (replayed callback)", code: "good-code", wantStatus: http.StatusBadRequest},
		{name: "a code the IdP refuses", flow: true, code: "stolen", wantStatus: http.StatusUnauthorized},
		{name: "an ID token of another sign-in", flow: true, code: "good-code", nonce: "other-nonce", wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSignInFixture(t, nil)
			f.nonce = tt.nonce
			fc, state := f.login(t, "/app/page?x=1")
			if tt.state != "" {
				state = tt.state
			}
			if !tt.flow {
				fc = nil
			}
			w := f.callback(t, fc, state, tt.code)
			if w.Code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", w.Code, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusFound {
				return
			}
			if loc := w.Header().Get("Location"); loc != "/app/page?x=1" {
				t.Errorf("Location: got %q, want the page asked for", loc)
			}
			var session *http.Cookie
			for _, c := range w.Result().Cookies() {
				if c.Name == "portcullis_corp" {
					session = c
				}
			}
			if session == nil || !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteLaxMode {
				t.Fatalf("session cookie: got %+v, want HttpOnly, Secure, SameSite=Lax", session)
			}
			cred, err := f.p.Extract(t.Context(), sessionRequest(w))
			if err != nil || cred == nil || cred.Subject != "alice" {
				t.Fatalf("Extract with the session: got %+v, %v; want alice's token", cred, err)
			}
			// The callback cannot be replayed: its sign-in cookie was cleared.
			if w2 := f.callback(t, nil, state, tt.code); w2.Code != http.StatusBadRequest {
				t.Errorf("replayed callback: got %d, want 400", w2.Code)
			}
		})
	}
}

func TestReturnPathIsSameOrigin(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/app/page?x=1", "/app/page?x=1"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"/%2F%2Fevil.example", "/%2F%2Fevil.example"},
		{"https://evil.example/x", "/x"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			u, err := url.ParseRequestURI(tt.target)
			if err != nil {
				u = &url.URL{Path: tt.target}
			}
			r.URL = u
			if got := ReturnPath(r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if got := ReturnPath(r); strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") || !strings.HasPrefix(got, "/") {
				t.Errorf("got %q: not a same-origin path", got)
			}
		})
	}
}

// signedIn returns a fixture and a request carrying a fresh session.
func signedIn(t *testing.T, mod func(*SessionConfig)) (*signInFixture, *httptest.ResponseRecorder) {
	t.Helper()
	f := newSignInFixture(t, mod)
	fc, state := f.login(t, "/app")
	w := f.callback(t, fc, state, "good-code")
	if w.Code != http.StatusFound {
		t.Fatalf("sign-in: got %d", w.Code)
	}
	return f, w
}

func TestSessionCookies(t *testing.T) {
	f, w := signedIn(t, nil)
	good := sessionRequest(w)
	tamper := func(mod func(string) string) *http.Request {
		r := httptest.NewRequest("GET", "/app", nil)
		for _, c := range good.Cookies() {
			if c.Name == "portcullis_corp" {
				c = &http.Cookie{Name: c.Name, Value: mod(c.Value)}
			}
			r.AddCookie(c)
		}
		return r
	}
	flip := func(v string) string {
		b := []byte(v)
		b[len(b)/2] ^= 1
		return string(b)
	}
	tests := []struct {
		name string
		r    *http.Request
		want bool
	}{
		{name: "the session", r: good, want: true},
		{name: "a flipped byte", r: tamper(flip)},
		{name: "truncated", r: tamper(func(v string) string { return v[:len(v)/3] })},
		{name: "not base64", r: tamper(func(string) string { return "%%%" })},
		{name: "empty", r: tamper(func(string) string { return "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, resp := WithResponse(t.Context())
			cred, err := f.p.Extract(ctx, tt.r)
			if err != nil {
				t.Fatalf("Extract: %v, want a credential or none, never an error", err)
			}
			if got := cred != nil; got != tt.want {
				t.Fatalf("credential: got %v, want %v", got, tt.want)
			}
			h := http.Header{}
			resp.WriteTo(h)
			if !tt.want && tt.name != "empty" && !strings.Contains(strings.Join(h["Set-Cookie"], "\n"), "portcullis_corp=;") {
				t.Errorf("a broken session's cookie is not cleared: Set-Cookie %q", h["Set-Cookie"])
			}
		})
	}
	t.Run("a rotated secret still opens, a retired one does not", func(t *testing.T) {
		const newer = "a-new-secret-of-at-least-32-bytes!!"
		rotated, err := newSessions("corp", SessionConfig{Secrets: []string{newer, testSessionSecret}})
		if err != nil {
			t.Fatal(err)
		}
		if rotated.read(good, f.clock.Now()) == nil {
			t.Errorf("with the old secret second: got no session, want it")
		}
		retired, err := newSessions("corp", SessionConfig{Secrets: []string{newer}})
		if err != nil {
			t.Fatal(err)
		}
		if retired.read(good, f.clock.Now()) != nil {
			t.Errorf("with the old secret retired: got a session, want none")
		}
	})
}

func TestSessionRefresh(t *testing.T) {
	f, w := signedIn(t, nil)
	f.clock.Advance(5*time.Minute - 10*time.Second) // within the refresh leeway
	good := sessionRequest(w)
	before := f.is.tokenHits.Load()
	var wg sync.WaitGroup
	creds := make([]*idp.Credential, 8)
	resps := make([]*Response, 8)
	for i := range creds {
		wg.Go(func() {
			ctx, resp := WithResponse(t.Context())
			creds[i], _ = f.p.Extract(ctx, good)
			resps[i] = resp
		})
	}
	wg.Wait()
	if got := f.is.tokenHits.Load() - before; got != 1 {
		t.Errorf("token endpoint calls: got %d, want 1 (concurrent requests of a session refresh once)", got)
	}
	for i, c := range creds {
		if c == nil || c.Claims["refreshed"] != true {
			t.Fatalf("request %d: got %+v, want the refreshed token", i, c)
		}
		h := http.Header{}
		resps[i].WriteTo(h)
		if !strings.Contains(strings.Join(h["Set-Cookie"], "\n"), "portcullis_corp=") {
			t.Errorf("request %d: the refreshed session's cookie is not re-issued", i)
		}
	}

	t.Run("a refresh the IdP refuses ends the session", func(t *testing.T) {
		f, w := signedIn(t, nil)
		f.is.mu.Lock()
		f.is.token = func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Session not active"}`))
		}
		f.is.mu.Unlock()
		f.clock.Advance(5*time.Minute - 10*time.Second)
		ctx, resp := WithResponse(t.Context())
		cred, err := f.p.Extract(ctx, sessionRequest(w))
		if cred != nil || err != nil {
			t.Fatalf("got %+v, %v; want no credential", cred, err)
		}
		h := http.Header{}
		resp.WriteTo(h)
		if !strings.Contains(strings.Join(h["Set-Cookie"], "\n"), "portcullis_corp=;") {
			t.Errorf("Set-Cookie %q: want the session cleared", h["Set-Cookie"])
		}
	})
	t.Run("an unreachable IdP after expiry fails closed", func(t *testing.T) {
		f, w := signedIn(t, nil)
		f.is.setDown(true)
		f.clock.Advance(6 * time.Minute)
		_, err := f.p.Extract(t.Context(), sessionRequest(w))
		if !errors.Is(err, idp.ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable (503)", err)
		}
	})
}

func TestBackchannelLogout(t *testing.T) {
	valid := func(f *signInFixture) map[string]any {
		return map[string]any{"iss": f.is.URL(), "aud": "gateway", "iat": f.clock.Now().Unix(), "jti": "j1",
			"sid": "sid-1", "sub": "alice", "events": map[string]any{backchannelLogoutEvent: map[string]any{}}}
	}
	tests := []struct {
		name       string
		mod        func(map[string]any)
		kid        string
		wantStatus int
	}{
		{name: "a valid logout token", wantStatus: http.StatusOK},
		{name: "no events", mod: func(c map[string]any) { delete(c, "events") }, wantStatus: http.StatusBadRequest},
		{name: "another event", mod: func(c map[string]any) { c["events"] = map[string]any{"x": map[string]any{}} }, wantStatus: http.StatusBadRequest},
		{name: "a nonce", mod: func(c map[string]any) { c["nonce"] = "n" }, wantStatus: http.StatusBadRequest},
		{name: "neither sid nor sub", mod: func(c map[string]any) { delete(c, "sid"); delete(c, "sub") }, wantStatus: http.StatusBadRequest},
		{name: "another audience", mod: func(c map[string]any) { c["aud"] = "other" }, wantStatus: http.StatusBadRequest},
		{name: "another issuer", mod: func(c map[string]any) { c["iss"] = "https://evil.example" }, wantStatus: http.StatusBadRequest},
		{name: "no iat", mod: func(c map[string]any) { delete(c, "iat") }, wantStatus: http.StatusBadRequest},
		{name: "expired", mod: func(c map[string]any) { c["exp"] = c["iat"].(int64) - 60 }, wantStatus: http.StatusBadRequest},
		{name: "a key the issuer does not publish", kid: "rogue", wantStatus: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, w := signedIn(t, nil)
			claims := valid(f)
			if tt.mod != nil {
				tt.mod(claims)
			}
			kid := tt.kid
			if kid == "" {
				kid = "k1"
			}
			tok := f.is.sign(kid, claims)
			r := httptest.NewRequest("POST", "/.portcullis/corp/backchannel-logout", strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			status := http.StatusOK
			if err := f.p.BackchannelLogout(rec, r); err != nil {
				var d *idp.Denial
				if !errors.As(err, &d) {
					t.Fatalf("BackchannelLogout: %v", err)
				}
				status = d.Status
			}
			if status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", status, tt.wantStatus)
			}
			cred, _ := f.p.Extract(t.Context(), sessionRequest(w))
			if signedOut := cred == nil; signedOut != (tt.wantStatus == http.StatusOK) {
				t.Errorf("after the logout token: signed out %v, want %v", signedOut, tt.wantStatus == http.StatusOK)
			}
		})
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	f, w := signedIn(t, nil)
	r := sessionRequest(w)
	rec := httptest.NewRecorder()
	if err := f.p.Logout(rec, r, "https://app.example"); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil || !strings.HasSuffix(loc.Path, "/logout") || loc.Query().Get("id_token_hint") == "" || loc.Query().Get("post_logout_redirect_uri") != "https://app.example/" {
		t.Fatalf("Location %q: want the IdP's end-session endpoint with id_token_hint and the post-logout URI", rec.Header().Get("Location"))
	}
	if cred, _ := f.p.Extract(t.Context(), sessionRequest(w)); cred != nil {
		t.Errorf("the logged-out session's cookie still signs in")
	}
}

// FuzzSessionCookie: whatever a client puts in the session cookies, reading them never panics
// and never yields a session that was not sealed with the secret.
func FuzzSessionCookie(f *testing.F) {
	s, err := newSessions("corp", SessionConfig{Secrets: []string{testSessionSecret}})
	if err != nil {
		f.Fatal(err)
	}
	pt, _ := json.Marshal(session{Access: "a.b.c", Created: time.Now().Unix()})
	good := s.sealer.seal("session", pt)
	f.Add(good, "")
	f.Add(good[:len(good)-1], "x")
	f.Add(strings.Repeat("A", maxCookieChunk), strings.Repeat("B", 10))
	f.Add("", "")
	f.Fuzz(func(t *testing.T, v0, v1 string) {
		r := &http.Request{Header: http.Header{"Cookie": {"portcullis_corp=" + v0 + "; portcullis_corp.1=" + v1}}}
		// The only session ever sealed with the secret has the access token a.b.c.
		if ss := s.read(r, time.Now()); ss != nil && ss.Access != "a.b.c" {
			t.Fatalf("a session from cookies %q, %q that were never sealed", v0, v1)
		}
	})
}

// memRevocations is a RevocationStore shared by two fixtures, as Redis is by two replicas.
type memRevocations struct {
	mu   sync.Mutex
	m    map[string]int64
	down bool
}

func (s *memRevocations) Enabled() bool { return true }

func (s *memRevocations) Revoke(_ context.Context, key string, value int64, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("store down")
	}
	s.m[key] = value
	return nil
}

func (s *memRevocations) Lookup(_ context.Context, keys ...string) (map[string]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("store down")
	}
	out := map[string]int64{}
	for _, k := range keys {
		if v, ok := s.m[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}

func TestRevocationsAreShared(t *testing.T) {
	store := &memRevocations{m: map[string]int64{}}
	f, w := signedIn(t, func(s *SessionConfig) { s.Revocations = store })
	// A second replica: the same issuer, secret and store.
	replica, err := New(f.p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred, err := replica.Extract(t.Context(), sessionRequest(w)); err != nil || cred == nil {
		t.Fatalf("the other replica before the logout: got %v, %v; want the session", cred, err)
	}
	claims := map[string]any{"iss": f.is.URL(), "aud": "gateway", "iat": f.clock.Now().Unix(), "sid": "sid-1",
		"events": map[string]any{backchannelLogoutEvent: map[string]any{}}}
	r := httptest.NewRequest("POST", "/", strings.NewReader(url.Values{"logout_token": {f.is.sign("k1", claims)}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := f.p.BackchannelLogout(httptest.NewRecorder(), r); err != nil {
		t.Fatalf("BackchannelLogout: %v", err)
	}
	if cred, err := replica.Extract(t.Context(), sessionRequest(w)); err != nil || cred != nil {
		t.Errorf("the other replica after the logout: got %v, %v; want no session", cred, err)
	}
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	if _, err := replica.Extract(t.Context(), sessionRequest(w)); !errors.Is(err, idp.ErrUnavailable) {
		t.Errorf("with the store down: got %v, want ErrUnavailable (503, not an open door)", err)
	}
}

// memSessions is a SessionStore shared by two fixtures, as Redis is by two replicas.
type memSessions struct {
	mu   sync.Mutex
	m    map[string]string
	down bool
}

func (s *memSessions) Get(_ context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return "", false, errors.New("store down")
	}
	v, ok := s.m[key]
	return v, ok, nil
}

func (s *memSessions) Set(_ context.Context, key, value string, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("store down")
	}
	s.m[key] = value
	return nil
}

func (s *memSessions) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("store down")
	}
	delete(s.m, key)
	return nil
}

func TestSessionsStoredServerSide(t *testing.T) {
	store := &memSessions{m: map[string]string{}}
	f, w := signedIn(t, func(s *SessionConfig) { s.Store = store })
	var cookie *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == "portcullis_corp" {
			cookie = c
		}
	}
	if cookie == nil || len(cookie.Value) > 200 || len(store.m) != 1 {
		t.Fatalf("cookie %+v, %d stored sessions: want a short id cookie and the session in the store", cookie, len(store.m))
	}
	replica, err := New(f.p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred, err := replica.Extract(t.Context(), sessionRequest(w)); err != nil || cred == nil {
		t.Fatalf("the other replica: got %v, %v; want the stored session", cred, err)
	}
	if err := f.p.Logout(httptest.NewRecorder(), sessionRequest(w), "https://app.example"); err != nil {
		t.Fatal(err)
	}
	if len(store.m) != 0 {
		t.Errorf("after logout: %d stored sessions, want none", len(store.m))
	}
	if cred, err := replica.Extract(t.Context(), sessionRequest(w)); err != nil || cred != nil {
		t.Errorf("the other replica after logout: got %v, %v; want no session", cred, err)
	}
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	if _, err := replica.Extract(t.Context(), sessionRequest(w)); !errors.Is(err, idp.ErrUnavailable) {
		t.Errorf("with the store down: got %v, want ErrUnavailable (503, not an open door)", err)
	}
}

// TestSessionInAChain: a consumer may need a browser session and an HMAC signature on the same
// request; the session is one more credential of the chain.
func TestSessionInAChain(t *testing.T) {
	f, w := signedIn(t, nil)
	hm, err := local.NewHMACAuth(local.HMACAuthConfig{Name: "hmac", Now: f.clock.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := idptest.NewIndex()
	idx.Add(t, "Partner", f.p, idp.BindingSpec{Consumer: "Partner"})
	idx.Add(t, "Partner", hm, idp.BindingSpec{Consumer: "Partner", KeyID: "partner", Secret: "partner-secret"})
	chain := idp.NewChain([]idp.Provider{f.p, hm}, idx)
	withSession := func(signed bool) *http.Request {
		r := httptest.NewRequest("GET", "/app", nil)
		if signed {
			r.Header.Set("Date", f.clock.Now().UTC().Format(http.TimeFormat))
			if err := local.SignRequest(r, local.SignInput{KeyID: "partner", Secret: "partner-secret"}); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range sessionRequest(w).Cookies() {
			r.AddCookie(c)
		}
		return r
	}
	if res, err := chain.Evaluate(t.Context(), withSession(true), "", nil); err != nil || res.Consumer != "Partner" || res.Subject() != "alice" {
		t.Fatalf("session and signature: got %+v, %v; want Partner (alice)", res, err)
	}
	if _, err := chain.Evaluate(t.Context(), withSession(false), "", nil); err == nil {
		t.Fatalf("the session alone: granted, want the missing signature refused")
	} else {
		wantDenial(t, err, http.StatusUnauthorized, "")
	}
}

// TestLogoutWithoutSessionStaysOnOrigin: with no session to end at the IdP and no configured
// post-logout URI, the browser is sent to "/" of this origin, whatever Host it sent.
func TestLogoutWithoutSessionStaysOnOrigin(t *testing.T) {
	f := newSignInFixture(t, nil)
	r := httptest.NewRequest("GET", "/.portcullis/corp/logout", nil)
	r.Host = "evil.example"
	rec := httptest.NewRecorder()
	if err := f.p.Logout(rec, r, "http://evil.example"); err != nil {
		t.Fatal(err)
	}
	if got := rec.Header().Get("Location"); got != "/" {
		t.Errorf("Location: got %q, want \"/\"", got)
	}
}
