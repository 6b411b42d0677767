package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/gateway/ratelimit"
)

// tracedGateway is a gateway with tracing on, recording its ended spans, and an upstream that
// keeps the trace headers it received.
type tracedGateway struct {
	gw   *Gateway
	rec  *tracetest.SpanRecorder
	logs *bytes.Buffer

	mu   sync.Mutex
	seen http.Header // the upstream's last request headers
}

func newTracedGateway(t *testing.T, policy string) *tracedGateway {
	t.Helper()
	tg := &tracedGateway{rec: tracetest.NewSpanRecorder(), logs: &bytes.Buffer{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.mu.Lock()
		tg.seen = r.Header.Clone()
		tg.mu.Unlock()
		_, _ = io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(up.Close)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tg.rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	gw, err := New(loadPolicy(t, policy, up.URL), Options{Limiters: reg, Metrics: NewMetrics(), TracerProvider: tp,
		AccessLog: slog.New(slog.NewJSONHandler(tg.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	tg.gw = gw
	return tg
}

func (tg *tracedGateway) upstreamSaw(k string) string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.seen.Get(k)
}

// spans returns the ended spans by name, and resets the recorder.
func (tg *tracedGateway) spans() map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range tg.rec.Ended() {
		out[s.Name()] = s
	}
	tg.rec.Reset()
	return out
}

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

const tracedPolicy = `{
  "trusted_proxies": ["192.0.2.1"],
  "idps": [ { "name": "keys", "type": "key-auth" }, { "name": "basic", "type": "basic-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "secret-api-key" }, { "idp": "basic", "username": "alice", "password": "secret-basic-pw" } ],
    "plugins": { "limit-count": { "count": 100, "time_window": 60 } } } ],
  "routes": [ { "name": "items", "paths": ["/items/{id}"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`

func authedRequest(peer string) *http.Request {
	req := httptest.NewRequest("GET", "/items/7?apikey=secret-api-key", nil)
	req.RemoteAddr = peer
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:secret-basic-pw")))
	req.Header.Set("User-Agent", "tracing-test/1")
	return req
}

// TestTracingSpanTree: one server span per request, with authenticate (a span per provider
// call inside), rate limit and the upstream client span as children, the HTTP semantic
// conventions' attributes, the upstream given the gateway's traceparent, and no credential in
// any span.
func TestTracingSpanTree(t *testing.T) {
	tg := newTracedGateway(t, tracedPolicy)
	rec := httptest.NewRecorder()
	tg.gw.ServeHTTP(rec, authedRequest("198.51.100.7:4000"))
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	spans := tg.spans()
	server, ok := spans["GET /items/{id}"]
	if !ok {
		t.Fatalf("no server span named after the route template; spans: %v", keys(spans))
	}
	if server.SpanKind() != trace.SpanKindServer || server.Parent().IsValid() {
		t.Errorf("server span: kind %v, parent %v; want a server root", server.SpanKind(), server.Parent())
	}
	want := map[attribute.Key]attribute.Value{
		"http.request.method":       attribute.StringValue("GET"),
		"url.path":                  attribute.StringValue("/items/7"),
		"url.scheme":                attribute.StringValue("http"),
		"http.route":                attribute.StringValue("/items/{id}"),
		"http.response.status_code": attribute.IntValue(200),
		"server.address":            attribute.StringValue("example.com"),
		"server.port":               attribute.IntValue(80),
		"network.protocol.version":  attribute.StringValue("1.1"),
		"client.address":            attribute.StringValue("198.51.100.7"),
		"user_agent.original":       attribute.StringValue("tracing-test/1"),
		"http.response.body.size":   attribute.Int64Value(int64(len("hello from upstream"))),
		"portcullis.route":          attribute.StringValue("items"),
		"portcullis.consumer":       attribute.StringValue("alice"),
		"portcullis.decision":       attribute.StringValue("forwarded"),
		"portcullis.step":           attribute.StringValue("proxy"),
		"portcullis.request_id":     attribute.StringValue(rec.Header().Get("X-Request-Id")),
	}
	got := attrsOf(server)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("server span %s: got %v, want %v", k, got[k].String(), v.String())
		}
	}

	childOf := func(name string, parent sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		t.Helper()
		s, ok := spans[name]
		if !ok {
			t.Fatalf("no span %q; spans: %v", name, keys(spans))
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != server.SpanContext().TraceID() {
			t.Errorf("span %q: parent %s, want %q's %s", name, s.Parent().SpanID(), parent.Name(), parent.SpanContext().SpanID())
		}
		return s
	}
	auth := childOf("authenticate", server)
	// One span per provider, from its Extract to its Verify.
	for _, name := range []string{"idp keys", "idp basic"} {
		s := childOf(name, auth)
		if res := attrsOf(s)["portcullis.idp.result"].AsString(); res != "granted" {
			t.Errorf("%s: result %q, want granted", name, res)
		}
	}
	limit := childOf("rate_limit", server)
	if got := attrsOf(limit)["portcullis.rate_limit.result"].AsString(); got != "allowed" {
		t.Errorf("rate_limit result %q, want allowed", got)
	}
	up := childOf("GET", server)
	if up.SpanKind() != trace.SpanKindClient || attrsOf(up)["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("upstream span: kind %v, attributes %v", up.SpanKind(), up.Attributes())
	}
	// The upstream's traceparent names the upstream span, in the server span's trace.
	tp := tg.upstreamSaw("Traceparent")
	wantTP := "00-" + server.SpanContext().TraceID().String() + "-" + up.SpanContext().SpanID().String() + "-01"
	if tp != wantTP {
		t.Errorf("upstream got traceparent %q, want %q", tp, wantTP)
	}

	for _, s := range tg.rec.Ended() {
		t.Fatalf("spans left after reset: %v", s.Name())
	}
	for name, s := range spans {
		b, _ := json.Marshal(s.Attributes())
		for _, secret := range []string{"secret-api-key", "secret-basic-pw", base64.StdEncoding.EncodeToString([]byte("alice:secret-basic-pw"))} {
			if strings.Contains(string(b), secret) || strings.Contains(s.Status().Description, secret) {
				t.Errorf("span %q holds a credential: %s", name, b)
			}
		}
	}

	var line map[string]any
	last := tg.logs.Bytes()[bytes.LastIndexByte(tg.logs.Bytes()[:tg.logs.Len()-1], '\n')+1:]
	if err := json.Unmarshal(last, &line); err != nil {
		t.Fatal(err)
	}
	if line["trace_id"] != server.SpanContext().TraceID().String() {
		t.Errorf("access log trace_id %v, want %s", line["trace_id"], server.SpanContext().TraceID())
	}
	if line["bytes_out"] != float64(len("hello from upstream")) {
		t.Errorf("access log bytes_out %v, want %d", line["bytes_out"], len("hello from upstream"))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTraceparentTrust: a trusted proxy's trace is continued; anyone else's, or a malformed
// one, starts a new trace (linked to a client's well-formed one), and the request is served
// all the same.
func TestTraceparentTrust(t *testing.T) {
	tg := newTracedGateway(t, tracedPolicy)
	const (
		incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		incomingSpan  = "00f067aa0ba902b7"
		incoming      = "00-" + incomingTrace + "-" + incomingSpan + "-01"
	)
	tests := []struct {
		name, peer, traceparent string
		continued, linked       bool
	}{
		{name: "trusted proxy: continued", peer: "192.0.2.1:1", traceparent: incoming, continued: true},
		{name: "client: new trace, linked", peer: "198.51.100.7:1", traceparent: incoming, linked: true},
		{name: "trusted proxy, malformed: new trace", peer: "192.0.2.1:1", traceparent: "00-zz-" + incomingSpan + "-01"},
		{name: "trusted proxy, all-zero trace id: new trace", peer: "192.0.2.1:1", traceparent: "00-00000000000000000000000000000000-" + incomingSpan + "-01"},
		{name: "client, garbage", peer: "198.51.100.7:1", traceparent: strings.Repeat("x", 4000)},
		{name: "none", peer: "198.51.100.7:1"},
	}
	t.Run("trusted proxy, not sampled: no spans, its decision goes upstream", func(t *testing.T) {
		req := authedRequest("192.0.2.1:1")
		req.Header.Set("Traceparent", "00-"+incomingTrace+"-"+incomingSpan+"-00")
		rec := httptest.NewRecorder()
		tg.gw.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
		if spans := tg.spans(); len(spans) != 0 {
			t.Errorf("spans recorded for an unsampled trace: %v", keys(spans))
		}
		if up := tg.upstreamSaw("Traceparent"); !strings.HasPrefix(up, "00-"+incomingTrace+"-") || !strings.HasSuffix(up, "-00") {
			t.Errorf("upstream traceparent %q, want the proxy's trace, unsampled", up)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := authedRequest(tt.peer)
			if tt.traceparent != "" {
				req.Header.Set("Traceparent", tt.traceparent)
				req.Header.Set("Tracestate", "vendor=client-state")
			}
			rec := httptest.NewRecorder()
			tg.gw.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			server := tg.spans()["GET /items/{id}"]
			if server == nil {
				t.Fatal("no server span")
			}
			traceID := server.SpanContext().TraceID().String()
			if got := traceID == incomingTrace; got != tt.continued {
				t.Errorf("trace id %s: continued %v, want %v", traceID, got, tt.continued)
			}
			if tt.continued && server.Parent().SpanID().String() != incomingSpan {
				t.Errorf("parent %s, want the proxy's %s", server.Parent().SpanID(), incomingSpan)
			}
			if got := len(server.Links()) == 1 && server.Links()[0].SpanContext.TraceID().String() == incomingTrace; got != tt.linked {
				t.Errorf("links %v: linked %v, want %v", server.Links(), got, tt.linked)
			}
			if up := tg.upstreamSaw("Traceparent"); !strings.HasPrefix(up, "00-"+traceID+"-") {
				t.Errorf("upstream traceparent %q, want the gateway's trace %s", up, traceID)
			}
			wantState := ""
			if tt.continued {
				wantState = "vendor=client-state"
			}
			if got := tg.upstreamSaw("Tracestate"); got != wantState {
				t.Errorf("upstream tracestate %q, want %q", got, wantState)
			}
		})
	}
}

// TestTracingDenied: a refused request has its server span with the decision and the provider
// that refused, and no upstream span.
func TestTracingDenied(t *testing.T) {
	tg := newTracedGateway(t, tracedPolicy)
	req := httptest.NewRequest("GET", "/items/7", nil)
	req.Header.Set("apikey", "wrong-key-value")
	rec := httptest.NewRecorder()
	tg.gw.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("status %d, want 401", rec.Code)
	}
	spans := tg.spans()
	server := spans["GET /items/{id}"]
	if server == nil {
		t.Fatalf("no server span; spans %v", keys(spans))
	}
	a := attrsOf(server)
	if a["portcullis.decision"].AsString() != "unauthenticated" || a["portcullis.step"].AsString() != "authenticate" {
		t.Errorf("server span decision %q step %q", a["portcullis.decision"].AsString(), a["portcullis.step"].AsString())
	}
	if a["http.response.status_code"].AsInt64() != 401 || a["http.response.body.size"].AsInt64() != int64(rec.Body.Len()) {
		t.Errorf("status %v, body size %v; want 401 and %d", a["http.response.status_code"].String(), a["http.response.body.size"].String(), rec.Body.Len())
	}
	if _, ok := spans["GET"]; ok {
		t.Error("a refused request has an upstream span")
	}
	if _, ok := spans["rate_limit"]; ok {
		t.Error("a refused request has a rate-limit span")
	}
	if got := attrsOf(spans["authenticate"])["portcullis.idp.result"].AsString(); got != "denied" {
		t.Errorf("authenticate result %q, want denied", got)
	}
	// The key is well-formed: the provider found it; the credential index, not the provider,
	// knows it not.
	if a := attrsOf(spans["idp keys"]); a["portcullis.idp.result"].AsString() != "present" {
		t.Errorf("the key's provider span: %v, want present", spans["idp keys"].Attributes())
	}
	if _, ok := spans["idp basic"]; ok {
		t.Error("a span for basic, which the chain never asked: the key's refusal ends it")
	}
	if strings.Contains(tg.logs.String(), "wrong-key-value") {
		t.Errorf("log holds the key")
	}
}

// TestTracingOff: without a tracer provider the gateway leaves the trace headers to the
// client, logs no trace_id, and counts bytes_out all the same.
func TestTracingOff(t *testing.T) {
	var logs bytes.Buffer
	var seen string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("Traceparent")
		_, _ = io.WriteString(w, "12345")
	}))
	t.Cleanup(up.Close)
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	gw, err := New(loadPolicy(t, tracedPolicy, up.URL), Options{Limiters: reg, Metrics: NewMetrics(),
		AccessLog: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	req := authedRequest("198.51.100.7:1")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req.Header.Set("Traceparent", tp)
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, req)
	if rec.Code != 200 || seen != tp {
		t.Fatalf("status %d, upstream traceparent %q; want 200 and the client's", rec.Code, seen)
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if _, ok := line["trace_id"]; ok {
		t.Errorf("trace_id logged with tracing off: %v", line)
	}
	if line["bytes_out"] != float64(5) {
		t.Errorf("bytes_out %v, want 5", line["bytes_out"])
	}
}

// discardExporter drops what it is given: the benchmark measures the request path's share of
// tracing (spans made, ended and queued), not an exporter's.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing is BenchmarkPipelineInProcess/key-auth with tracing off (no tracer
// provider: the allocations must be the same as without this feature), on and sampled (every
// span made and queued for export), and on with nothing sampled.
func BenchmarkTracing(b *testing.B) {
	for _, bc := range []struct {
		name string
		tp   func() *sdktrace.TracerProvider
	}{
		{"off", nil},
		{"on sampled", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		}},
		{"on sampled otlp", func() *sdktrace.TracerProvider {
			// A receiver that reads each export and answers an empty ExportTraceServiceResponse:
			// the spans are encoded and sent as in production.
			sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/x-protobuf")
			}))
			b.Cleanup(sink.Close)
			exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(sink.URL+"/v1/traces"))
			if err != nil {
				b.Fatal(err)
			}
			return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
		}},
		{"on unsampled", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}), sdktrace.WithSampler(sdktrace.NeverSample()))
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1024)) }))
			defer up.Close()
			opts := Options{Limiters: ratelimit.NewRegistry(ratelimit.RegistryOptions{}), Metrics: NewMetrics()}
			defer opts.Limiters.Close()
			if bc.tp != nil {
				tp := bc.tp()
				defer tp.Shutdown(context.Background())
				opts.TracerProvider = tp
			}
			gw, err := New(loadPolicy(b, `{
  "idps": [ { "name": "p", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "p", "key": "ka" } ],
    "plugins": { "limit-count": { "count": 1000000000, "time_window": 60 } } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, up.URL), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer gw.Close()
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("GET", "http://gw/r", nil)
				req.RemoteAddr = "192.0.2.1:1234"
				req.Header.Set("apikey", "ka")
				rec := httptest.NewRecorder()
				gw.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// TestTracingForwardAuth: the proxy asking forward auth is trusted, so its trace is continued;
// the server span describes the original request; the answer carries no traceparent (the
// proxy propagates its own trace to its upstream).
func TestTracingForwardAuth(t *testing.T) {
	tg := newTracedGateway(t, strings.Replace(forwardAuthPolicy, `"count": 2`, `"count": 1000`, 1))
	const incomingTrace, incomingSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	rec := askForwardAuth(tg.gw, "GET", "/.portcullis/auth", "", map[string]string{
		"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/pets/1?apikey=fb-key", "X-Forwarded-Host": "gw.example",
		"apikey": "fb-key", "Traceparent": "00-" + incomingTrace + "-" + incomingSpan + "-01"})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if tp := rec.Header().Get("Traceparent"); tp != "" {
		t.Errorf("the answer carries traceparent %q", tp)
	}
	spans := tg.spans()
	server := spans["GET /pets/{rest:.*}"]
	if server == nil {
		t.Fatalf("no server span; spans %v", keys(spans))
	}
	if server.SpanContext().TraceID().String() != incomingTrace || server.Parent().SpanID().String() != incomingSpan {
		t.Errorf("server span %s parent %s, want a child of the proxy's %s/%s", server.SpanContext().TraceID(), server.Parent().SpanID(), incomingTrace, incomingSpan)
	}
	a := attrsOf(server)
	if a["url.path"].AsString() != "/pets/1" || a["server.address"].AsString() != "gw.example" ||
		a["portcullis.forward_auth.convention"].AsString() == "" || a["portcullis.consumer"].AsString() != "FetchBot" {
		t.Errorf("server span attributes %v", server.Attributes())
	}
	if _, ok := spans["authenticate"]; !ok {
		t.Errorf("no authenticate span; spans %v", keys(spans))
	}
	for name, s := range spans {
		b, _ := json.Marshal(s.Attributes())
		if strings.Contains(string(b), "fb-key") {
			t.Errorf("span %q holds the key: %s", name, b)
		}
	}
}
