package gateway

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// newTestGateway loads policy (a format string whose %s is the upstream URL) through the real
// policy loader and returns the gateway and the upstream.
func newTestGateway(t testing.TB, policy string, upstream http.HandlerFunc) (*Gateway, *httptest.Server) {
	t.Helper()
	if upstream == nil {
		upstream = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Seen-Consumer", r.Header.Get("X-Consumer-Username"))
			w.Header().Set("X-Seen-Groups", r.Header.Get("X-Consumer-Groups"))
			io.WriteString(w, "ok")
		}
	}
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	return newTestGatewayAt(t, policy, up.URL), up
}

// newTestGatewayAt is newTestGateway with an upstream of the test's own at upstreamURL.
func newTestGatewayAt(t testing.TB, policy, upstreamURL string) *Gateway {
	t.Helper()
	snap := loadPolicy(t, policy, upstreamURL)
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	gw, err := New(snap, Options{Limiters: reg, Metrics: NewMetrics()})
	if err != nil {
		t.Fatalf("building gateway: %v", err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw
}

// loadPolicy loads policy (a format string whose %s is the upstream URL) through the real
// policy loader.
func loadPolicy(t testing.TB, policy, upstreamURL string) *policies.Snapshot {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(policy, upstreamURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := policies.Load(path, policies.Options{})
	if err != nil {
		t.Fatalf("loading policy: %v", err)
	}
	return snap
}

// swapPolicy reloads gw with policy, as a file change would.
func swapPolicy(t testing.TB, gw *Gateway, policy, upstreamURL string) {
	t.Helper()
	if err := gw.Swap(loadPolicy(t, policy, upstreamURL)); err != nil {
		t.Fatalf("swap: %v", err)
	}
}

const pipelinePolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "bots", "plugins": { "limit-count": { "count": 3, "time_window": 60 } } } ],
  "consumers": [
    { "username": "bot1", "group": "bots", "idps": [ { "idp": "keys", "key": "k1" } ] },
    { "username": "bot2", "group": "bots", "idps": [ { "idp": "keys", "key": "k2" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60, "rejected_code": 503, "rejected_msg": "slow down" } } },
    { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] },
    { "username": "eve", "idps": [ { "idp": "keys", "key": "ke" } ] }
  ],
  "routes": [
    { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumers": { "deny": ["eve"] },
      "plugins": { "limit-count": { "count": 100, "time_window": 60 } } },
    { "name": "team", "paths": ["/team"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumer_groups": { "allow": ["bots"] } },
    { "name": "limited", "paths": ["/limited"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } }
  ]
}`

func serve(gw *Gateway, method, path string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, req)
	return rec
}

func message(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var m struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q is not a JSON message: %v", rec.Body.String(), err)
	}
	return m.Message
}

func TestPipeline(t *testing.T) {
	gw, _ := newTestGateway(t, pipelinePolicy, nil)

	tests := []struct {
		name    string
		method  string
		path    string
		key     string
		status  int
		message string
	}{
		{"no route", "GET", "/nope", "ka", 404, "404 Route Not Found"},
		{"no key", "GET", "/r", "", 401, "Missing API key in request"},
		{"bad key", "GET", "/r", "nope", 401, "Invalid API key in request"},
		{"denied consumer", "GET", "/r", "ke", 403, "The consumer_name is forbidden."},
		{"consumer outside the allowed group", "GET", "/team", "ka", 403, "The consumer_group_id is forbidden."},
		{"allowed", "GET", "/r", "ka", 200, ""},
		{"group member allowed", "GET", "/team", "k1", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.key != "" {
				h["apikey"] = tt.key
			}
			rec := serve(gw, tt.method, tt.path, h)
			if rec.Code != tt.status {
				t.Fatalf("status: got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			if tt.message != "" {
				if got := message(t, rec); got != tt.message {
					t.Errorf("message: got %q, want %q", got, tt.message)
				}
				if got := rec.Header().Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type: got %q", got)
				}
			}
		})
	}
}

func TestIdentityHeaders(t *testing.T) {
	gw, _ := newTestGateway(t, pipelinePolicy, nil)
	rec := serve(gw, "GET", "/team", map[string]string{"apikey": "k1", "X-Consumer-Username": "root", "X-Consumer-Groups": "admins"})
	if rec.Code != 200 {
		t.Fatalf("status: got %d %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("X-Seen-Consumer"); got != "bot1" {
		t.Errorf("upstream X-Consumer-Username: got %q, want bot1", got)
	}
	if got := rec.Header().Get("X-Seen-Groups"); got != "bots" {
		t.Errorf("upstream X-Consumer-Groups: got %q, want bots", got)
	}
}

// TestLimitOrder checks that authentication runs before limits (a rejected request consumes
// nothing), that the consumer's, the group's and the route's limits all apply, and that a group
// limit is shared by its members.
func TestLimitOrder(t *testing.T) {
	gw, _ := newTestGateway(t, pipelinePolicy, nil)

	for range 5 {
		if rec := serve(gw, "GET", "/limited", map[string]string{"apikey": "wrong"}); rec.Code != 401 {
			t.Fatalf("bad key: got %d", rec.Code)
		}
	}
	if rec := serve(gw, "GET", "/limited", map[string]string{"apikey": "ka"}); rec.Code != 200 {
		t.Fatalf("first authenticated request: got %d, want 200 (unauthenticated requests must not count)", rec.Code)
	}
	if rec := serve(gw, "GET", "/limited", map[string]string{"apikey": "ka"}); rec.Code != 429 {
		t.Fatalf("second request: got %d, want 429 from the route limit", rec.Code)
	}

	// bot2's own limit (1, rejected_code 503) rejects its second request with its message.
	if rec := serve(gw, "GET", "/r", map[string]string{"apikey": "k2"}); rec.Code != 200 {
		t.Fatalf("bot2 first: got %d", rec.Code)
	}
	rec := serve(gw, "GET", "/r", map[string]string{"apikey": "k2"})
	if got, want := rec.Body.String(), "{\"error_msg\":\"slow down\"}\n"; rec.Code != 503 || got != want {
		t.Fatalf("bot2 second: got %d %s, want 503 %s (rejected_msg in APISIX's error_msg field)", rec.Code, got, want)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Errorf("a rejection carries Retry-After")
	}

	// The group "bots" allows 3 requests shared by bot1 and bot2: bot2 used 1 (its second was
	// rejected by its own limit before reaching the group's), so bot1 gets 2 more.
	for i, want := range []int{200, 200, 429} {
		rec := serve(gw, "GET", "/r", map[string]string{"apikey": "k1"})
		if rec.Code != want {
			t.Fatalf("bot1 request %d: got %d, want %d", i+1, rec.Code, want)
		}
		if got := rec.Header().Get("X-RateLimit-Limit"); got == "" {
			t.Errorf("bot1 request %d: no X-RateLimit-Limit", i+1)
		}
	}
}

func TestSwapKeepsCountersOfUnchangedLimits(t *testing.T) {
	gw, up := newTestGateway(t, pipelinePolicy, nil)
	if rec := serve(gw, "GET", "/limited", map[string]string{"apikey": "ka"}); rec.Code != 200 {
		t.Fatalf("got %d", rec.Code)
	}
	swapPolicy(t, gw, pipelinePolicy, up.URL)
	if rec := serve(gw, "GET", "/limited", map[string]string{"apikey": "ka"}); rec.Code != 429 {
		t.Fatalf("after reload: got %d, want 429 (the counter survives an unchanged limit)", rec.Code)
	}
}

func TestUpstreamErrorsAreJSON(t *testing.T) {
	gw, up := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, nil)
	up.Close() // refuse connections
	rec := serve(gw, "GET", "/r", map[string]string{"apikey": "ka"})
	if rec.Code != 502 {
		t.Fatalf("got %d, want 502", rec.Code)
	}
	if got := message(t, rec); got != "upstream unavailable" {
		t.Errorf("message: got %q", got)
	}
}

// BenchmarkRequestPath measures the whole pipeline: key-auth, a consumer limit-count and the
// proxy to an upstream over loopback.
func BenchmarkRequestPath(b *testing.B) {
	gw, _ := newTestGateway(b, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ],
    "plugins": { "limit-count": { "count": 1000000000, "time_window": 60 } } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1024)) })
	benchmarkOverHTTP(b, gw)
}

// benchmarkOverHTTP sends GET /r with the API key "ka" to gw over loopback HTTP, in parallel,
// and fails on any answer but 200. The timer is stopped when it returns.
func benchmarkOverHTTP(b *testing.B, gw http.Handler) {
	front := httptest.NewServer(gw)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", front.URL+"/r", nil)
			req.Header.Set("apikey", "ka")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.StopTimer()
}

// BenchmarkPipelineInProcess measures the gateway's own work (match, authenticate, limit,
// proxy) with the client side in process, so allocations are the gateway's and the upstream's.
// One sub-benchmark per provider of the load benchmark, each with the same consumer limit-count,
// so that a provider's share of the request path shows as the difference to key-auth.
func BenchmarkPipelineInProcess(b *testing.B) {
	rsKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsKey.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	rsPEM, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(alg jwa.SignatureAlgorithm, key any, sub string) string {
		payload, _ := json.Marshal(map[string]any{"key": sub, "exp": exp})
		tok, err := jws.Sign(payload, jws.WithKey(alg, key))
		if err != nil {
			b.Fatal(err)
		}
		return string(tok)
	}
	tests := []struct {
		name, idp, binding, header, value string
	}{
		{"key-auth", `{ "name": "p", "type": "key-auth" }`, `{ "idp": "p", "key": "ka" }`, "apikey", "ka"},
		{"basic-auth", `{ "name": "p", "type": "basic-auth" }`, `{ "idp": "p", "username": "alice", "password": "pw" }`,
			"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))},
		{"jwt-auth HS256", `{ "name": "p", "type": "jwt-auth" }`, `{ "idp": "p", "key": "hs", "secret": "s3cret", "algorithm": "HS256" }`,
			"Authorization", "Bearer " + sign(jwa.HS256, []byte("s3cret"), "hs")},
		{"jwt-auth RS256", `{ "name": "p", "type": "jwt-auth" }`, `{ "idp": "p", "key": "rs", "algorithm": "RS256", "public_key": ` + string(rsPEM) + ` }`,
			"Authorization", "Bearer " + sign(jwa.RS256, rsKey, "rs")},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			gw, _ := newTestGateway(b, `{
  "idps": [ `+tt.idp+` ],
  "consumers": [ { "username": "alice", "idps": [ `+tt.binding+` ],
    "plugins": { "limit-count": { "count": 1000000000, "time_window": 60 } } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1024)) })
			b.ReportAllocs()
			for b.Loop() {
				// http.NewRequest rather than httptest.NewRequest, which parses a request and
				// would dominate the allocations measured.
				req, _ := http.NewRequest("GET", "http://gw/r", nil)
				req.RemoteAddr = "192.0.2.1:1234"
				req.Header.Set(tt.header, tt.value)
				rec := httptest.NewRecorder()
				gw.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

func TestRoutingByHostAndMethod(t *testing.T) {
	gw, _ := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [
    { "name": "api", "hosts": ["api.example.com", "api.example.org"], "paths": ["/v1/{rest:.*}"], "methods": ["GET"],
      "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "any", "paths": ["/pets/{id:[0-9]+}"], "upstream": { "targets": [ { "url": "%[1]s" } ] } }
  ]
}`, nil)
	tests := []struct {
		name   string
		method string
		host   string
		path   string
		status int
	}{
		{"first host", "GET", "api.example.com", "/v1/x", 200},
		{"second host", "GET", "api.example.org", "/v1/x", 200},
		{"host with port", "GET", "api.example.com:8080", "/v1/x", 200},
		{"other host", "GET", "evil.example.com", "/v1/x", 404},
		{"method not routed", "POST", "api.example.com", "/v1/x", 404},
		{"path variable pattern", "DELETE", "any.host", "/pets/12", 200},
		{"path variable mismatch", "GET", "any.host", "/pets/rex", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://"+tt.host+tt.path, nil)
			req.Header.Set("apikey", "ka")
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("got %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
		})
	}
}

// TestInFlightRequestsFinishOnTheirSnapshot swaps in a policy without the caller while its
// request waits in the upstream: the request finishes as that caller, and the next one is
// judged by the new policy.
func TestInFlightRequestsFinishOnTheirSnapshot(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	policy := `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "%[2]s", "idps": [ { "idp": "keys", "key": "k" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] } } ]
}`
	gw, up := newTestGateway(t, strings.ReplaceAll(policy, "%[2]s", "before"), func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Consumer-Username") == "before" {
			close(arrived)
			<-release
		}
		io.WriteString(w, r.Header.Get("X-Consumer-Username"))
	})
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- serve(gw, "GET", "/r", map[string]string{"apikey": "k"}) }()
	<-arrived

	swapPolicy(t, gw, strings.ReplaceAll(policy, "%[2]s", "after"), up.URL)
	if rec := serve(gw, "GET", "/r", map[string]string{"apikey": "k"}); rec.Body.String() != "after" {
		t.Errorf("a new request: got %q, want it served as the new policy's consumer", rec.Body)
	}
	close(release)
	if rec := <-done; rec.Code != 200 || rec.Body.String() != "before" {
		t.Errorf("the in-flight request: got %d %q, want 200 as the old policy's consumer", rec.Code, rec.Body)
	}
}

func TestForbiddenIsCountedAsForbidden(t *testing.T) {
	gw, _ := newTestGateway(t, pipelinePolicy, nil)
	tests := []struct {
		name               string
		path, key          string
		granted, forbidden float64
	}{
		{"denied consumer", "/r", "ke", 0, 1},
		{"outside the allowed group", "/team", "ka", 0, 2},
		{"allowed", "/r", "ka", 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serve(gw, "GET", tt.path, map[string]string{"apikey": tt.key})
			for label, want := range map[string]float64{"granted": tt.granted, "forbidden": tt.forbidden} {
				var m dto.Metric
				if err := gw.metrics.authDecisions.WithLabelValues(label).Write(&m); err != nil {
					t.Fatal(err)
				}
				if got := m.GetCounter().GetValue(); got != want {
					t.Errorf("portcullis_auth_decisions_total{decision=%q}: got %v, want %v", label, got, want)
				}
			}
		})
	}
}

func TestForbiddenReasonIsJustTheCause(t *testing.T) {
	rt := &route{name: "r", denyConsumers: map[string]bool{"eve": true}}
	he := asHTTPError(rt.authorize("eve", ""))
	x := &exchange{}
	gw, _ := newTestGateway(t, pipelinePolicy, nil)
	gw.writeError(httptest.NewRecorder(), httptest.NewRequest("GET", "/r", nil), he, x)
	if got, want := x.err.Error(), "consumer eve is denied on route r"; got != want {
		t.Errorf("logged reason: got %q, want %q", got, want)
	}
}

func TestBuildInfoMetric(t *testing.T) {
	m := NewMetrics()
	m.BuildInfo("v9.9.9")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "portcullis_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "v9.9.9" || labels["goversion"] == "" {
			t.Errorf("portcullis_build_info labels: got %v, want version v9.9.9 and a goversion", labels)
		}
		return
	}
	t.Errorf("portcullis_build_info: got no series, want one")
}

// TestRequestDurationAndZeroSeries: every request is observed by route and status class; the
// series a dashboard reads exist before anything happened.
func TestRequestDurationAndZeroSeries(t *testing.T) {
	gw, _ := newTestGateway(t, pipelinePolicy, nil)
	families := func() map[string]*dto.MetricFamily {
		mfs, err := gw.metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*dto.MetricFamily{}
		for _, mf := range mfs {
			out[mf.GetName()] = mf
		}
		return out
	}
	before := families()
	for _, name := range []string{"portcullis_policy_reloads_total", "portcullis_requests_in_flight", "portcullis_policy_last_reload_success_timestamp_seconds"} {
		if before[name] == nil {
			t.Errorf("%s: no series before any request, want it at its initial value", name)
		}
	}
	if got := len(before["portcullis_policy_reloads_total"].GetMetric()); got != 2 {
		t.Errorf("portcullis_policy_reloads_total: got %d series, want success and failure at 0", got)
	}
	serve(gw, "GET", "/r", map[string]string{"apikey": "ka"})
	serve(gw, "GET", "/r", nil)
	counts := map[string]uint64{}
	for _, m := range families()["portcullis_request_duration_seconds"].GetMetric() {
		var route, code string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "route":
				route = l.GetValue()
			case "code":
				code = l.GetValue()
			}
		}
		counts[route+" "+code] = m.GetHistogram().GetSampleCount()
	}
	if counts["r 2xx"] != 1 || counts["r 4xx"] != 1 {
		t.Errorf("portcullis_request_duration_seconds counts: got %v, want one 2xx and one 4xx on route r", counts)
	}
	var inFlight dto.Metric
	if err := gw.metrics.inFlight.Write(&inFlight); err != nil || inFlight.GetGauge().GetValue() != 0 {
		t.Errorf("portcullis_requests_in_flight after the requests: got %v (%v), want 0", inFlight.GetGauge().GetValue(), err)
	}
}
