package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// petstorePolicy is the API7 scenario: one route, FetchBot limited to 2 requests per 5 s,
// JohnDoe unlimited; extra consumers and routes exercise 403, 502, 504, prefixes and balancing.
func petstorePolicy(upstreamURL, extraConsumers string) string {
	return fmt.Sprintf(`{
  "listen": "127.0.0.1:0",
  "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "FetchBot", "idps": [ { "idp": "keys", "key": "bot-key" } ],
      "plugins": { "limit-count": { "count": 2, "time_window": 5 } } },
    { "username": "JohnDoe", "idps": [ { "idp": "keys", "key": "john-key" } ] },
    { "username": "Mallory", "idps": [ { "idp": "keys", "key": "mallory-key" } ] }%s
  ],
  "routes": [
    { "name": "petstore", "paths": ["/petstore", "/petstore/{rest:.*}"], "methods": ["GET", "POST"],
      "upstream": { "targets": [ { "url": %q } ], "timeout": "2s" },
      "consumers": { "deny": ["Mallory"] } }
  ],
  "metrics": { "consumers": ["FetchBot", "JohnDoe"] }
}`, extraConsumers, upstreamURL)
}

func TestPetstoreScenario(t *testing.T) {
	up := newUpstream(t, nil)
	gw := startGateway(t, petstorePolicy(up.URL, ""))
	url := gw.URL + "/petstore"

	t.Run("no key is rejected", func(t *testing.T) {
		r := do(t, "GET", url, nil)
		if r.Status != 401 || r.message() != "Missing API key in request" {
			t.Fatalf("got %d %q, want 401 Missing API key in request", r.Status, r.Body)
		}
		if got, want := r.Header.Get("WWW-Authenticate"), `apikey realm="keys"`; got != want {
			t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
		}
	})
	t.Run("wrong key is rejected", func(t *testing.T) {
		r := do(t, "GET", url, map[string]string{"apikey": "not-a-key"})
		if r.Status != 401 || r.message() != "Invalid API key in request" {
			t.Fatalf("got %d %q, want 401 Invalid API key in request", r.Status, r.Body)
		}
	})
	t.Run("key in the query string", func(t *testing.T) {
		r := do(t, "GET", url+"?apikey=john-key", nil)
		if r.Status != 200 {
			t.Fatalf("got %d %q, want 200", r.Status, r.Body)
		}
	})
	t.Run("JohnDoe is never limited", func(t *testing.T) {
		for i := range 20 {
			r := do(t, "GET", url, map[string]string{"apikey": "john-key"})
			if r.Status != 200 {
				t.Fatalf("request %d: got %d %q, want 200", i+1, r.Status, r.Body)
			}
			if r.Header.Get("X-RateLimit-Limit") != "" {
				t.Fatalf("request %d: JohnDoe has no limit, got X-RateLimit-Limit %q", i+1, r.Header.Get("X-RateLimit-Limit"))
			}
		}
	})
	t.Run("FetchBot gets two requests per window", func(t *testing.T) {
		bot := map[string]string{"apikey": "bot-key"}
		for i, want := range []struct {
			status    int
			remaining string
		}{{200, "1"}, {200, "0"}, {429, "0"}} {
			r := do(t, "GET", url, bot)
			if r.Status != want.status {
				t.Fatalf("request %d: got %d %q, want %d", i+1, r.Status, r.Body, want.status)
			}
			if got := r.Header.Get("X-RateLimit-Limit"); got != "2" {
				t.Errorf("request %d: X-RateLimit-Limit got %q, want 2", i+1, got)
			}
			if got := r.Header.Get("X-RateLimit-Remaining"); got != want.remaining {
				t.Errorf("request %d: X-RateLimit-Remaining got %q, want %s", i+1, got, want.remaining)
			}
			if want.status == 429 {
				ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
				if err != nil || ra < 1 || ra > 5 {
					t.Errorf("Retry-After: got %q, want 1..5", r.Header.Get("Retry-After"))
				}
			}
		}
		// After the window the bot gets through again. Reset says when; poll past it.
		deadline := time.Now().Add(12 * time.Second)
		for {
			r := do(t, "GET", url, bot)
			if r.Status == 200 {
				break
			}
			if r.Status != 429 || time.Now().After(deadline) {
				t.Fatalf("after the window: got %d %q, want 200", r.Status, r.Body)
			}
			reset, _ := strconv.Atoi(r.Header.Get("X-RateLimit-Reset"))
			time.Sleep(time.Duration(max(reset, 1)) * time.Second / 2)
		}
	})
	t.Run("a consumer not allowed on the route is forbidden", func(t *testing.T) {
		r := do(t, "GET", url, map[string]string{"apikey": "mallory-key"})
		if r.Status != 403 {
			t.Fatalf("got %d %q, want 403", r.Status, r.Body)
		}
	})
	t.Run("unknown path is 404", func(t *testing.T) {
		r := do(t, "GET", gw.URL+"/nowhere", map[string]string{"apikey": "john-key"})
		if r.Status != 404 || r.message() != "404 Route Not Found" {
			t.Fatalf("got %d %q, want 404 Route Not Found", r.Status, r.Body)
		}
	})
	t.Run("method not routed is 404", func(t *testing.T) {
		r := do(t, "DELETE", url, map[string]string{"apikey": "john-key"})
		if r.Status != 404 {
			t.Fatalf("got %d %q, want 404", r.Status, r.Body)
		}
	})
	t.Run("upstream sees the identity and never a spoofed one", func(t *testing.T) {
		r := do(t, "GET", url+"/dogs/1", map[string]string{
			"apikey":                  "john-key",
			"X-Consumer-Username":     "admin",
			"X-Consumer-Custom-ID":    "42",
			"X-Credential-Identifier": "forged",
			"X-Userinfo":              "e30=",
		})
		if r.Status != 200 {
			t.Fatalf("got %d %q, want 200", r.Status, r.Body)
		}
		got := up.last()
		for h, want := range map[string]string{
			"X-Consumer-Username":     "JohnDoe",
			"X-Consumer-Custom-Id":    "",
			"X-Credential-Identifier": "keys:JohnDoe",
			"X-Userinfo":              "",
			"X-Forwarded-Proto":       "http",
			"X-Forwarded-For":         "127.0.0.1",
		} {
			if g := got.Header.Get(h); g != want {
				t.Errorf("upstream header %s: got %q, want %q", h, g, want)
			}
		}
		if got.URL.Path != "/petstore/dogs/1" {
			t.Errorf("upstream path: got %q, want /petstore/dogs/1", got.URL.Path)
		}
		if got.Header.Get("X-Forwarded-Host") == "" {
			t.Errorf("upstream got no X-Forwarded-Host")
		}
	})
	t.Run("metrics count requests by route, consumer and status", func(t *testing.T) {
		if got := gw.metric("portcullis_requests_total", `route="petstore"`, `consumer="FetchBot"`, `status="429"`); got < 1 {
			t.Errorf("portcullis_requests_total{FetchBot,429}: got %v, want >= 1", got)
		}
		if got := gw.metric("portcullis_ratelimit_rejections_total", `limit="consumer:FetchBot"`); got < 1 {
			t.Errorf("portcullis_ratelimit_rejections_total: got %v, want >= 1", got)
		}
		if got := gw.metric("portcullis_upstream_duration_seconds_count", `route="petstore"`); got < 1 {
			t.Errorf("upstream latency histogram: got %v observations, want >= 1", got)
		}
		// The requests above went one after another to one upstream: keep-alive reuses its
		// connection.
		dialed := gw.metric("portcullis_upstream_connections_total", `event="dialed"`)
		reused := gw.metric("portcullis_upstream_connections_total", `event="reused"`)
		if dialed < 1 || reused <= dialed {
			t.Errorf("portcullis_upstream_connections_total: dialed %v, reused %v; want reuse to outnumber dials", dialed, reused)
		}
	})
	t.Run("the access log has one line per request and never a key", func(t *testing.T) {
		log := gw.stdout.String()
		for _, secret := range []string{"bot-key", "john-key", "mallory-key", "not-a-key"} {
			if strings.Contains(log, secret) || strings.Contains(gw.stderr.String(), secret) {
				t.Errorf("a log contains the key %q", secret)
			}
		}
		if !strings.Contains(log, `"route":"petstore"`) || !strings.Contains(log, `"consumer":"FetchBot"`) || !strings.Contains(log, `"decision":"rate_limited"`) {
			t.Errorf("access log lacks route/consumer/decision fields:\n%s", log)
		}
	})
}

func TestHotReload(t *testing.T) {
	up := newUpstream(t, nil)
	gw := startGateway(t, petstorePolicy(up.URL, ""))
	url := gw.URL + "/petstore"
	newcomer := map[string]string{"apikey": "new-key"}
	v1 := gw.status()["version"]

	if r := do(t, "GET", url, newcomer); r.Status != 401 {
		t.Fatalf("before reload: got %d, want 401", r.Status)
	}

	t.Run("a new consumer is picked up from the file", func(t *testing.T) {
		policy := petstorePolicy(up.URL, `,
    { "username": "Newcomer", "idps": [ { "idp": "keys", "key": "new-key" } ] }`)
		writeFileAtomically(t, gw.PolicyPath, policy)
		gw.waitStatus("the new version", func(st map[string]any) bool { return st["version"] != v1 })
		if r := do(t, "GET", url, newcomer); r.Status != 200 {
			t.Fatalf("after reload: got %d %q, want 200", r.Status, r.Body)
		}
	})

	t.Run("a broken file keeps the old policy", func(t *testing.T) {
		good := gw.status()["version"]
		failures := gw.metric("portcullis_policy_reloads_total", `result="failure"`)
		writeFileAtomically(t, gw.PolicyPath, `{ "listen": "127.0.0.1:0", "consumers": [ { "username": 42 } ] `)
		st := gw.waitStatus("a reload error", func(st map[string]any) bool { return st["last_reload_error"] != nil })
		if st["version"] != good {
			t.Errorf("version: got %v, want the old %v", st["version"], good)
		}
		if r := do(t, "GET", url, newcomer); r.Status != 200 {
			t.Fatalf("old policy should still serve: got %d %q", r.Status, r.Body)
		}
		if got := gw.metric("portcullis_policy_reloads_total", `result="failure"`); got <= failures {
			t.Errorf("reload failures: got %v, want > %v", got, failures)
		}
	})

}

func TestReloadOnSIGHUP(t *testing.T) {
	up := newUpstream(t, nil)
	// Without the watcher, only the signal can make the gateway read the file again.
	gw := startGatewayArgs(t, petstorePolicy(up.URL, ""), []string{"-watch=false"})
	v1 := gw.status()["version"]
	newcomer := map[string]string{"apikey": "new-key"}
	writeFileAtomically(t, gw.PolicyPath, petstorePolicy(up.URL, `,
    { "username": "Newcomer", "idps": [ { "idp": "keys", "key": "new-key" } ] }`))
	if r := do(t, "GET", gw.URL+"/petstore", newcomer); r.Status != 401 {
		t.Fatalf("before SIGHUP: got %d, want 401 (no watcher)", r.Status)
	}
	gw.reloadSignal()
	gw.waitStatus("the new version", func(st map[string]any) bool { return st["version"] != v1 })
	if r := do(t, "GET", gw.URL+"/petstore", newcomer); r.Status != 200 {
		t.Fatalf("after SIGHUP: got %d %q, want 200", r.Status, r.Body)
	}
}

// writeFileAtomically replaces path by rename, as editors and ConfigMap updates do.
func writeFileAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatalf("writing %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("renaming %s: %v", tmp, err)
	}
}

func TestUpstreamFailures(t *testing.T) {
	// A port that refuses: listen, note the address, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	release := make(chan struct{})
	slow := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	a := newUpstream(t, nil)
	b := newUpstream(t, nil)
	c := newUpstream(t, nil)

	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "keys", "type": "key-auth", "hide_credentials": true } ],
  "consumers": [ { "username": "JohnDoe", "idps": [ { "idp": "keys", "key": "john-key" } ] } ],
  "routes": [
    { "name": "refused", "paths": ["/refused"], "upstream": { "targets": [ { "url": %q } ] } },
    { "name": "slow", "paths": ["/slow"], "upstream": { "targets": [ { "url": %q } ], "timeout": "200ms" } },
    { "name": "balanced", "paths": ["/api/{rest:.*}"], "strip_prefix": "/api",
      "upstream": { "targets": [ { "url": %q, "weight": 3 }, { "url": %q, "weight": 1 } ] } },
    { "name": "failover", "paths": ["/failover"], "methods": ["GET", "POST"],
      "upstream": { "targets": [ { "url": %q }, { "url": %q } ] } }
  ]
}`, refused, slow.URL, a.URL, b.URL, refused, c.URL))
	john := map[string]string{"apikey": "john-key"}

	tests := []struct {
		name   string
		path   string
		status int
	}{
		{"connection refused is 502", "/refused", 502},
		{"upstream timeout is 504", "/slow", 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "GET", gw.URL+tt.path, john)
			if r.Status != tt.status {
				t.Fatalf("got %d %q, want %d", r.Status, r.Body, tt.status)
			}
			if r.message() == "" {
				t.Errorf("body %q has no JSON message", r.Body)
			}
		})
	}

	t.Run("a target that refuses is passed over, no request fails", func(t *testing.T) {
		for i, method := range []string{"POST", "GET", "POST", "GET"} {
			if r := do(t, method, gw.URL+"/failover", john); r.Status != 200 {
				t.Fatalf("%s %d: got %d %q, want 200 from the other target", method, i+1, r.Status, r.Body)
			}
		}
		if c.count() != 4 {
			t.Errorf("the live target served %d of 4", c.count())
		}
		if n := strings.Count(gw.stderr.String(), "upstream target unreachable"); n != 1 {
			t.Errorf("warnings about the refusing target: got %d, want 1", n)
		}
	})

	t.Run("weights, strip_prefix and hidden credentials", func(t *testing.T) {
		for i := range 8 {
			if r := do(t, "GET", gw.URL+"/api/pets?apikey=john-key&x=1", nil); r.Status != 200 {
				t.Fatalf("request %d: got %d %q", i, r.Status, r.Body)
			}
		}
		if a.count() != 6 || b.count() != 2 {
			t.Errorf("balance: got %d/%d, want 6/2 for weights 3/1", a.count(), b.count())
		}
		last := a.last()
		if last.URL.Path != "/pets" {
			t.Errorf("strip_prefix: upstream path got %q, want /pets", last.URL.Path)
		}
		if q := last.URL.Query(); q.Has("apikey") || q.Get("x") != "1" {
			t.Errorf("hide_credentials: upstream query got %q, want only x=1", last.URL.RawQuery)
		}
	})
}

func TestGracefulShutdownDrains(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		w.Write([]byte("done"))
	})
	gw := startGateway(t, petstorePolicy(up.URL, ""))

	result := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("GET", gw.URL+"/petstore", nil)
		req.Header.Set("apikey", "john-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- response{Status: -1, Body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 16)
		n, _ := resp.Body.Read(b)
		result <- response{Status: resp.StatusCode, Body: string(b[:n])}
	}()
	<-started
	if err := gw.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	// The gateway stops accepting but must finish the request in flight.
	waitClosed(t, gw.URL)
	close(release)
	r := <-result
	if r.Status != 200 || r.Body != "done" {
		t.Fatalf("in-flight request: got %d %q, want 200 done", r.Status, r.Body)
	}
	<-gw.exited
	if gw.exitErr != nil {
		t.Errorf("exit: got %v, want a clean exit", gw.exitErr)
	}
}

// waitClosed polls until the listener refuses new connections.
func waitClosed(t *testing.T, url string) {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", host)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s still accepts connections", url)
}
