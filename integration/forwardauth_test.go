package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// The tests of this file put the real nginx (auth_request) and the real Caddy (forward_auth)
// in front of a real upstream, asking the real Portcullis binary, with the configurations of
// examples/forward-auth that the README quotes. Traefik and Envoy do not install here: their
// conventions are tested against the binary directly.

// Addresses the example files are written for; the tests replace them with their own.
const (
	exampleGateway  = "127.0.0.1:9080"
	exampleUpstream = "127.0.0.1:9100"
	exampleListen   = "8080"
)

// forwardAuthGateway starts the binary on examples/forward-auth/policy.json, on free ports.
func forwardAuthGateway(t *testing.T) *gatewayProc {
	t.Helper()
	policy := strings.NewReplacer(`"127.0.0.1:9080"`, `"127.0.0.1:0"`, `"127.0.0.1:9091"`, `"127.0.0.1:0"`).
		Replace(mustRead(t, "../examples/forward-auth/policy.json"))
	return startGateway(t, policy)
}

// freeAddr is a loopback address nobody listens on, for a proxy that cannot report the port
// it bound.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proxyBinary finds a proxy's binary: $env, then PATH, then the given places. Without it the
// test is skipped, or fails in CI, where .ci/run installs it.
func proxyBinary(t *testing.T, name, env string, places ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range places {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if kcfixture.InCI() {
		t.Fatalf("%s is required in CI (set %s, or install it: see .ci/run)", name, env)
	}
	t.Skipf("skipping: %s is not installed (set %s)", name, env)
	return ""
}

// proxyProc is a running nginx or Caddy.
type proxyProc struct {
	URL    string
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *lockedBuffer
}

// startProxy runs cmd, which listens on addr, until the test ends; it is ready once addr
// accepts connections.
func startProxy(t *testing.T, cmd *exec.Cmd, addr string, logFile string) *proxyProc {
	t.Helper()
	p := &proxyProc{URL: "http://" + addr, cmd: cmd, exited: make(chan struct{}), logs: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			extra, _ := os.ReadFile(logFile)
			t.Fatalf("%s exited before listening:\n%s%s", cmd.Path, p.logs, extra)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 60s:\n%s", cmd.Path, addr, p.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a readiness check
	}
}

// startNginx runs nginx with the example server block, pointed at gw and up.
func startNginx(t *testing.T, gw *gatewayProc, up *upstream) *proxyProc {
	t.Helper()
	bin := proxyBinary(t, "nginx", "PORTCULLIS_NGINX", "/usr/sbin/nginx")
	dir := t.TempDir()
	addr := freeAddr(t)
	server := strings.NewReplacer(
		"listen "+exampleListen+";", "listen "+addr+";",
		exampleGateway, strings.TrimPrefix(gw.URL, "http://"),
		exampleUpstream, strings.TrimPrefix(up.URL, "http://"),
	).Replace(mustRead(t, "../examples/forward-auth/nginx.conf"))
	writeFile(t, filepath.Join(dir, "server.conf"), server)
	main := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/server.conf;
}
`, dir)
	writeFile(t, filepath.Join(dir, "nginx.conf"), main)
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	return startProxy(t, cmd, addr, filepath.Join(dir, "error.log"))
}

// startCaddy runs Caddy with the example Caddyfile, pointed at gw and up.
func startCaddy(t *testing.T, gw *gatewayProc, up *upstream) *proxyProc {
	t.Helper()
	home, _ := os.UserHomeDir()
	bin := proxyBinary(t, "caddy", "PORTCULLIS_CADDY", filepath.Join(home, ".cache", "portcullis-bench", "bin", "caddy"))
	dir := t.TempDir()
	addr := freeAddr(t)
	site := strings.NewReplacer(
		":"+exampleListen+" {", "http://"+addr+" {",
		exampleGateway, strings.TrimPrefix(gw.URL, "http://"),
		exampleUpstream, strings.TrimPrefix(up.URL, "http://"),
	).Replace(mustRead(t, "../examples/forward-auth/Caddyfile"))
	// The global options keep the test's Caddy off the shared admin port and the user's data.
	conf := "{\n\tadmin off\n\tpersist_config off\n}\n" + site
	writeFile(t, filepath.Join(dir, "Caddyfile"), conf)
	cmd := exec.Command(bin, "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	return startProxy(t, cmd, addr, "")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestForwardAuthBehindNginx(t *testing.T) {
	up := newUpstream(t, nil)
	gw := forwardAuthGateway(t)
	px := startNginx(t, gw, up)
	forwardAuthScenario(t, px, gw, up, map[string]string{
		// nginx describes the request in X-Original-*: the client's copies are replaced.
		"X-Original-URI": "/petstore", "X-Original-URL": "http://" + exampleGateway + "/petstore", "X-Original-Method": "GET",
	})
}

func TestForwardAuthBehindCaddy(t *testing.T) {
	up := newUpstream(t, nil)
	gw := forwardAuthGateway(t)
	px := startCaddy(t, gw, up)
	forwardAuthScenario(t, px, gw, up, map[string]string{
		// Caddy describes the request in X-Forwarded-*: the client's copies are replaced.
		"X-Forwarded-Uri": "/petstore", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "petstore.example",
	})
}

// forwardAuthScenario is the petstore scenario through the proxy px: the proxy forwards to up
// when Portcullis (gw) admits the request. spoof are the description headers a client could
// send to the proxy to make Portcullis decide another request.
func forwardAuthScenario(t *testing.T, px *proxyProc, gw *gatewayProc, up *upstream, spoof map[string]string) {
	url := px.URL + "/petstore"
	t.Run("no key is rejected", func(t *testing.T) {
		before := up.count()
		r := do(t, "GET", url, nil)
		if r.Status != 401 || r.message() != "Missing API key in request" {
			t.Fatalf("got %d %q (%v), want 401 Missing API key in request", r.Status, r.Body, r.Header)
		}
		// The challenges of every provider that can admit a consumer on the route.
		if got, want := r.Header.Get("WWW-Authenticate"), `apikey realm="keys", hmac realm="partner-sig"`; got != want {
			t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
		}
		if up.count() != before {
			t.Errorf("the upstream was asked for a refused request")
		}
	})
	t.Run("wrong key is rejected", func(t *testing.T) {
		r := do(t, "GET", url, map[string]string{"apikey": "not-a-key"})
		if r.Status != 401 || r.message() != "Invalid API key in request" {
			t.Fatalf("got %d %q, want 401 Invalid API key in request", r.Status, r.Body)
		}
	})
	t.Run("JohnDoe is never limited", func(t *testing.T) {
		for i := range 20 {
			r := do(t, "GET", url+"/pets/1", map[string]string{"apikey": "john-key"})
			if r.Status != 200 {
				t.Fatalf("request %d: got %d %q, want 200", i+1, r.Status, r.Body)
			}
			last := up.last()
			if got := last.Header.Get("X-Consumer-Username"); got != "JohnDoe" || last.URL.Path != "/petstore/pets/1" {
				t.Fatalf("request %d: upstream saw consumer %q at %q, want JohnDoe at /petstore/pets/1", i+1, got, last.URL.Path)
			}
		}
	})
	t.Run("FetchBot gets two requests per window", func(t *testing.T) {
		for i, want := range []struct {
			status    int
			remaining string
		}{{200, "1"}, {200, "0"}, {429, "0"}} {
			r := do(t, "GET", url, map[string]string{"apikey": "bot-key"})
			if r.Status != want.status {
				t.Fatalf("request %d: got %d %q, want %d", i+1, r.Status, r.Body, want.status)
			}
			// Caddy passes on the answer's headers on a refusal only; nginx copies them always.
			if (want.status == 429 || px.isNginx()) && r.Header.Get("X-RateLimit-Remaining") != want.remaining {
				t.Errorf("request %d: X-RateLimit-Remaining: got %q, want %q", i+1, r.Header.Get("X-RateLimit-Remaining"), want.remaining)
			}
			if want.status == 429 {
				if r.message() != "Too Many Requests" || r.Header.Get("Retry-After") == "" {
					t.Errorf("refusal: got %q with Retry-After %q, want the JSON message and a Retry-After", r.Body, r.Header.Get("Retry-After"))
				}
			}
		}
	})
	t.Run("the client cannot forge the identity headers", func(t *testing.T) {
		r := do(t, "GET", url, map[string]string{"apikey": "john-key",
			"X-Consumer-Username": "admin", "X-Consumer-Groups": "admins", "X-Credential-Identifier": "keys:admin",
			"X-Userinfo": "eyJzdWIiOiJhZG1pbiJ9"})
		if r.Status != 200 {
			t.Fatalf("got %d %q, want 200", r.Status, r.Body)
		}
		h := up.last().Header
		if h.Get("X-Consumer-Username") != "JohnDoe" || len(h.Values("X-Consumer-Username")) != 1 {
			t.Errorf("X-Consumer-Username upstream: got %q, want only JohnDoe", h.Values("X-Consumer-Username"))
		}
		for _, k := range []string{"X-Consumer-Groups", "X-Userinfo"} {
			if v, ok := h[k]; ok {
				t.Errorf("%s upstream: got %q, want none (JohnDoe has none; the client's copy must go)", k, v)
			}
		}
		if got := h.Get("X-Credential-Identifier"); got == "keys:admin" {
			t.Errorf("X-Credential-Identifier upstream: got the client's %q", got)
		}
	})
	t.Run("the client cannot change the described request", func(t *testing.T) {
		// /admin has no route (404); the forged description names /petstore, which would pass.
		h := map[string]string{"apikey": "john-key"}
		for k, v := range spoof {
			h[k] = v
		}
		before := up.count()
		r := do(t, "GET", px.URL+"/admin", h)
		if r.Status != 404 || up.count() != before {
			t.Fatalf("got %d %q (upstream asked %d times), want 404 Route Not Found and no upstream request", r.Status, r.Body, up.count()-before)
		}
	})
	t.Run("a chain of key and signature", func(t *testing.T) {
		sig := signHeaders(t, "--key-id", "partner", "--secret", "partner-hmac-secret", "GET", "/petstore/orders")
		r := do(t, "GET", url+"/orders", merge(sig, map[string]string{"apikey": "partner-key"}))
		if r.Status != 200 || up.last().Header.Get("X-Consumer-Username") != "Partner" {
			t.Fatalf("got %d %q (upstream consumer %q), want 200 for Partner", r.Status, r.Body, up.last().Header.Get("X-Consumer-Username"))
		}
		if r := do(t, "GET", url+"/orders", map[string]string{"apikey": "partner-key"}); r.Status != 401 {
			t.Errorf("the key alone: got %d %q, want 401 (every binding of the chain must admit)", r.Status, r.Body)
		}
		bad := signHeaders(t, "--key-id", "partner", "--secret", "partner-hmac-secret", "GET", "/petstore/other")
		if r := do(t, "GET", url+"/orders", merge(bad, map[string]string{"apikey": "partner-key"})); r.Status != 401 {
			t.Errorf("a signature of another target: got %d %q, want 401", r.Status, r.Body)
		}
	})
	t.Run("each request is decided and counted once", func(t *testing.T) {
		before := gw.metric("portcullis_forward_auth_requests_total")
		proxied := gw.metric("portcullis_requests_total")
		if r := do(t, "GET", url, map[string]string{"apikey": "john-key"}); r.Status != 200 {
			t.Fatalf("got %d %q, want 200", r.Status, r.Body)
		}
		if got := gw.metric("portcullis_forward_auth_requests_total") - before; got != 1 {
			t.Errorf("portcullis_forward_auth_requests_total: grew by %v, want 1", got)
		}
		if got := gw.metric("portcullis_requests_total", `route="petstore"`); got != 0 || proxied != 0 {
			t.Errorf("portcullis_requests_total{route=petstore}: got %v, want 0 (forward auth is counted apart)", got)
		}
	})
	t.Run("the access log tells forward-auth decisions apart", func(t *testing.T) {
		if logs := gw.stdout.String(); !strings.Contains(logs, `"msg":"forward_auth"`) || !strings.Contains(logs, `"path":"/petstore/orders"`) {
			t.Errorf("access log: got\n%s\nwant forward_auth lines naming the original path", logs)
		}
	})
}

func (p *proxyProc) isNginx() bool { return filepath.Base(p.cmd.Path) == "nginx" }

// TestForwardAuthEndpointDirect asks the binary as Traefik, Envoy and ingress-nginx would (they
// do not install here), and from a peer that may not ask.
func TestForwardAuthEndpointDirect(t *testing.T) {
	gw := forwardAuthGateway(t)
	tests := []struct {
		name         string
		method, path string
		header       map[string]string
		wantStatus   int
		wantConsumer string
	}{
		{name: "Traefik ForwardAuth", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "POST", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example", "X-Forwarded-Uri": "/petstore/pets?x=1", "apikey": "john-key"},
			wantStatus: 200, wantConsumer: "JohnDoe"},
		{name: "Traefik ForwardAuth, a method the route does not serve", method: "GET", path: "/.portcullis/auth",
			header:     map[string]string{"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/petstore/pets", "apikey": "john-key"},
			wantStatus: 404},
		{name: "Envoy ext_authz", method: "POST", path: "/.portcullis/auth/envoy/petstore/pets?apikey=john-key",
			wantStatus: 200, wantConsumer: "JohnDoe"},
		{name: "Envoy ext_authz without credentials", method: "GET", path: "/.portcullis/auth/envoy/petstore",
			wantStatus: 401},
		{name: "ingress-nginx auth-url", method: "GET", path: "/.portcullis/auth/nginx",
			header:     map[string]string{"X-Original-Method": "GET", "X-Original-URL": "https://shop.example/petstore/pets", "apikey": "john-key"},
			wantStatus: 200, wantConsumer: "JohnDoe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, gw.URL+tt.path, tt.header)
			if r.Status != tt.wantStatus || r.Header.Get("X-Consumer-Username") != tt.wantConsumer {
				t.Errorf("got %d %q (consumer %q), want %d (consumer %q)", r.Status, r.Body, r.Header.Get("X-Consumer-Username"), tt.wantStatus, tt.wantConsumer)
			}
		})
	}
	t.Run("a peer that is no trusted proxy", func(t *testing.T) {
		// 127.0.0.2 is loopback too, but not in trusted_proxies (127.0.0.1); X-Forwarded-For
		// naming a trusted proxy changes nothing.
		client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
		req, _ := http.NewRequestWithContext(context.Background(), "GET", gw.URL+"/.portcullis/auth", nil)
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Uri", "/petstore")
		req.Header.Set("X-Forwarded-For", "127.0.0.1")
		req.Header.Set("apikey", "john-key")
		resp, err := client.Do(req)
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			t.Skipf("cannot send from 127.0.0.2 here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 || resp.Header.Get("X-Consumer-Username") != "" {
			t.Errorf("got %d (consumer %q), want 403", resp.StatusCode, resp.Header.Get("X-Consumer-Username"))
		}
	})
}

// TestReadmeQuotesForwardAuthExamples keeps the README's configurations the files the tests
// run (or, for the proxies that do not run here, the files kept beside them).
func TestReadmeQuotesForwardAuthExamples(t *testing.T) {
	readme := mustRead(t, "../README.md")
	files, err := filepath.Glob("../examples/forward-auth/*")
	if err != nil || len(files) < 7 {
		t.Fatalf("examples/forward-auth: got %v (%v), want the policy and six proxy configurations", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if !strings.Contains(readme, strings.TrimSpace(mustRead(t, f))) {
				t.Errorf("README does not quote %s as it is", f)
			}
		})
	}
}

// TestForwardAuthKeycloakThroughNginx: a Keycloak service account's bearer token, decided by
// Portcullis behind nginx; the service gets the identity nginx copied from the answer.
func TestForwardAuthKeycloakThroughNginx(t *testing.T) {
	k := keycloakFor(t)
	up := newUpstream(t, nil)
	fetchBot := consumerOf("FetchBot", map[string]any{"idp": "corp", "subject": kcfixture.FetchBotSubject})
	gw := startGateway(t, policyJSON(t, map[string]any{
		"trusted_proxies": []string{"127.0.0.1"},
		"forward_auth":    map[string]any{},
		"idps":            []any{corpIdP(k, nil)},
		"consumers":       []any{fetchBot},
		"routes":          []any{map[string]any{"name": "petstore", "paths": []string{"/petstore/{rest:.*}"}}},
	}), corpSecretEnv)
	px := startNginx(t, gw, up)
	url := px.URL + "/petstore/pets"

	tok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	r := do(t, "GET", url, bearerHeader(tok))
	if r.Status != 200 {
		t.Fatalf("with the token: got %d %s, want 200", r.Status, r.Body)
	}
	got := up.last()
	if u := got.Header.Get("X-Consumer-Username"); u != "FetchBot" {
		t.Errorf("upstream X-Consumer-Username: got %q, want FetchBot", u)
	}
	if claims := upstreamUserinfo(t, got); claims["sub"] != kcfixture.FetchBotSubject || claims["iss"] != k.Issuer(kcfixture.RealmCorp) {
		t.Errorf("upstream X-Userinfo: sub %v iss %v, want %s of %s", claims["sub"], claims["iss"], kcfixture.FetchBotSubject, k.Issuer(kcfixture.RealmCorp))
	}

	before := up.count()
	r = do(t, "GET", url, nil)
	if r.Status != 401 || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("without a token: got %d %s (WWW-Authenticate %q), want 401 with a Bearer challenge", r.Status, r.Body, r.Header.Get("WWW-Authenticate"))
	}
	r = do(t, "GET", url, bearerHeader(tok[:len(tok)-4]+"AAAA"))
	if r.Status != 401 || up.count() != before {
		t.Errorf("a tampered token: got %d %s (upstream asked %d times), want 401 and no upstream request", r.Status, r.Body, up.count()-before)
	}
}

// TestForwardAuthSignIn: people sign in through Keycloak behind nginx and behind Caddy, with
// Portcullis deciding by forward auth: the proxy passes the sign-in redirect on (nginx by its
// error_page pattern), serves Portcullis's callback, and the session then admits the person.
func TestForwardAuthSignIn(t *testing.T) {
	k := keycloakFor(t)
	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			up := newUpstream(t, nil)
			people := consumerOf("People", map[string]any{"idp": "corp", "realm_roles": []string{kcfixture.RoleAPIUser}})
			gw := startGateway(t, policyJSON(t, map[string]any{
				"trusted_proxies": []string{"127.0.0.1"},
				"forward_auth":    map[string]any{},
				// store redis is not needed: a sign-in's cookies fit in one.
				"idps":      []any{corpIdP(k, map[string]any{"session": map[string]any{"secrets": []string{"${env:SESSION_SECRET}"}, "cookie_secure": false}})},
				"consumers": []any{people},
				"routes":    []any{map[string]any{"name": "petstore", "paths": []string{"/petstore", "/petstore/{rest:.*}"}, "login": "corp"}},
			}), corpSecretEnv, sessionSecretEnv)
			var px *proxyProc
			if proxy == "nginx" {
				px = startNginx(t, gw, up)
			} else {
				px = startCaddy(t, gw, up)
			}
			enableSignIn(t, k, gw, false, px.URL)
			page := px.URL + "/petstore/pets?page=2"

			alice := newPerson(t)
			resp, body := alice.get(page)
			if !alice.onLoginPage(body) {
				t.Fatalf("got %d at %s, want Keycloak's login page", resp.StatusCode, resp.Request.URL)
			}
			resp, body = alice.signIn(body, kcfixture.UserAlice, kcfixture.AlicePassword)
			if resp.StatusCode != 200 || resp.Request.URL.String() != page {
				t.Fatalf("after signing in: got %d at %s (%.300s), want 200 at %s", resp.StatusCode, resp.Request.URL, body, page)
			}
			if h := up.last().Header; h.Get("X-Consumer-Username") != "People" || h.Get("X-Consumer-Subject") != kcfixture.AliceSubject {
				t.Errorf("upstream: got consumer %q subject %q, want People %s", h.Get("X-Consumer-Username"), h.Get("X-Consumer-Subject"), kcfixture.AliceSubject)
			}
			if resp, body := alice.do("GET", px.URL+"/petstore/api", "application/json", nil); resp.StatusCode != 200 {
				t.Errorf("an API call with the session: got %d %s, want 200", resp.StatusCode, body)
			}
			if resp, _ := newPerson(t).do("GET", px.URL+"/petstore/api", "application/json", nil); resp.StatusCode != 401 {
				t.Errorf("an API call without a session: got %d, want 401", resp.StatusCode)
			}
		})
	}
}
