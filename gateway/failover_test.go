package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portcullis/portcullis/gateway/ratelimit"
)

// TestFailoverToAnotherTarget: with one of two targets refusing connections no request fails:
// the first that meets it goes on to the other target (a body too, on the lean client's path),
// and the refusing target is then passed over, so that it is tried once and logged once.
func TestFailoverToAnotherTarget(t *testing.T) {
	var got atomic.Int64
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	t.Cleanup(live.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // refuses connections from now on

	var logs bytes.Buffer
	snap := loadPolicy(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "methods": ["GET", "POST"],
    "upstream": { "targets": [ { "url": "`+dead+`" }, { "url": "%s" } ] } } ]
}`, live.URL)
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	gw, err := New(snap, Options{Limiters: reg, Metrics: NewMetrics(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })

	for i := range 6 {
		var rec *httptest.ResponseRecorder
		if i%2 == 1 { // the first request, which meets the dead target, has a body
			rec = serve(gw, "GET", "/r", map[string]string{"apikey": "ka"})
		} else {
			req := httptest.NewRequest("POST", "/r", strings.NewReader("payload"))
			req.Header.Set("apikey", "ka")
			rec = httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			if rec.Body.String() != "payload" {
				t.Errorf("POST %d: upstream got body %q, want payload", i+1, rec.Body)
			}
		}
		if rec.Code != 200 {
			t.Fatalf("request %d: got %d %s, want 200", i+1, rec.Code, rec.Body)
		}
	}
	if n := got.Load(); n != 6 {
		t.Errorf("the live target served %d requests, want 6", n)
	}
	if n := strings.Count(logs.String(), "upstream target unreachable"); n != 1 {
		t.Errorf("warnings about the dead target: got %d, want 1 (it is passed over after the first)\n%s", n, logs.String())
	}
}

// With every target refusing, each is tried once and the answer is 502.
func TestFailoverAllTargetsDown(t *testing.T) {
	var dead []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, "http://"+ln.Addr().String())
		ln.Close()
	}
	gw := newTestGatewayAt(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" }, { "url": "`+dead[1]+`" } ] } } ]
}`, dead[0])
	rec := serve(gw, "GET", "/r", map[string]string{"apikey": "ka"})
	if rec.Code != 502 {
		t.Fatalf("got %d, want 502", rec.Code)
	}
	if got := message(t, rec); got != "upstream unavailable" {
		t.Errorf("message: got %q", got)
	}
}
