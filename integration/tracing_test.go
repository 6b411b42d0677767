package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/internal/redistest"
)

// The tests of this file run the built binary with tracing on, exporting by OTLP to a receiver
// of the test's own that decodes what arrives with the official OTLP protobuf packages, as a
// collector would (the OpenTelemetry Collector itself is not installed from the module proxy
// for this: its module graph is several hundred modules).

// otlpReceiver keeps every span exported to it and the raw bytes of every export.
type otlpReceiver struct {
	mu        sync.Mutex
	raw       [][]byte
	spans     []*tracepb.Span
	resources []*commonpb.KeyValue
}

func (o *otlpReceiver) add(raw []byte, req *coltracepb.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.raw = append(o.raw, raw)
	for _, rs := range req.GetResourceSpans() {
		o.resources = append(o.resources, rs.GetResource().GetAttributes()...)
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
}

func (o *otlpReceiver) snapshot() ([]*tracepb.Span, []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...), bytes.Join(o.raw, nil)
}

func (o *otlpReceiver) resourceAttr(k string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, kv := range o.resources {
		if kv.GetKey() == k {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// serveHTTP is the OTLP/HTTP traces endpoint (binary protobuf).
func (o *otlpReceiver) serveHTTP(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "not an otlp/http traces export", http.StatusBadRequest)
			return
		}
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.add(raw, &req)
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// grpcTraces is the OTLP/gRPC trace service.
type grpcTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	o *otlpReceiver
}

func (g grpcTraces) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	g.o.add(raw, req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (o *otlpReceiver) serveGRPC(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, grpcTraces{o: o})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return "http://" + l.Addr().String()
}

func spanAttr(s *tracepb.Span, k string) *commonpb.AnyValue {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == k {
			return kv.GetValue()
		}
	}
	return nil
}

// fakeIssuer is an OIDC issuer that answers discovery and introspection: every opaque token
// is active, for subject svc-1. It counts introspections and remembers their traceparent.
type fakeIssuer struct {
	*httptest.Server
	mu          sync.Mutex
	traceparent []string
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{}
	mux := http.NewServeMux()
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": f.URL, "jwks_uri": f.URL + "/jwks", "introspection_endpoint": f.URL + "/introspect",
			"authorization_endpoint": f.URL + "/auth", "token_endpoint": f.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"keys":[]}`)
	})
	mux.HandleFunc("POST /introspect", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.traceparent = append(f.traceparent, r.Header.Get("Traceparent"))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "sub": "svc-1", "iss": f.URL, "aud": "portcullis",
			"exp": time.Now().Add(time.Hour).Unix()})
	})
	return f
}

// Credentials of the tracing test: none of their bytes may reach the exported spans.
const (
	tracedAPIKey       = "trace-secret-api-key-7f3a"
	tracedPassword     = "trace-secret-basic-pw-91c2"
	tracedBearer       = "trace-secret-opaque-token-55de"
	tracedClientSecret = "trace-secret-client-secret-0b8e"
)

func tracedPolicy(t *testing.T, upstreamURL, issuerURL, redisAddr string) string {
	return policyJSON(t, map[string]any{
		"trusted_proxies": []string{"127.0.0.2"},
		"redis":           map[string]any{"addr": redisAddr},
		"idps": []any{
			map[string]any{"name": "keys", "type": "key-auth"},
			map[string]any{"name": "basic", "type": "basic-auth"},
			map[string]any{"name": "partner", "type": "oidc", "issuer": issuerURL, "audience": "portcullis",
				"header": "X-Partner-Token", "introspection": true, "introspection_ttl": "1ms",
				"client_id": "gateway", "client_secret": tracedClientSecret},
		},
		"consumers": []any{map[string]any{"username": "alice", "idps": []any{
			map[string]any{"idp": "keys", "key": tracedAPIKey},
			map[string]any{"idp": "basic", "username": "alice", "password": tracedPassword},
			map[string]any{"idp": "partner", "subject": "svc-1"},
		}}},
		"routes": []any{map[string]any{
			"name": "items", "paths": []string{"/items/{id}"},
			"upstream": map[string]any{"targets": []any{map[string]any{"url": upstreamURL}}, "timeout": "5s"},
			"plugins":  map[string]any{"limit-count": map[string]any{"count": 1000, "time_window": 3600, "policy": "redis"}},
		}},
	})
}

// tracedRequest sends the three credentials (the API key in the query) from the local address
// from: 127.0.0.2 is the policy's trusted proxy, 127.0.0.1 any client.
func tracedRequest(t *testing.T, gwURL, from, traceparent string) response {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
	}}
	defer c.CloseIdleConnections()
	h := map[string]string{
		"Authorization":   "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+tracedPassword)),
		"X-Partner-Token": tracedBearer,
		"User-Agent":      "tracing-it/1",
	}
	if traceparent != "" {
		h["Traceparent"] = traceparent
	}
	r, err := fetch(c, "GET", gwURL+"/items/42?apikey="+tracedAPIKey, h)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTracingExportsSpanTree: the binary, with -tracing, exports by OTLP/HTTP one trace per
// request: the server span, authenticate with a span per provider (the IdP's introspection as
// a client span inside the oidc provider's), the rate limit with its Redis command, and the
// upstream client span; the upstream gets the gateway's traceparent; a trusted proxy's trace
// is continued and a client's is not; and no credential byte is in anything exported.
func TestTracingExportsSpanTree(t *testing.T) {
	rdb := redistest.Start(t)
	issuer := newFakeIssuer(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "item 42") })
	recv := &otlpReceiver{}
	endpoint := recv.serveHTTP(t)
	gw := startGatewayArgs(t, tracedPolicy(t, up.URL, issuer.URL, rdb.Addr), []string{"-tracing"},
		"OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_SERVICE_NAME=portcullis-it", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=it")

	const (
		incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		incomingSpan  = "00f067aa0ba902b7"
		incoming      = "00-" + incomingTrace + "-" + incomingSpan + "-01"
	)
	tests := []struct {
		name, from, traceparent string
		continued               bool
	}{
		{name: "no traceparent", from: "127.0.0.1"},
		{name: "a trusted proxy's trace is continued", from: "127.0.0.2", traceparent: incoming, continued: true},
		{name: "a client's trace is not", from: "127.0.0.1", traceparent: incoming},
		{name: "a malformed traceparent", from: "127.0.0.2", traceparent: "00-not-a-trace-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tracedRequest(t, gw.URL, tt.from, tt.traceparent)
			if r.Status != 200 || r.Body != "item 42" {
				t.Fatalf("got %d %q, want 200 from the upstream\nstderr:\n%s", r.Status, r.Body, gw.stderr)
			}
			upTP := up.last().Header.Get("Traceparent")
			parts := strings.Split(upTP, "-")
			if len(parts) != 4 {
				t.Fatalf("upstream traceparent %q", upTP)
			}
			traceID := parts[1]
			if got := traceID == incomingTrace; got != tt.continued {
				t.Errorf("upstream trace %s: continued %v, want %v", traceID, got, tt.continued)
			}

			// The trace's spans, once the batcher has sent them all (server span last).
			var trace []*tracepb.Span
			eventually(t, "the request's spans", func() (bool, string) {
				all, _ := recv.snapshot()
				trace = trace[:0]
				done := false
				for _, s := range all {
					if hex.EncodeToString(s.GetTraceId()) == traceID {
						trace = append(trace, s)
						done = done || s.GetKind() == tracepb.Span_SPAN_KIND_SERVER
					}
				}
				return done, fmt.Sprintf("%d spans of trace %s", len(trace), traceID)
			})
			byName := map[string]*tracepb.Span{}
			for _, s := range trace {
				byName[s.GetName()] = s
			}
			server := byName["GET /items/{id}"]
			if server == nil {
				t.Fatalf("no server span in %v", names(trace))
			}
			wantParent := ""
			if tt.continued {
				wantParent = incomingSpan
			}
			if got := hex.EncodeToString(server.GetParentSpanId()); got != wantParent {
				t.Errorf("server span parent %q, want %q", got, wantParent)
			}
			for k, want := range map[string]string{"http.request.method": "GET", "url.path": "/items/42",
				"http.route": "/items/{id}", "portcullis.consumer": "alice", "portcullis.route": "items",
				"portcullis.decision": "forwarded", "user_agent.original": "tracing-it/1", "client.address": tt.from,
				"network.protocol.version": "1.1", "portcullis.request_id": r.Header.Get("X-Request-Id")} {
				if got := spanAttr(server, k).GetStringValue(); got != want {
					t.Errorf("server span %s = %q, want %q", k, got, want)
				}
			}
			if got := spanAttr(server, "http.response.status_code").GetIntValue(); got != 200 {
				t.Errorf("server span status %d", got)
			}
			child := func(name string, parent *tracepb.Span) *tracepb.Span {
				t.Helper()
				s := byName[name]
				if s == nil {
					t.Fatalf("no span %q in %v", name, names(trace))
				}
				if !bytes.Equal(s.GetParentSpanId(), parent.GetSpanId()) {
					t.Errorf("span %q: parent %x, want %q (%x)", name, s.GetParentSpanId(), parent.GetName(), parent.GetSpanId())
				}
				return s
			}
			auth := child("authenticate", server)
			for _, p := range []string{"keys", "basic"} {
				child("idp "+p, auth)
			}
			oidc := child("idp partner", auth)
			introspect := child("POST", oidc)
			if introspect.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
				t.Errorf("introspection span kind %v", introspect.GetKind())
			}
			limit := child("rate_limit", server)
			redisSpan := byName["redis evalsha"]
			if redisSpan == nil {
				redisSpan = byName["redis eval"]
			}
			if redisSpan == nil || !bytes.Equal(redisSpan.GetParentSpanId(), limit.GetSpanId()) {
				t.Errorf("no redis span under rate_limit in %v", names(trace))
			}
			upstream := child("GET", server)
			if upstream.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || hex.EncodeToString(upstream.GetSpanId()) != parts[2] {
				t.Errorf("upstream span %x (kind %v); the upstream's traceparent names %s", upstream.GetSpanId(), upstream.GetKind(), parts[2])
			}
			// The IdP got a traceparent of the introspection span.
			issuer.mu.Lock()
			idpTP := issuer.traceparent[len(issuer.traceparent)-1]
			issuer.mu.Unlock()
			if want := "00-" + traceID + "-" + hex.EncodeToString(introspect.GetSpanId()) + "-01"; idpTP != want {
				t.Errorf("the IdP got traceparent %q, want %q", idpTP, want)
			}
		})
	}

	if got := recv.resourceAttr("service.name"); got != "portcullis-it" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's", got)
	}
	if got := recv.resourceAttr("deployment.environment.name"); got != "it" {
		t.Errorf("deployment.environment.name %q, want OTEL_RESOURCE_ATTRIBUTES'", got)
	}
	// Not a byte of any credential, raw or encoded as the request carried it, anywhere in what
	// was exported.
	_, raw := recv.snapshot()
	basic := base64.StdEncoding.EncodeToString([]byte("alice:" + tracedPassword))
	clientBasic := base64.StdEncoding.EncodeToString([]byte("gateway:" + tracedClientSecret))
	for _, secret := range []string{tracedAPIKey, tracedPassword, tracedBearer, tracedClientSecret, basic, clientBasic} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the exported spans hold %q", secret)
		}
	}
	// The access log names the trace and the bytes sent.
	if !strings.Contains(gw.stdout.String(), `"trace_id":"`+incomingTrace+`"`) || !strings.Contains(gw.stdout.String(), `"bytes_out":7`) {
		t.Errorf("access log without trace_id or bytes_out:\n%s", gw.stdout)
	}
}

func names(spans []*tracepb.Span) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.GetName()
	}
	return out
}

// TestTracingGRPCFlushedAtExit: OTEL_TRACES_EXPORTER=otlp turns tracing on without the flag,
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports by gRPC, and the spans still buffered when the
// gateway is stopped (the batcher would wait a minute) are sent before it exits.
func TestTracingGRPCFlushedAtExit(t *testing.T) {
	up := newUpstream(t, nil)
	recv := &otlpReceiver{}
	endpoint := recv.serveGRPC(t)
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "alice", "idps": keyAuth("alice")}},
		"routes":    []any{route("r", up.URL, nil)},
	}), "OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=60000")
	for range 3 {
		if r := do(t, "GET", gw.URL+"/r", map[string]string{"apikey": "alice-key"}); r.Status != 200 {
			t.Fatalf("status %d", r.Status)
		}
	}
	if spans, _ := recv.snapshot(); len(spans) != 0 {
		t.Logf("%d spans exported before exit", len(spans)) // allowed, not expected
	}
	gw.stop()
	spans, _ := recv.snapshot()
	servers := 0
	for _, s := range spans {
		if s.GetKind() == tracepb.Span_SPAN_KIND_SERVER {
			servers++
		}
	}
	if servers != 3 {
		t.Errorf("got %d server spans after exit, want 3 (spans: %v)\nstderr:\n%s", servers, names(spans), gw.stderr)
	}
}

// TestTracingOffByDefault: without -tracing or OTEL_TRACES_EXPORTER, an endpoint in the
// environment exports nothing, and the client's traceparent reaches the upstream unchanged.
func TestTracingOffByDefault(t *testing.T) {
	up := newUpstream(t, nil)
	recv := &otlpReceiver{}
	endpoint := recv.serveHTTP(t)
	gw := startGateway(t, policyJSON(t, map[string]any{
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "alice", "idps": keyAuth("alice")}},
		"routes":    []any{route("r", up.URL, nil)},
	}), "OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint, "OTEL_BSP_SCHEDULE_DELAY=10")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if r := do(t, "GET", gw.URL+"/r", map[string]string{"apikey": "alice-key", "Traceparent": tp}); r.Status != 200 {
		t.Fatalf("status %d", r.Status)
	}
	if got := up.last().Header.Get("Traceparent"); got != tp {
		t.Errorf("upstream traceparent %q, want the client's %q", got, tp)
	}
	gw.stop()
	if spans, _ := recv.snapshot(); len(spans) != 0 {
		t.Errorf("tracing off exported %d spans", len(spans))
	}
	if strings.Contains(gw.stdout.String(), "trace_id") {
		t.Errorf("trace_id in the access log with tracing off:\n%s", gw.stdout)
	}
}

// TestTracingBadEnvironment: an exporter or protocol portcullis does not have stops run at
// start with a message naming the variable, rather than serving without the traces asked for.
func TestTracingBadEnvironment(t *testing.T) {
	tests := []struct{ name, env, want string }{
		{"exporter", "OTEL_TRACES_EXPORTER=zipkin", "OTEL_TRACES_EXPORTER"},
		{"protocol", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"},
	}
	policy := policyJSON(t, map[string]any{"routes": []any{}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binary, "run", "-c", writeTemp(t, "p.json", policy))
			cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=otlp", tt.env)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("got %v, output %q; want a failure naming %s", err, out, tt.want)
			}
		})
	}
}
