package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

const forwardPolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [
    { "name": "r", "paths": ["/{rest:.*}"], "upstream": { "targets": [ { "url": "%s/base" } ] } }
  ]
}`

func TestForward(t *testing.T) {
	var seen *http.Request
	var seenBody string
	gw, _ := newTestGateway(t, forwardPolicy, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen, seenBody = r.Clone(r.Context()), string(b)
		switch r.URL.Path {
		case "/base/trailer":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
		case "/base/hop":
			w.Header().Set("Connection", "X-Secret-Hop")
			w.Header().Set("X-Secret-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=5")
			io.WriteString(w, "hop")
		default:
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "created")
		}
	})
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)

	t.Run("request is forwarded with its body, path, query and forwarding headers", func(t *testing.T) {
		req, _ := http.NewRequest("POST", front.URL+"/pets/1?x=%2F1", strings.NewReader(`{"name":"rex"}`))
		req.Header.Set("apikey", "ka")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("Connection", "X-Drop-Me")
		req.Header.Set("X-Drop-Me", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 || string(b) != "created" {
			t.Fatalf("got %d %q, want 201 created", resp.StatusCode, b)
		}
		if seen.URL.Path != "/base/pets/1" || seen.URL.RawQuery != "x=%2F1" {
			t.Errorf("upstream URL: got %q?%q, want /base/pets/1?x=%%2F1", seen.URL.Path, seen.URL.RawQuery)
		}
		if seenBody != `{"name":"rex"}` {
			t.Errorf("upstream body: got %q", seenBody)
		}
		if got, want := seen.Header.Get("X-Forwarded-For"), "203.0.113.9, 127.0.0.1"; got != want {
			t.Errorf("X-Forwarded-For: got %q, want %q", got, want)
		}
		if seen.Header.Get("X-Drop-Me") != "" {
			t.Errorf("a header named in Connection was forwarded")
		}
		if got := seen.Header.Get("User-Agent"); got != "Go-http-client/1.1" {
			t.Errorf("User-Agent: got %q, want the client's", got)
		}
		if got := seen.Host; got != strings.TrimPrefix(front.URL, "http://") {
			t.Errorf("Host: got %q, want the client's %q", got, front.URL)
		}
	})

	t.Run("hop-by-hop response headers are dropped", func(t *testing.T) {
		rec := serve(gw, "GET", "/hop", map[string]string{"apikey": "ka"})
		if rec.Header().Get("X-Secret-Hop") != "" || rec.Header().Get("Keep-Alive") != "" {
			t.Errorf("hop-by-hop headers reached the client: %v", rec.Header())
		}
	})

	t.Run("trailers are forwarded", func(t *testing.T) {
		req, _ := http.NewRequest("GET", front.URL+"/trailer", nil)
		req.Header.Set("apikey", "ka")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
			t.Errorf("trailer: got %q, want abc", got)
		}
	})
}

// TestForwardStreams checks that an event stream reaches the client event by event, while the
// upstream is still writing.
func TestForwardStreams(t *testing.T) {
	next := make(chan struct{})
	gw, _ := newTestGateway(t, forwardPolicy, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
	})
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	req, _ := http.NewRequest("GET", front.URL+"/events", nil)
	req.Header.Set("apikey", "ka")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("event %d: got %q, want %q", i, line, want)
		}
		rd.ReadString('\n')
		next <- struct{}{} // the upstream writes the next event only after this one arrived
	}
}

// TestForwardCutBody checks that an upstream dying mid-body cuts the client's connection rather
// than ending the response cleanly.
func TestForwardCutBody(t *testing.T) {
	gw, _ := newTestGateway(t, forwardPolicy, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	req, _ := http.NewRequest("GET", front.URL+"/cut", nil)
	req.Header.Set("apikey", "ka")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return // cut before the status line was flushed: the client saw no clean answer either
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("reading a cut body: got no error, want an unexpected EOF")
	}
}

// TestForwardUpgrade checks that a WebSocket switch is proxied end to end.
func TestForwardUpgrade(t *testing.T) {
	gw, _ := newTestGateway(t, forwardPolicy, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	})
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	conn, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\napikey: ka\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	rd := bufio.NewReader(conn)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status: got %d, want 101", resp.StatusCode)
	}
	fmt.Fprintf(conn, "hello\n")
	line, err := rd.ReadString('\n')
	if err != nil || line != "echo: hello\n" {
		t.Fatalf("after the switch: got %q %v, want the echo", line, err)
	}
}

// TestRouteTimeout: an upstream that sends no headers within the route timeout is a 504; one
// whose headers arrive in time may take longer over its body.
func TestRouteTimeout(t *testing.T) {
	release := make(chan struct{})
	gw, _ := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/{p}"], "upstream": { "targets": [ { "url": "%s" } ], "timeout": "50ms" } } ]
}`, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/headers" {
			<-r.Context().Done() // the gateway gives up and closes the connection
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "late")
	})
	if rec := serve(gw, "GET", "/headers", map[string]string{"apikey": "ka"}); rec.Code != http.StatusGatewayTimeout {
		t.Errorf("no headers in time: got %d, want 504", rec.Code)
	}
	// The body is held past the route timeout: only a timeout covering the body would cut it.
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	if rec := serve(gw, "GET", "/body", map[string]string{"apikey": "ka"}); rec.Code != http.StatusOK || rec.Body.String() != "late" {
		t.Errorf("headers in time, slow body: got %d %q, want 200 \"late\"", rec.Code, rec.Body)
	}
}

// The upstream connection counters: one dial, then reuse over keep-alive; an address the policy
// no longer names loses its series on reload.
func TestUpstreamConnectionMetrics(t *testing.T) {
	const policy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`
	gw, up := newTestGateway(t, policy, nil)
	addr := strings.TrimPrefix(up.URL, "http://")
	for i := range 3 {
		if rec := serve(gw, "GET", "/r", map[string]string{"apikey": "ka"}); rec.Code != 200 {
			t.Fatalf("request %d: got %d, want 200", i+1, rec.Code)
		}
	}
	for event, want := range map[string]float64{"dialed": 1, "reused": 2, "stale": 0} {
		var m dto.Metric
		if err := gw.metrics.upstreamConns.WithLabelValues(addr, event).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != want {
			t.Errorf("portcullis_upstream_connections_total{event=%q}: got %v, want %v", event, got, want)
		}
	}

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(other.Close)
	swapPolicy(t, gw, policy, other.URL)
	if rec := serve(gw, "GET", "/r", map[string]string{"apikey": "ka"}); rec.Code != 200 {
		t.Fatalf("after reload: got %d, want 200", rec.Code)
	}
	families, err := gw.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series []string
	for _, f := range families {
		if f.GetName() == "portcullis_upstream_connections_total" {
			for _, m := range f.GetMetric() {
				series = append(series, m.GetLabel()[1].GetValue()) // labels sorted: event, upstream
			}
		}
	}
	want := strings.TrimPrefix(other.URL, "http://")
	if len(series) != 3 || series[0] != want || series[1] != want || series[2] != want {
		t.Errorf("upstream series after reload: got %q, want three of %s (the old address's gone)", series, want)
	}
}
