package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// shadowPolicy is a policy whose route r admits the consumers allowed (a JSON list), with
// alice's limit-count aliceLimit (a plugins object, or "{}") and the idps given.
func shadowPolicy(idps, allowed, aliceLimit string) string {
	return `{
  "idps": [ ` + idps + ` ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "keys", "key": "alice-key" } ], "plugins": ` + aliceLimit + ` },
    { "username": "bob", "idps": [ { "idp": "keys", "key": "bob-key" } ] }
  ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] },
    "consumers": { "allow": ` + allowed + ` } } ]
}`
}

const shadowKeys = `{ "name": "keys", "type": "key-auth", "hide_credentials": true }`

// syncBuffer is a log destination the shadow's workers and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shadowed is a served gateway with a shadow deciding candidate, its workers not started.
type shadowed struct {
	gw  *Gateway
	sh  *Shadow
	log *syncBuffer
}

func newShadowed(t *testing.T, served, candidate string, queue int) *shadowed {
	t.Helper()
	gw, up := newTestGateway(t, served, nil)
	log := &syncBuffer{}
	sh := newShadow(ShadowOptions{
		Logger:  slog.New(slog.NewJSONHandler(log, nil)),
		Metrics: gw.metrics,
		Load:    func() (*policies.Snapshot, error) { return loadPolicy(t, candidate, up.URL), nil },
		Queue:   queue,
	})
	t.Cleanup(func() { sh.Close() })
	gw.SetShadow(sh)
	return &shadowed{gw: gw, sh: sh, log: log}
}

// decisions starts one worker, waits for it to decide what is queued (Close) and returns the
// counts.
func (s *shadowed) decisions() map[string]uint64 {
	s.sh.startWorkers(1)
	s.sh.Close()
	return s.sh.Status().Decisions
}

func counts(kv ...any) map[string]uint64 {
	m := map[string]uint64{shadowSame: 0, shadowDifferent: 0, shadowNotComparable: 0, shadowDropped: 0}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = uint64(kv[i+1].(int))
	}
	return m
}

func TestShadowCompares(t *testing.T) {
	served := shadowPolicy(shadowKeys, `["alice", "bob"]`, "{}")
	candidate := shadowPolicy(shadowKeys, `["alice"]`, "{}") // bob is no longer allowed
	tests := []struct {
		name       string
		method     string
		path       string
		key        string
		wantStatus int    // the client's answer: always the served policy's
		want       string // the result counted
	}{
		// hide_credentials removes the key from the served request: the copy was taken before.
		{name: "allowed by both", method: "GET", path: "/r", key: "alice-key", wantStatus: 200, want: shadowSame},
		{name: "no key", method: "GET", path: "/r", wantStatus: 401, want: shadowSame},
		{name: "wrong key", method: "GET", path: "/r", key: "nope", wantStatus: 401, want: shadowSame},
		{name: "no route", method: "GET", path: "/elsewhere", key: "alice-key", wantStatus: 404, want: shadowSame},
		{name: "unnormalised path", method: "GET", path: "/x/../r", key: "alice-key", wantStatus: 200, want: shadowSame},
		{name: "denied by the candidate", method: "GET", path: "/r", key: "bob-key", wantStatus: 200, want: shadowDifferent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShadowed(t, served, candidate, 0)
			h := map[string]string{}
			if tt.key != "" {
				h["apikey"] = tt.key
			}
			rec := serve(s.gw, tt.method, tt.path, h)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: got %d %s, want %d (the served policy's answer)", rec.Code, rec.Body, tt.wantStatus)
			}
			if got, want := s.decisions(), counts(tt.want, 1); !maps.Equal(got, want) {
				t.Errorf("decisions: got %v, want %v", got, want)
			}
			logged := strings.Count(s.log.String(), `"msg":"shadow_difference"`)
			if got, want := logged, map[bool]int{true: 1}[tt.want == shadowDifferent]; got != want {
				t.Errorf("shadow_difference lines: got %d, want %d\n%s", got, want, s.log)
			}
			if strings.Contains(s.log.String(), "-key") {
				t.Errorf("the log shows a credential:\n%s", s.log)
			}
		})
	}
}

func TestShadowDifferenceLogged(t *testing.T) {
	s := newShadowed(t, shadowPolicy(shadowKeys, `["alice", "bob"]`, "{}"), shadowPolicy(shadowKeys, `["alice"]`, "{}"), 0)
	serve(s.gw, "GET", "/r?apikey=bob-key", nil)
	s.decisions()
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(findLine(s.log.String(), "shadow_difference"))), &line); err != nil {
		t.Fatalf("no shadow_difference line: %v\n%s", err, s.log)
	}
	want := map[string]any{
		"path": "/r", "method": "GET",
		"served_route": "r", "served_consumer": "bob", "served_status": 200.0, "served_step": "proxy",
		"candidate_route": "r", "candidate_consumer": "bob", "candidate_status": 403.0, "candidate_step": "authorize",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s: got %v, want %v", k, line[k], v)
		}
	}
	if strings.Contains(s.log.String(), "bob-key") {
		t.Errorf("the log shows the key (query string):\n%s", s.log)
	}
	if id, _ := line["request_id"].(string); id == "" {
		t.Errorf("request_id: got %v, want the served request's X-Request-Id", line["request_id"])
	}
}

func findLine(log, msg string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"msg":"`+msg+`"`) {
			return l
		}
	}
	return ""
}

func TestShadowBodyNotComparable(t *testing.T) {
	hmac := shadowKeys + `, { "name": "h", "type": "hmac-auth", "validate_request_body": true }`
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "a body the hmac provider verifies", body: "{}", want: shadowNotComparable},
		{name: "no body", want: shadowSame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShadowed(t, shadowPolicy(hmac, `["alice"]`, "{}"), shadowPolicy(hmac, `["alice"]`, "{}"), 0)
			req := httptest.NewRequest("POST", "/r", strings.NewReader(tt.body))
			req.Header.Set("apikey", "alice-key")
			rec := httptest.NewRecorder()
			s.gw.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status: got %d %s, want 200", rec.Code, rec.Body)
			}
			if got, want := s.decisions(), counts(tt.want, 1); !maps.Equal(got, want) {
				t.Errorf("decisions: got %v, want %v", got, want)
			}
		})
	}
}

func TestShadowTokensNotComparable(t *testing.T) {
	// An issuer nobody answers: the candidate must not ask it.
	oidc := shadowKeys + `, { "name": "corp", "type": "oidc", "issuer": "http://127.0.0.1:1/realm" }`
	tests := []struct {
		name, served, candidate string
		header                  map[string]string
		want                    string
	}{
		{name: "bearer token, oidc only in the candidate", served: shadowKeys, candidate: oidc,
			header: map[string]string{"Authorization": "Bearer x.y.z", "apikey": "alice-key"}, want: shadowNotComparable},
		{name: "no token, oidc only in the candidate", served: shadowKeys, candidate: oidc,
			header: map[string]string{"apikey": "alice-key"}, want: shadowSame},
		{name: "bearer token, no oidc", served: shadowKeys, candidate: shadowKeys,
			header: map[string]string{"Authorization": "Bearer x.y.z", "apikey": "alice-key"}, want: shadowSame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShadowed(t, shadowPolicy(tt.served, `["alice"]`, "{}"), shadowPolicy(tt.candidate, `["alice"]`, "{}"), 0)
			serve(s.gw, "GET", "/r", tt.header)
			if got, want := s.decisions(), counts(tt.want, 1); !maps.Equal(got, want) {
				t.Errorf("decisions: got %v, want %v\n%s", got, want, s.log)
			}
		})
	}
}

func TestShadowQueueFullDrops(t *testing.T) {
	p := shadowPolicy(shadowKeys, `["alice"]`, "{}")
	s := newShadowed(t, p, p, 1) // no worker yet: the second and third requests find the queue full
	for range 3 {
		if rec := serve(s.gw, "GET", "/r", map[string]string{"apikey": "alice-key"}); rec.Code != 200 {
			t.Fatalf("status: got %d, want 200", rec.Code)
		}
	}
	if got, want := s.decisions(), counts(shadowSame, 1, shadowDropped, 2); !maps.Equal(got, want) {
		t.Errorf("decisions: got %v, want %v", got, want)
	}
	if got, want := counterValue(t, s.gw.metrics.shadow.WithLabelValues(shadowDropped)), 2.0; got != want {
		t.Errorf(`portcullis_shadow_decisions_total{result="dropped"}: got %v, want %v`, got, want)
	}
}

func TestShadowConsumesNoLimit(t *testing.T) {
	one := `{ "limit-count": { "count": 1, "time_window": 60 } }`
	two := `{ "limit-count": { "count": 2, "time_window": 60 } }`
	tests := []struct {
		name, served, candidate string
		wantStatus              []int
		want                    map[string]uint64
	}{
		{name: "candidate limited to 1, served unlimited", served: "{}", candidate: one,
			wantStatus: []int{200, 200, 200, 200}, want: counts(shadowSame, 4)},
		// The candidate would have refused the second request: limits are not compared. The
		// served refusal by its limit cannot be compared either.
		{name: "both limited", served: two, candidate: one,
			wantStatus: []int{200, 200, 429}, want: counts(shadowSame, 2, shadowNotComparable, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShadowed(t, shadowPolicy(shadowKeys, `["alice"]`, tt.served), shadowPolicy(shadowKeys, `["alice"]`, tt.candidate), 0)
			s.sh.startWorkers(1) // deciding as the requests come: a consumed limit would show
			for i, want := range tt.wantStatus {
				if rec := serve(s.gw, "GET", "/r", map[string]string{"apikey": "alice-key"}); rec.Code != want {
					t.Fatalf("request %d: got %d, want %d (the served policy's)", i+1, rec.Code, want)
				}
			}
			if got := s.decisions(); !maps.Equal(got, tt.want) {
				t.Errorf("decisions: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestShadowReload(t *testing.T) {
	gw, up := newTestGateway(t, shadowPolicy(shadowKeys, `["alice", "bob"]`, "{}"), nil)
	candidate := shadowPolicy(shadowKeys, `["alice"]`, "{}")
	var fail bool
	sh := NewShadow(ShadowOptions{Metrics: gw.metrics, Load: func() (*policies.Snapshot, error) {
		if fail {
			return nil, errors.New("broken candidate")
		}
		return loadPolicy(t, candidate, up.URL), nil
	}})
	defer sh.Close()
	gw.SetShadow(sh)
	v1 := sh.Status().Version
	if v1 == "" || v1 == gw.Snapshot().Version {
		t.Fatalf("candidate version %q: want the candidate's (served %q)", v1, gw.Snapshot().Version)
	}

	fail = true
	if err := sh.Reload(); err == nil {
		t.Fatal("reloading a broken candidate: got no error")
	}
	if st := sh.Status(); st.Version != v1 || st.LastReloadError == "" {
		t.Errorf("after a failed reload: got version %q error %q, want %q kept and the error", st.Version, st.LastReloadError, v1)
	}
	if rec := serve(gw, "GET", "/r", map[string]string{"apikey": "bob-key"}); rec.Code != 200 {
		t.Errorf("serving after a failed shadow reload: got %d, want 200", rec.Code)
	}

	fail, candidate = false, shadowPolicy(shadowKeys, `["alice", "bob"]`, "{}")
	if err := sh.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if st := sh.Status(); st.Version == v1 || st.LastReloadError != "" {
		t.Errorf("after a reload: got version %q error %q, want a new version and no error", st.Version, st.LastReloadError)
	}
}

func TestShadowMetricsStartAtZero(t *testing.T) {
	p := shadowPolicy(shadowKeys, `["alice"]`, "{}")
	s := newShadowed(t, p, p, 0)
	for _, r := range shadowResults {
		if got := counterValue(t, s.gw.metrics.shadow.WithLabelValues(r)); got != 0 {
			t.Errorf("%s: got %v, want 0", r, got)
		}
	}
	mfs, err := s.gw.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "portcullis_shadow_decisions_total" {
			n = len(mf.GetMetric())
		}
	}
	if n != len(shadowResults) {
		t.Errorf("portcullis_shadow_decisions_total series: got %d, want %d", n, len(shadowResults))
	}
}

// BenchmarkRequestPathShadow is BenchmarkRequestPath with a shadow deciding the same policy:
// the difference is what -shadow costs the request path (the copy, the queue) and the machine
// (the candidate's decisions, on the same CPUs).
func BenchmarkRequestPathShadow(b *testing.B) {
	policy := `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ],
    "plugins": { "limit-count": { "count": 1000000000, "time_window": 60 } } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`
	gw, up := newTestGateway(b, policy, func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1024)) })
	sh := NewShadow(ShadowOptions{Metrics: gw.metrics, Load: func() (*policies.Snapshot, error) { return loadPolicy(b, policy, up.URL), nil }})
	defer sh.Close()
	gw.SetShadow(sh)
	benchmarkOverHTTP(b, gw)
	st := sh.Status().Decisions
	b.ReportMetric(float64(st[shadowDropped])/float64(b.N), "dropped/op")
}

func TestServerShadow(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	served := shadowPolicy(shadowKeys, `["alice", "bob"]`, "{}")
	candidate := shadowPolicy(shadowKeys, `["alice"]`, "{}")
	load := func(p *string) Loader {
		return func() (*policies.Snapshot, error) { return loadPolicy(t, *p, up.URL), nil }
	}
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	defer reg.Close()
	metrics := NewMetrics()

	t.Run("without a shadow, /status has none", func(t *testing.T) {
		srv, err := NewServer(ServerOptions{Limiters: reg, Load: load(&served)})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if st := srv.Status(); st.Shadow != nil {
			t.Errorf("Status().Shadow: got %+v, want nil", st.Shadow)
		}
		b, _ := json.Marshal(srv.Status())
		if strings.Contains(string(b), "shadow") {
			t.Errorf("/status: got %s, want no shadow", b)
		}
	})

	sh := NewShadow(ShadowOptions{Metrics: metrics, Load: load(&candidate)})
	srv, err := NewServer(ServerOptions{Limiters: reg, Metrics: metrics, Load: load(&served), Shadow: sh})
	if err != nil {
		t.Fatal(err)
	}
	v1 := srv.Status().Shadow.Version
	candidate = shadowPolicy(shadowKeys, `["bob"]`, "{}") // alice is no longer allowed
	if err := srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := srv.Status().Shadow.Version; got == v1 {
		t.Errorf("the server's reload kept the candidate %q", got)
	}
	for _, key := range []string{"alice-key", "bob-key"} {
		if rec := serve(srv.Gateway(), "GET", "/r", map[string]string{"apikey": key}); rec.Code != 200 {
			t.Fatalf("%s: got %d, want 200", key, rec.Code)
		}
	}
	// Close waits for the workers: the counts are final afterwards.
	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	st := srv.Status().Shadow
	if got, want := st.Decisions, counts(shadowSame, 1, shadowDifferent, 1); !maps.Equal(got, want) {
		t.Errorf("decisions: got %v, want %v", got, want)
	}
	if rec := serve(srv.Gateway(), "GET", "/r", map[string]string{"apikey": "bob-key"}); rec.Code != 200 {
		t.Errorf("after Close: got %d, want 200 and no shadow", rec.Code)
	}
	if got := srv.Status().Shadow.Decisions; !maps.Equal(got, st.Decisions) {
		t.Errorf("after Close the shadow still counts: got %v, want %v", got, st.Decisions)
	}
}
