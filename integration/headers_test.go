package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// wsgiEcho is a WSGI application on Python's wsgiref that answers with the request's HTTP_*
// environ as JSON: the names a WSGI framework reads, where X-Consumer-Username and
// X_Consumer_Username are both HTTP_X_CONSUMER_USERNAME. It reads a chunked body itself
// (wsgiref does not) and reports the trailers; /wsgi/no-type is answered without a
// Content-Type. It prints its port once listening.
const wsgiEcho = `
import json, socketserver
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler

class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def read_chunked(f):
    body = b''
    while True:
        size = int(f.readline().split(b';')[0].strip(), 16)
        if size == 0:
            break
        body += f.read(size)
        f.readline()
    trailers = {}
    while True:
        line = f.readline()
        if line in (b'\r\n', b'\n', b''):
            break
        k, _, v = line.decode('latin-1').partition(':')
        trailers[k.strip()] = v.strip()
    return body, trailers

def app(environ, start_response):
    out = {'environ': {k: v for k, v in environ.items() if k.startswith('HTTP_')}}
    if environ.get('HTTP_TRANSFER_ENCODING', '').lower() == 'chunked':
        body, out['trailers'] = read_chunked(environ['wsgi.input'])
        out['body'] = body.decode('latin-1')
    elif environ.get('CONTENT_LENGTH'):
        out['body'] = environ['wsgi.input'].read(int(environ['CONTENT_LENGTH'])).decode('latin-1')
    data = json.dumps(out).encode()
    headers = [('Content-Length', str(len(data)))]
    if environ['PATH_INFO'] != '/wsgi/no-type':
        headers.append(('Content-Type', 'application/json'))
    start_response('200 OK', headers)
    return [data]

srv = make_server('127.0.0.1', 0, app, server_class=Server, handler_class=Quiet)
print(srv.server_port, flush=True)
srv.serve_forever()
`

// startWSGI runs wsgiEcho and returns its address once it accepts connections.
func startWSGI(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the WSGI upstream needs it")
	}
	cmd := exec.Command(py, "-c", wsgiEcho)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the WSGI upstream: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		port <- strings.TrimSpace(line)
	}()
	var addr string
	select {
	case p := <-port:
		if p == "" {
			t.Fatalf("the WSGI upstream printed no port\nstderr:\n%s", stderr.String())
		}
		addr = "127.0.0.1:" + p
	case <-time.After(30 * time.Second):
		t.Fatalf("the WSGI upstream did not start within 30s\nstderr:\n%s", stderr.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the WSGI upstream at %s accepts no connection: %v\nstderr:\n%s", addr, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a readiness check
	}
}

// rawResponse sends req exactly as written on a new connection and reads one response.
func rawResponse(t *testing.T, gwURL, req string) response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(gwURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a hung gateway fails the test, not the suite
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

type wsgiSeen struct {
	Environ  map[string]string `json:"environ"`
	Trailers map[string]string `json:"trailers"`
	Body     string            `json:"body"`
}

// TestHeaderSmugglingToWSGI: through the built binary to a real WSGI upstream, a client can
// neither remove the gateway's identity headers (Connection), nor forge them (underscore
// spellings, trailers), nor switch to a protocol other than WebSocket; a malformed body is the
// client's 400, and an untyped response stays untyped.
func TestHeaderSmugglingToWSGI(t *testing.T) {
	wsgi := startWSGI(t)
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":            []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumer_groups": []any{map[string]any{"name": "staff"}},
		"consumers":       []any{map[string]any{"username": "alice", "group": "staff", "idps": keyAuth("alice")}},
		"routes": []any{map[string]any{
			"name": "wsgi", "paths": []string{"/wsgi/{rest:.*}"},
			"upstream": map[string]any{"targets": []any{map[string]any{"url": "http://" + wsgi}}, "timeout": "10s"},
		}},
	}))
	const head = "Host: api.example\r\napikey: alice-key\r\n"
	wantIdentity := map[string]string{"HTTP_X_CONSUMER_USERNAME": "alice", "HTTP_X_CONSUMER_GROUPS": "staff"}

	tests := []struct {
		name   string
		req    string
		status int
		// absent are environ keys the upstream must not see; trailers the trailers it must.
		absent   []string
		trailers map[string]string
	}{
		{
			name: "Connection names the identity headers, an underscore spelling carries Admin",
			req: "GET /wsgi/x HTTP/1.1\r\n" + head + "Connection: X-Consumer-Username, X-Consumer-Groups\r\n" +
				"X_Consumer_Username: Admin\r\nX_Consumer_Groups: admins\r\n\r\n",
			status: 200,
		},
		{
			name: "same over the WebSocket path",
			req: "GET /wsgi/x HTTP/1.1\r\n" + head + "Connection: Upgrade, X-Consumer-Username, X-Consumer-Groups\r\n" +
				"Upgrade: websocket\r\nX_Consumer_Username: Admin\r\nx_consumer-groups: admins\r\n\r\n",
			status: 200,
		},
		{
			name: "identity headers in the trailers",
			req: "POST /wsgi/x HTTP/1.1\r\n" + head + "Transfer-Encoding: chunked\r\n" +
				"Trailer: X-Consumer-Username, X_Consumer_Username, X-Checksum\r\n\r\n" +
				"5\r\nhello\r\n0\r\nX-Consumer-Username: Admin\r\nX_Consumer_Username: Admin\r\n" +
				"X-Consumer-Groups: admins\r\nX-Checksum: abc\r\n\r\n",
			status:   200,
			trailers: map[string]string{"X-Checksum": "abc"},
		},
		{
			name: "h2c upgrade is served as plain HTTP/1.1",
			req: "GET /wsgi/x HTTP/1.1\r\n" + head + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			status: 200,
			absent: []string{"HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS", "HTTP_CONNECTION"},
		},
		{
			name:   "another protocol upgrade is refused",
			req:    "GET /wsgi/x HTTP/1.1\r\n" + head + "Connection: Upgrade\r\nUpgrade: foo/2\r\n\r\n",
			status: 400,
		},
		{
			name: "malformed chunked body",
			req: "POST /wsgi/x HTTP/1.1\r\n" + head + "Transfer-Encoding: chunked\r\n\r\n" +
				"zz\r\nhello\r\n0\r\n\r\n",
			status: 400,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawResponse(t, gw.URL, tt.req)
			if r.Status != tt.status {
				t.Fatalf("status: got %d %q, want %d", r.Status, r.Body, tt.status)
			}
			if r.Status != 200 {
				return
			}
			var seen wsgiSeen
			if err := json.Unmarshal([]byte(r.Body), &seen); err != nil {
				t.Fatalf("upstream answer %q: %v", r.Body, err)
			}
			for k, want := range wantIdentity {
				if got := seen.Environ[k]; got != want {
					t.Errorf("environ %s: got %q, want %q", k, got, want)
				}
			}
			for k, v := range seen.Environ {
				if strings.Contains(v, "Admin") || strings.Contains(v, "admins") {
					t.Errorf("environ %s: got %q, a client-forged value", k, v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := seen.Environ[k]; ok {
					t.Errorf("environ %s: got %q, want none", k, v)
				}
			}
			if tt.trailers != nil {
				if seen.Body != "hello" {
					t.Errorf("body: got %q, want hello", seen.Body)
				}
				if len(seen.Trailers) != len(tt.trailers) || seen.Trailers["X-Checksum"] != tt.trailers["X-Checksum"] {
					t.Errorf("trailers: got %v, want %v", seen.Trailers, tt.trailers)
				}
			}
		})
	}

	t.Run("an untyped response stays untyped", func(t *testing.T) {
		r := rawResponse(t, gw.URL, "GET /wsgi/no-type HTTP/1.1\r\n"+head+"\r\n")
		if r.Status != 200 {
			t.Fatalf("status: got %d %q, want 200", r.Status, r.Body)
		}
		if got := r.Header["Content-Type"]; got != nil {
			t.Errorf("Content-Type: got %q, want none", got)
		}
		r = rawResponse(t, gw.URL, "GET /wsgi/typed HTTP/1.1\r\n"+head+"\r\n")
		if got, want := r.Header["Content-Type"], []string{"application/json"}; !slices.Equal(got, want) {
			t.Errorf("typed response's Content-Type: got %q, want %q", got, want)
		}
	})
}
