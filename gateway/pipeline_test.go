package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// decidePolicy has a request refused at every step of the pipeline, and allowed ones.
const decidePolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "bots", "plugins": { "limit-count": { "count": 1, "time_window": 60 } } } ],
  "consumers": [
    { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] },
    { "username": "eve", "idps": [ { "idp": "keys", "key": "ke" } ] },
    { "username": "bot", "group": "bots", "idps": [ { "idp": "keys", "key": "kb" } ] },
    { "username": "guest", "idps": [ { "idp": "keys", "key": "kg" } ] }
  ],
  "routes": [
    { "name": "r", "paths": ["/r", "/r/{rest:.*}"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumers": { "deny": ["eve"] },
      "plugins": { "limit-count": { "count": 100, "time_window": 60 } } },
    { "name": "team", "paths": ["/team"], "upstream": { "targets": [ { "url": "%[1]s" } ] },
      "consumer_groups": { "allow": ["bots"] } },
    { "name": "open", "paths": ["/open"], "anonymous_consumer": "guest",
      "upstream": { "targets": [ { "url": "%[1]s" } ] } }
  ]
}`

// explainedStep is the step a trace says decided: the last one that failed, a step of the
// chain counting as authenticate's, or proxy when none failed.
func explainedStep(e *Explanation) Step {
	for i := len(e.Steps) - 1; i >= 0; i-- {
		if s := e.Steps[i]; !s.OK {
			switch s.Phase {
			case "credential", "binding", "chain":
				return StepAuthenticate
			}
			return Step(s.Phase)
		}
	}
	return StepProxy
}

// TestServeAndExplainCannotDrift: over a policy with every step, serving a request, deciding
// it with limits consumed (on a twin gateway that sees the same traffic), deciding it without
// side effects and explaining it agree on the route, the consumer, the deciding step and the
// answer. The side-effect-free decisions run first, on the serving gateway: had they spent any
// capacity, serving would be refused by a limit earlier than the table says.
func TestServeAndExplainCannotDrift(t *testing.T) {
	up := func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"X-Consumer-Username", "X-Consumer-Groups", "X-Credential-Identifier"} {
			if v, ok := r.Header[k]; ok {
				w.Header()["X-Seen-"+k] = v
			}
		}
		w.WriteHeader(http.StatusOK)
	}
	served, _ := newTestGateway(t, decidePolicy, up)
	twin, _ := newTestGateway(t, decidePolicy, up)

	tests := []struct {
		name, target string
		header       map[string]string
		// status and step are serving's; consumer is who it was authenticated as.
		status   int
		step     Step
		route    string
		consumer string
	}{
		{name: "no route", target: "/nope", status: 404, step: StepMatch},
		{name: "path not normalisable", target: "/r/..;/x", status: 400, step: StepMatch},
		{name: "encoded slash refused by the route", target: "/r/a%2Fb", status: 400, step: StepMatch, route: "r"},
		{name: "unsupported upgrade", target: "/r", header: map[string]string{"Connection": "Upgrade", "Upgrade": "foo/1"},
			status: 400, step: StepSanitize, route: "r"},
		{name: "no credential", target: "/r", status: 401, step: StepAuthenticate, route: "r"},
		{name: "wrong key", target: "/r", header: map[string]string{"apikey": "nope"}, status: 401, step: StepAuthenticate, route: "r"},
		{name: "denied consumer", target: "/r", header: map[string]string{"apikey": "ke"}, status: 403, step: StepAuthorize, route: "r", consumer: "eve"},
		{name: "consumer outside the allowed group", target: "/team", header: map[string]string{"apikey": "ka"},
			status: 403, step: StepAuthorize, route: "team", consumer: "alice"},
		{name: "allowed", target: "/r", header: map[string]string{"apikey": "ka"}, status: 200, step: StepProxy, route: "r", consumer: "alice"},
		{name: "spoofed identity dropped", target: "/r", header: map[string]string{"apikey": "ka", "X-Consumer-Username": "admin"},
			status: 200, step: StepProxy, route: "r", consumer: "alice"},
		{name: "anonymous", target: "/open", status: 200, step: StepProxy, route: "open", consumer: "guest"},
		{name: "group member", target: "/team", header: map[string]string{"apikey": "kb"}, status: 200, step: StepProxy, route: "team", consumer: "bot"},
		{name: "group limit spent", target: "/team", header: map[string]string{"apikey": "kb"}, status: 429, step: StepLimit, route: "team", consumer: "bot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, tt.target, nil)
				for k, v := range tt.header {
					r.Header.Set(k, v)
				}
				return r
			}

			// Without side effects, first: explain and a decision without a trace.
			e := served.Explain(req())
			dry := served.Decide(req(), Mode{})

			rec := httptest.NewRecorder()
			x := &exchange{decision: "forwarded"}
			served.handle(rec, req(), x)
			if rec.Code != tt.status || x.step != tt.step || x.route != tt.route || x.consumer != tt.consumer {
				t.Fatalf("serve: got %d, step %q, route %q, consumer %q; want %d, %q, %q, %q (body %s)",
					rec.Code, x.step, x.route, x.consumer, tt.status, tt.step, tt.route, tt.consumer, rec.Body)
			}

			var traced Explanation
			d := twin.Decide(req(), Mode{Consume: true, Trace: &traced})
			if d.Step != x.step || d.Route != x.route || d.Consumer != x.consumer || d.Allowed() != (x.step == StepProxy) {
				t.Errorf("decide: got step %q, route %q, consumer %q, allowed %v; serve decided %q, %q, %q",
					d.Step, d.Route, d.Consumer, d.Allowed(), x.step, x.route, x.consumer)
			}
			if got := explainedStep(&traced); got != x.step {
				t.Errorf("decide's trace: got deciding step %q, want %q (%+v)", got, x.step, traced.Steps)
			}
			for _, k := range []string{"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "Retry-After", "Www-Authenticate"} {
				got := d.Header.Get(k)
				if ref := d.Refusal(); ref != nil && got == "" {
					got = ref.Header.Get(k)
				}
				if want := rec.Header().Get(k); got != want {
					t.Errorf("decide: header %s: got %q, serve answered %q", k, got, want)
				}
			}
			if d.Allowed() {
				for _, k := range []string{"X-Consumer-Username", "X-Consumer-Groups", "X-Credential-Identifier"} {
					if got, want := d.Header.Get(k), rec.Header().Get("X-Seen-"+k); got != want {
						t.Errorf("decide: identity header %s: got %q, the upstream received %q", k, got, want)
					}
				}
			} else if ref := d.Refusal(); ref.Status != rec.Code || ref.Message != message(t, rec) {
				t.Errorf("decide: refusal %d %q, serve answered %d %q", ref.Status, ref.Message, rec.Code, message(t, rec))
			}

			// Explain and the side-effect-free decision never apply a limit: a request only
			// a limit refuses is one they forward.
			want, wantStatus := x.step, rec.Code
			if want == StepLimit {
				want, wantStatus = StepProxy, http.StatusOK
			}
			if got := explainedStep(e); got != want {
				t.Errorf("explain: got deciding step %q, want %q (%+v)", got, want, e.Steps)
			}
			if e.Forwarded != (want == StepProxy) {
				t.Errorf("explain: forwarded %v, want %v", e.Forwarded, want == StepProxy)
			}
			if !e.Forwarded && (e.Status != wantStatus || e.Message != message(t, rec)) {
				t.Errorf("explain: got %d %q, serve answered %d %q", e.Status, e.Message, rec.Code, message(t, rec))
			}
			if dry.Step != want || dry.Route != x.route || dry.Consumer != x.consumer {
				t.Errorf("decide without side effects: got step %q, route %q, consumer %q; want %q, %q, %q",
					dry.Step, dry.Route, dry.Consumer, want, x.route, x.consumer)
			}
			if ref := dry.Refusal(); ref != nil && ref.Status != wantStatus {
				t.Errorf("decide without side effects: refusal %d, want %d", ref.Status, wantStatus)
			}
			if dry.Header.Get("X-Ratelimit-Remaining") != "" {
				t.Errorf("decide without side effects: got rate-limit headers %v, want none (nothing consumed)", dry.Header)
			}
		})
	}
}

// TestDecideTracesConsumedLimits: a decision that consumes says what each limit left, and
// which one refused.
func TestDecideTracesConsumedLimits(t *testing.T) {
	gw, _ := newTestGateway(t, decidePolicy, nil)
	decide := func() *Explanation {
		r := httptest.NewRequest(http.MethodGet, "/team", nil)
		r.Header.Set("apikey", "kb")
		var e Explanation
		gw.Decide(r, Mode{Consume: true, Trace: &e})
		return &e
	}
	tests := []struct {
		name string
		ok   bool
		want string
	}{
		{"first passes", true, `limit-count 1 per 1m0s of group:bots passed, counted by group "bots", 0 left`},
		{"second is refused", false, `limit-count 1 per 1m0s of group:bots exceeded, counted by group "bots" (rejects with 429)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := decide()
			for _, s := range e.Steps {
				if s.Phase == "limit" && s.OK == tt.ok && strings.HasPrefix(s.Detail, tt.want) {
					return
				}
			}
			t.Errorf("steps: got %+v, want a limit step (ok %v) starting %q", e.Steps, tt.ok, tt.want)
		})
	}
}
