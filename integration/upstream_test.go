package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/gateway/upstream/upstreamtest"
)

// rxQueued reports whether the loopback socket bound to 127.0.0.1:port has bytes waiting to be
// read, from /proc/net/tcp (ok is false where there is none: not Linux).
func rxQueued(t *testing.T, port int) (queued, ok bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, false
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseUint(rx, 16, 64)
		return err == nil && n > 0, true
	}
	return false, true
}

// TestUpstreamPoolPoisoning: an upstream answers alice's request with a short Content-Length
// and then, on the same idle connection, writes a second response setting a session cookie.
// Bob's request, the next one, must get its own answer, not that one (issue 11, item 5).
func TestUpstreamPoolPoisoning(t *testing.T) {
	if _, ok := rxQueued(t, 0); !ok {
		t.Skip("needs /proc/net/tcp to see the stray bytes arrive")
	}
	up := upstreamtest.NewPoisoning(t)
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "keys", "key": "alice-key" } ] },
    { "username": "bob", "idps": [ { "idp": "keys", "key": "bob-key" } ] }
  ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://%s" } ] } } ]
}`, up.Addr()))

	if got := do(t, "GET", gw.URL+"/r", map[string]string{"apikey": "alice-key"}); got.Status != 200 || got.Body != "ok" {
		t.Fatalf("alice: got %d %q, want 200 \"ok\"", got.Status, got.Body)
	}
	up.Poison()
	port := <-up.Written
	for queued, _ := rxQueued(t, port); !queued; queued, _ = rxQueued(t, port) {
		// the stray response is on its way over loopback to the gateway's idle connection
	}
	got := do(t, "GET", gw.URL+"/r", map[string]string{"apikey": "bob-key"})
	if got.Status != 200 || got.Body != "fresh" || got.Header.Get("Set-Cookie") != "" {
		t.Errorf("bob: got %d %q Set-Cookie %q, want 200 \"fresh\" and no cookie", got.Status, got.Body, got.Header.Get("Set-Cookie"))
	}
}

// TestUpstreamAndClientBounds: response headers over 64 KiB are a 502, and a client that stops
// sending its body gets 408 after client_body_timeout (issue 11, medium items).
func TestUpstreamAndClientBounds(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/r/big" {
			w.Header().Set("X-Big", strings.Repeat("a", 70<<10))
		}
		_, _ = io.WriteString(w, "ok")
	})
	gw := startGateway(t, fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "alice-key" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r/{rest:.*}"],
    "upstream": { "targets": [ { "url": "%s" } ], "client_body_timeout": "200ms" } } ]
}`, up.URL))
	t.Run("response headers over 64 KiB", func(t *testing.T) {
		got := do(t, "GET", gw.URL+"/r/big", map[string]string{"apikey": "alice-key"})
		if got.Status != http.StatusBadGateway || got.Header.Get("X-Big") != "" {
			t.Errorf("got %d with X-Big of %d bytes, want 502 without it", got.Status, len(got.Header.Get("X-Big")))
		}
	})
	t.Run("a body that stops", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST /r/x HTTP/1.1\r\nHost: gw\r\napikey: alice-key\r\nContent-Length: 100\r\n\r\nten bytes."); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
			t.Errorf("got %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
		}
	})
}
