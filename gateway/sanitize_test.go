package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/idp"
)

const headersPolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "staff" } ],
  "consumers": [ { "username": "alice", "group": "staff", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [
    { "name": "r", "paths": ["/{rest:.*}"], "upstream": { "targets": [ { "url": "%s" } ] } }
  ]
}`

// seenRequest is what the recording upstream received.
type seenRequest struct {
	method  string
	header  http.Header
	trailer http.Header
	body    string
}

// recordingUpstream records the last request (its trailers after the body), switches to
// WebSocket when asked, and answers /no-type without a Content-Type.
type recordingUpstream struct {
	mu   sync.Mutex
	last *seenRequest
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.last = &seenRequest{method: r.Method, header: r.Header.Clone(), trailer: r.Trailer.Clone(), body: string(b)}
	u.mu.Unlock()
	if r.Header.Get("Upgrade") == "websocket" && r.URL.Path != "/no-type" {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	if r.URL.Path == "/no-type" {
		w.Header()["Content-Type"] = nil // the upstream's own server must not sniff either
		io.WriteString(w, "<html><body>not typed</body></html>")
		return
	}
	io.WriteString(w, "ok")
}

func (u *recordingUpstream) take() *seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.last
	u.last = nil
	return s
}

func newHeadersGateway(t *testing.T) (addr string, up *recordingUpstream) {
	t.Helper()
	up = &recordingUpstream{}
	gw, _ := newTestGateway(t, headersPolicy, up.ServeHTTP)
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	return strings.TrimPrefix(front.URL, "http://"), up
}

// rawExchange sends req as written and reads one response (its body too, unless a 101).
func rawExchange(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// asCGI is a header name as a CGI or WSGI upstream reads it; written out here rather than
// taken from the code under test.
func asCGI(name string) string { return strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }

// ownedByGateway: the names the gateway owns, as an upstream reads them.
func ownedByGateway(name string) bool {
	n := asCGI(name)
	switch n {
	case "X_CONSUMER_USERNAME", "X_CONSUMER_GROUPS", "X_CREDENTIAL_IDENTIFIER", "X_USERINFO",
		"X_ACCESS_TOKEN", "X_ID_TOKEN", "X_FORWARDED_FOR", "X_FORWARDED_HOST", "X_FORWARDED_PROTO":
		return true
	}
	return strings.HasPrefix(n, "X_CONSUMER_")
}

// checkGatewayHeaders fails unless every header of h an upstream reads as one the gateway owns
// is exactly one of want, once, with want's value, and every one of want is there.
func checkGatewayHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, vs := range h {
		if !ownedByGateway(k) {
			continue
		}
		w, ok := want[k]
		if !ok {
			t.Errorf("upstream header %s: %q, want none", k, vs)
			continue
		}
		if len(vs) != 1 || vs[0] != w {
			t.Errorf("upstream header %s: got %q, want [%q]", k, vs, w)
		}
	}
	for k := range want {
		if _, ok := h[k]; !ok {
			t.Errorf("upstream header %s: missing, want %q", k, want[k])
		}
	}
}

func gatewayWant(host string) map[string]string {
	return map[string]string{
		"X-Consumer-Username": "alice", "X-Consumer-Groups": "staff", "X-Credential-Identifier": "keys:alice",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http",
	}
}

// TestClientCannotRemoveOrForgeGatewayHeaders: the hop-by-hop removal runs on the client's
// headers before the gateway sets its own, on the pooled path and on the WebSocket path, and
// underscore spellings of the gateway's headers are dropped.
func TestClientCannotRemoveOrForgeGatewayHeaders(t *testing.T) {
	addr, up := newHeadersGateway(t)
	tests := []struct {
		name    string
		headers string
		status  int
		want    map[string]string
		kept    []string // client headers that must reach the upstream
	}{
		{
			name:    "Connection names the identity headers",
			headers: "Connection: X-Consumer-Username, X-Consumer-Groups\r\nX_Consumer_Username: Admin\r\n",
			status:  200,
		},
		{
			name: "Connection names every gateway header",
			headers: "Connection: keep-alive, X-Consumer-Username, X-Consumer-Groups, X-Credential-Identifier, " +
				"X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto\r\n",
			status: 200,
		},
		{
			name: "underscore and mixed spellings",
			headers: "X_Consumer_Username: Admin\r\nx_consumer-groups: admins\r\nX-Consumer_Custom_ID: 1\r\n" +
				"X_Credential_Identifier: root\r\nx_userinfo: e30\r\nX_Forwarded_For: 10.0.0.1\r\n" +
				"X_Forwarded_Host: evil\r\nX_FORWARDED_PROTO: https\r\nX_Access_Token: t\r\nX-Custom_Header: kept\r\n",
			status: 200,
			kept:   []string{"X-Custom_header"},
		},
		{
			name:    "client-sent identity headers",
			headers: "X-Consumer-Username: Admin\r\nX-Consumer-Groups: admins\r\nX-Userinfo: e30\r\nX-Id-Token: t\r\n",
			status:  200,
		},
		{
			name: "WebSocket switch with Connection naming the identity headers",
			headers: "Connection: Upgrade, X-Consumer-Username, X-Consumer-Groups, X-Forwarded-For\r\n" +
				"Upgrade: websocket\r\nX_Consumer_Username: Admin\r\n",
			status: http.StatusSwitchingProtocols,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: gw.example\r\napikey: ka\r\n"+tt.headers+"\r\n")
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			seen := up.take()
			if seen == nil {
				t.Fatal("the upstream got no request")
			}
			checkGatewayHeaders(t, seen.header, gatewayWant("gw.example"))
			for _, k := range tt.kept {
				if _, ok := seen.header[k]; !ok {
					t.Errorf("client header %s: missing upstream, want it kept", k)
				}
			}
		})
	}
}

// TestClientXForwardedForChainIsKept: the client's own X-Forwarded-For is the chain the peer is
// appended to, on both paths.
func TestClientXForwardedForChainIsKept(t *testing.T) {
	addr, up := newHeadersGateway(t)
	tests := []struct {
		name, headers string
	}{
		{"plain", ""},
		{"WebSocket", "Connection: Upgrade\r\nUpgrade: websocket\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\nX-Forwarded-For: 203.0.113.9\r\n"+tt.headers+"\r\n")
			seen := up.take()
			if seen == nil {
				t.Fatal("the upstream got no request")
			}
			if got, want := seen.header["X-Forwarded-For"], []string{"203.0.113.9, 127.0.0.1"}; !slices.Equal(got, want) {
				t.Errorf("X-Forwarded-For: got %q, want %q", got, want)
			}
		})
	}
}

// TestIdentityTrailersDropped: trailers that would name an identity never reach the upstream;
// other declared trailers do.
func TestIdentityTrailersDropped(t *testing.T) {
	addr, up := newHeadersGateway(t)
	tests := []struct {
		name     string
		declared string
		trailers string
		want     http.Header
	}{
		{
			name:     "declared identity trailers",
			declared: "X-Consumer-Username, X-Checksum, X_Consumer_Groups, X-Forwarded-For",
			trailers: "X-Consumer-Username: admin\r\nX-Checksum: abc\r\nX_Consumer_Groups: admins\r\nX-Forwarded-For: 10.0.0.1\r\n",
			want:     http.Header{"X-Checksum": {"abc"}},
		},
		{
			name:     "undeclared identity trailers",
			declared: "X-Checksum",
			trailers: "X-Checksum: abc\r\nX-Consumer-Username: admin\r\nX-Userinfo: e30\r\nX_consumer_username: admin\r\n",
			want:     http.Header{"X-Checksum": {"abc"}},
		},
		{
			name:     "only identity trailers",
			declared: "X-Consumer-Username",
			trailers: "X-Consumer-Username: admin\r\n",
			want:     http.Header{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, "POST /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n"+
				"Trailer: "+tt.declared+"\r\n\r\n5\r\nhello\r\n0\r\n"+tt.trailers+"\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d %q, want 200", resp.StatusCode, body)
			}
			seen := up.take()
			if seen == nil {
				t.Fatal("the upstream got no request")
			}
			if seen.body != "hello" {
				t.Errorf("body: got %q, want hello", seen.body)
			}
			got := seen.trailer
			if got == nil {
				got = http.Header{}
			}
			for k, vs := range got {
				if vs == nil {
					delete(got, k) // declared but never sent
				}
			}
			if len(got) != len(tt.want) || got.Get("X-Checksum") != tt.want.Get("X-Checksum") {
				t.Errorf("upstream trailers: got %v, want %v", got, tt.want)
			}
			checkGatewayHeaders(t, seen.header, gatewayWant("h"))
		})
	}
}

// TestNoContentTypeAdded: an upstream response without Content-Type reaches the client without
// one, on both paths; a typed one keeps its type.
func TestNoContentTypeAdded(t *testing.T) {
	addr, _ := newHeadersGateway(t)
	tests := []struct {
		name, path, headers string
		want                []string
	}{
		{"untyped", "/no-type", "", nil},
		{"untyped answer to a WebSocket request", "/no-type", "Connection: Upgrade\r\nUpgrade: websocket\r\n", nil},
		{"typed", "/typed", "", []string{"text/plain; charset=utf-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, "GET "+tt.path+" HTTP/1.1\r\nHost: h\r\napikey: ka\r\n"+tt.headers+"\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d %q, want 200", resp.StatusCode, body)
			}
			if got := resp.Header["Content-Type"]; !slices.Equal(got, tt.want) {
				t.Errorf("Content-Type: got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMalformedRequestBodyIs400: a request body the gateway cannot read is the client's fault.
func TestMalformedRequestBodyIs400(t *testing.T) {
	addr, _ := newHeadersGateway(t)
	tests := []struct {
		name, req string
	}{
		{"chunk size not hex", "POST /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"chunk longer than its size", "POST /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"},
		{"chunk size overflows", "POST /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, tt.req)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status: got %d %q, want 400", resp.StatusCode, body)
			}
			if !strings.Contains(body, "malformed request body") {
				t.Errorf("body: got %q, want the malformed request body message", body)
			}
		})
	}
}

// TestUpgradeTokens: only WebSocket is switched to; h2c is ignored and the request proxied as
// plain HTTP/1.1; any other protocol is refused.
func TestUpgradeTokens(t *testing.T) {
	addr, up := newHeadersGateway(t)
	tests := []struct {
		name    string
		headers string
		status  int
		// upgraded: the upstream saw Upgrade: websocket; otherwise it saw no Upgrade,
		// Connection or HTTP2-Settings at all.
		upgraded bool
	}{
		{"websocket", "Connection: Upgrade\r\nUpgrade: websocket\r\n", 101, true},
		{"websocket in another case", "Connection: keep-alive, UPGRADE\r\nUpgrade: WebSocket\r\n", 101, true},
		{"websocket among others", "Connection: Upgrade\r\nUpgrade: foo/1, websocket\r\n", 101, true},
		{"h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", 200, false},
		{"h2c without Connection naming HTTP2-Settings", "Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n", 200, false},
		{"Upgrade without Connection: upgrade", "Upgrade: foo\r\n", 200, false},
		{"Connection token containing upgrade", "Connection: X-Upgrade-Hint\r\nUpgrade: websocket\r\n", 200, false},
		{"unknown protocol", "Connection: Upgrade\r\nUpgrade: foo\r\n", 400, false},
		{"h2c and an unknown protocol", "Connection: Upgrade\r\nUpgrade: h2c, TLS/1.2\r\n", 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: h\r\napikey: ka\r\n"+tt.headers+"\r\n")
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			seen := up.take()
			if tt.status == 400 {
				if seen != nil {
					t.Errorf("a refused upgrade reached the upstream")
				}
				return
			}
			if seen == nil {
				t.Fatal("the upstream got no request")
			}
			if tt.upgraded {
				if got := seen.header["Upgrade"]; !slices.Equal(got, []string{"websocket"}) {
					t.Errorf("upstream Upgrade: got %q, want [websocket]", got)
				}
				return
			}
			for _, k := range []string{"Upgrade", "Connection", "Http2-Settings"} {
				if vs, ok := seen.header[k]; ok {
					t.Errorf("upstream %s: got %q, want none", k, vs)
				}
			}
		})
	}
}

// FuzzUpstreamHeaders: whatever header and trailer names and values the client sends, the
// upstream request carries none of the client's copies of the gateway's headers, and the
// gateway's own exactly once with the gateway's value.
func FuzzUpstreamHeaders(f *testing.F) {
	seeds := []struct{ header, trailer string }{
		{"Connection: X-Consumer-Username, X-Consumer-Groups\nX_Consumer_Username: Admin", ""},
		{"Connection: Upgrade, X-Forwarded-For\nUpgrade: websocket\nX-Forwarded-For: 10.0.0.1", ""},
		{"connection: x-consumer-username\nx-consumer-username: root", "X-Consumer-Username: admin"},
		{"X_CONSUMER_GROUPS: admins\nX-Consumer_Custom-Id: 1\nx_userinfo: e30", "X_Consumer_Username: admin\nX-Checksum: 1"},
		{"Connection: Upgrade\nUpgrade: h2c\nHTTP2-Settings: AAMA", "X-Forwarded-Host: evil"},
		{"Upgrade: foo\nConnection: upgrade", ""},
		{"Trailer: X-Consumer-Username\nTe: trailers\nKeep-Alive: 5", "Connection: X-Checksum"},
		{"X-Forwarded-Proto: https\nX_Forwarded_Proto: https\nX-Access-Token: t\nX-ID-Token: t", ""},
	}
	for _, s := range seeds {
		f.Add(s.header, s.trailer)
	}
	f.Fuzz(func(t *testing.T, header, trailer string) {
		r := httptest.NewRequest("POST", "http://gw.example/x", nil)
		r.Header = parseFuzzHeader(header)
		r.Trailer = parseFuzzHeader(trailer)
		declared := http.Header{}
		for k := range r.Trailer {
			declared[k] = nil
		}
		arrived := r.Trailer
		r.Trailer = declared
		websocket, err := sanitizeRequest(r)
		if err != nil {
			return // refused: nothing is forwarded
		}
		wantXFF := "192.0.2.1" // httptest.NewRequest's peer
		if chain := r.Header["X-Forwarded-For"]; len(chain) > 0 && !namesInConnection(r.Header, "X-Forwarded-For") {
			wantXFF = strings.Join(chain, ", ") + ", " + wantXFF
		}
		x := &exchange{}
		res := &idp.Result{Consumer: "alice", Identifier: "keys"}
		upstreamHeaders(r, res, "staff", websocket, x)
		checkGatewayHeaders(t, r.Header, map[string]string{
			"X-Consumer-Username": "alice", "X-Consumer-Groups": "staff", "X-Credential-Identifier": "keys",
			"X-Forwarded-For": wantXFF, "X-Forwarded-Host": "gw.example", "X-Forwarded-Proto": "http",
		})
		out := upstreamTrailer(r.Trailer)
		copyTrailers(out, arrived)
		for k, vs := range out {
			if ownedByGateway(k) {
				t.Errorf("upstream trailer %s: %q, want none", k, vs)
			}
		}
	})
}

// parseFuzzHeader reads "Name: value" lines into a header, names kept as written (an upstream
// may see any spelling; net/http canonicalises the ones it parses).
func parseFuzzHeader(s string) http.Header {
	h := http.Header{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" {
			continue
		}
		h[k] = append(h[k], strings.TrimSpace(v))
		if c := http.CanonicalHeaderKey(k); c != k {
			h[c] = append(h[c], strings.TrimSpace(v))
		}
	}
	return h
}

// namesInConnection reports whether the client's Connection names name.
func namesInConnection(h http.Header, name string) bool {
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.Trim(t, " \t\r\n"), name) {
				return true
			}
		}
	}
	return false
}
