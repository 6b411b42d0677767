package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTrustedProxies: behind a trusted proxy the client is the address the proxy forwards for
// (a remote_addr limit counts each client, the access log names it); without trusted_proxies a
// client-written X-Forwarded-For changes nothing.
func TestTrustedProxies(t *testing.T) {
	up := newUpstream(t, nil)
	policy := func(trusted []string) string {
		p := map[string]any{
			"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
			"consumers": []any{map[string]any{"username": "c00", "idps": keyAuth("c00")}},
			"routes": []any{route("api", up.URL, map[string]any{"limit-count": map[string]any{
				"count": 1, "time_window": 3600, "key": "remote_addr",
			}})},
		}
		if trusted != nil {
			p["trusted_proxies"] = trusted
		}
		return policyJSON(t, p)
	}
	from := func(client string) map[string]string {
		return map[string]string{"apikey": "c00-key", "X-Forwarded-For": client}
	}

	t.Run("behind a trusted proxy", func(t *testing.T) {
		gw := startGateway(t, policy([]string{"127.0.0.0/8"}))
		for i, tc := range []struct {
			client string
			want   int
		}{{"203.0.113.7", 200}, {"203.0.113.7", 429}, {"203.0.113.8", 200}} {
			if got := do(t, "GET", gw.URL+"/api", from(tc.client)).Status; got != tc.want {
				t.Fatalf("request %d from %s: got %d, want %d", i+1, tc.client, got, tc.want)
			}
		}
		if got, want := up.last().Header.Get("X-Forwarded-For"), "203.0.113.8, 127.0.0.1"; got != want {
			t.Errorf("upstream X-Forwarded-For: got %q, want %q (the chain, with the gateway's peer appended)", got, want)
		}
		var last map[string]any
		eventually(t, "the access log line of the last request", func() (bool, string) {
			lines := strings.Split(strings.TrimSpace(gw.stdout.String()), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
				return false, err.Error()
			}
			return last["remote"] == "203.0.113.8", lines[len(lines)-1]
		})
		if last["peer"] != "127.0.0.1" {
			t.Errorf("access log peer: got %v, want 127.0.0.1", last["peer"])
		}
	})

	t.Run("without trusted proxies", func(t *testing.T) {
		gw := startGateway(t, policy(nil))
		if got := do(t, "GET", gw.URL+"/api", from("203.0.113.7")).Status; got != 200 {
			t.Fatalf("first request: got %d, want 200", got)
		}
		if got := do(t, "GET", gw.URL+"/api", from("203.0.113.8")).Status; got != 429 {
			t.Fatalf("second request claiming another client: got %d, want 429 (the header is not believed)", got)
		}
	})
}
