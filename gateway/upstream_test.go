package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/gateway/upstream/upstreamtest"
)

// TestGatewaySmuggledResponse: bytes an upstream sends after a response's declared body must
// never answer another client's request.
func TestGatewaySmuggledResponse(t *testing.T) {
	up := upstreamtest.New(t, func(n int, _ *http.Request) []byte {
		if n == 1 {
			return []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
		}
		return []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
	})
	gw := newTestGatewayAt(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, up.URL().String())
	for i, want := range []string{"ok", "fresh"} {
		req := httptest.NewRequest("GET", "http://gw/r", nil)
		req.Header.Set("apikey", "ka")
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.String() != want {
			t.Fatalf("request %d: got %d %q, want 200 %q", i+1, rec.Code, rec.Body, want)
		}
	}
}

// TestGatewayResponseHeaderLimit: an upstream's oversized response headers give the client a
// 502 on the pool's path and on http.Transport's (a body of unknown length takes it).
func TestGatewayResponseHeaderLimit(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Big", strings.Repeat("a", 70<<10))
		_, _ = io.WriteString(w, "should not arrive")
	}))
	t.Cleanup(up.Close)
	gw := newTestGatewayAt(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, up.URL)
	tests := []struct {
		name string
		req  func() *http.Request
	}{
		{"pool", func() *http.Request { return httptest.NewRequest("GET", "http://gw/r", nil) }},
		{"transport", func() *http.Request {
			r := httptest.NewRequest("POST", "http://gw/r", strings.NewReader("body"))
			r.ContentLength = -1
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req()
			req.Header.Set("apikey", "ka")
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadGateway || rec.Header().Get("X-Big") != "" {
				t.Errorf("got %d with X-Big of %d bytes, want 502 without it", rec.Code, len(rec.Header().Get("X-Big")))
			}
		})
	}
}
