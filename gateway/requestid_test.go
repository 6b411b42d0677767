package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
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
