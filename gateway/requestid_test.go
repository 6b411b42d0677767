package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/gateway/ratelimit"
)

func TestRequestIDs(t *testing.T) {
	var seen string
	gw, _ := newTestGateway(t, `{
  "trusted_proxies": ["192.0.2.1"],
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] } } ]
}`, func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("X-Request-Id")
		_, _ = io.WriteString(w, "ok")
	})
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name     string
		peer     string
		incoming string
		keep     bool
	}{
		{name: "none: one is generated", peer: "192.0.2.1:1"},
		{name: "a trusted proxy's is kept", peer: "192.0.2.1:1", incoming: "edge-42", keep: true},
		{name: "a client's is replaced", peer: "198.51.100.9:1", incoming: "forged-id"},
		{name: "an unusable one is replaced", peer: "192.0.2.1:1", incoming: "has spaces in it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = ""
			req := httptest.NewRequest("GET", "/r", nil)
			req.RemoteAddr = tt.peer
			req.Header.Set("apikey", "ka")
			if tt.incoming != "" {
				req.Header.Set("X-Request-Id", tt.incoming)
			}
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			got := rec.Header().Get("X-Request-Id")
			if rec.Code != 200 || got != seen {
				t.Fatalf("status %d: client got id %q, upstream %q; want 200 and the same id", rec.Code, got, seen)
			}
			if tt.keep && got != tt.incoming {
				t.Errorf("got %q, want the proxy's %q", got, tt.incoming)
			}
			if !tt.keep && !generated.MatchString(got) {
				t.Errorf("got %q, want a generated id", got)
			}
		})
	}
	t.Run("a refusal has one too", func(t *testing.T) {
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, httptest.NewRequest("GET", "/r", nil))
		if rec.Code != 401 || !generated.MatchString(rec.Header().Get("X-Request-Id")) {
			t.Errorf("got %d with id %q, want 401 with a generated id", rec.Code, rec.Header().Get("X-Request-Id"))
		}
	})
}

// TestAccessLogLine: the fields operators grep for, and never a credential.
func TestAccessLogLine(t *testing.T) {
	var logs bytes.Buffer
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(201) }))
	t.Cleanup(up.Close)
	snap := loadPolicy(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "secret-key-ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] } } ]
}`, up.URL)
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	gw, err := New(snap, Options{Limiters: reg, Metrics: NewMetrics(), AccessLog: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	req := httptest.NewRequest("POST", "/r?apikey=secret-key-ka", strings.NewReader("hello"))
	req.Header.Set("User-Agent", "curl/8")
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, req)
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", logs.String(), err)
	}
	want := map[string]any{"msg": "request", "method": "POST", "path": "/r", "route": "r", "consumer": "alice",
		"status": float64(201), "host": "example.com", "proto": "HTTP/1.1", "user_agent": "curl/8",
		"bytes_in": float64(5), "upstream": strings.TrimPrefix(up.URL, "http://"), "upstream_status": float64(201),
		"request_id": rec.Header().Get("X-Request-Id")}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s: got %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["upstream_latency_ms"]; !ok {
		t.Errorf("no upstream_latency_ms in %v", line)
	}
	if strings.Contains(logs.String(), "secret-key-ka") {
		t.Errorf("the access log holds the key: %s", logs.String())
	}
}
