package gateway

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
)

// seriesOf scrapes m and returns the series of the named family as "label=value,..." (labels sorted
// by name, as the registry gives them) → value (a counter's, a gauge's, or a histogram's sample count).
func seriesOf(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			out[strings.Join(labels, ",")] = v
		}
	}
	return out
}

func keysOf(m map[string]float64) []string {
	k := slices.Collect(maps.Keys(m))
	sort.Strings(k)
	return k
}

// trackingPolicy has a consumer tracked by name (Alice), one by group (Bob, a partner), one not
// tracked (Carol), and a route's anonymous consumer (Guest). Each has a limit of its own of one
// request a minute, so that the second request is a rejection.
const trackingPolicy = `{
  "trusted_proxies": ["192.0.2.1"],
  "forward_auth": {},
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "partners" }, { "name": "staff" } ],
  "consumers": [
    { "username": "Alice", "group": "staff", "idps": [ { "idp": "keys", "key": "ka" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } },
    { "username": "Bob", "group": "partners", "idps": [ { "idp": "keys", "key": "kb" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } },
    { "username": "Carol", "idps": [ { "idp": "keys", "key": "kc" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } },
    { "username": "Guest" }
  ],
  "routes": [
    { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] } },
    { "name": "open", "paths": ["/open"], "upstream": { "targets": [ { "url": "%[1]s" } ] }, "anonymous_consumer": "Guest" },
    { "name": "fa", "paths": ["/fa"] }
  ]
  %[2]s
}`

func trackingPolicyWith(metrics string) string {
	if metrics != "" {
		metrics = `, "metrics": ` + metrics
	}
	return strings.Replace(trackingPolicy, "%[2]s", metrics, 1)
}

// TestPerConsumerSeries: only the consumers the policy's metrics block names (by name or by
// group) and the routes' anonymous consumers get series of their own; the other identified
// consumers are counted as consumer="other", unidentified requests as consumer="".
func TestPerConsumerSeries(t *testing.T) {
	tests := []struct {
		name     string
		metrics  string
		requests []string // consumer label per request to /r with keys ka, kb, kc; then /open; then /r unauthenticated
		limits   []string // the limit label of each consumer's rejection
	}{
		{
			name:     "no metrics block: nobody but the anonymous consumer",
			requests: []string{"other", "other", "other", "Guest", ""},
			limits:   []string{"consumer:other", "consumer:other", "consumer:other"},
		},
		{
			name:     "by name and by group",
			metrics:  `{ "consumers": ["Alice"], "consumer_groups": ["partners"] }`,
			requests: []string{"Alice", "Bob", "other", "Guest", ""},
			limits:   []string{"consumer:Alice", "consumer:Bob", "consumer:other"},
		},
		{
			name:     "all consumers",
			metrics:  `{ "all_consumers": true }`,
			requests: []string{"Alice", "Bob", "Carol", "Guest", ""},
			limits:   []string{"consumer:Alice", "consumer:Bob", "consumer:Carol"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, _ := newTestGateway(t, trackingPolicyWith(tt.metrics), nil)
			want := map[string]float64{}
			wantLimits := map[string]float64{}
			for i, key := range []string{"ka", "kb", "kc"} {
				for range 2 { // the second is over the consumer's limit
					serve(gw, "GET", "/r", map[string]string{"apikey": key})
				}
				want["consumer="+tt.requests[i]+",route=r,status=200"]++
				want["consumer="+tt.requests[i]+",route=r,status=429"]++
				wantLimits["limit="+tt.limits[i]+",plugin=limit-count,route=r"]++
			}
			serve(gw, "GET", "/open", nil)
			want["consumer="+tt.requests[3]+",route=open,status=200"]++
			serve(gw, "GET", "/r", nil)
			want["consumer="+tt.requests[4]+",route=r,status=401"]++

			if got := seriesOf(t, gw.metrics, "portcullis_requests_total"); !maps.Equal(got, want) {
				t.Errorf("portcullis_requests_total:\ngot  %v\nwant %v", got, want)
			}
			if got := seriesOf(t, gw.metrics, "portcullis_ratelimit_rejections_total"); !maps.Equal(got, wantLimits) {
				t.Errorf("portcullis_ratelimit_rejections_total:\ngot  %v\nwant %v", got, wantLimits)
			}
		})
	}
}

// TestForwardAuthPerConsumerSeries: forward-auth decisions follow the same tracking.
func TestForwardAuthPerConsumerSeries(t *testing.T) {
	gw, _ := newTestGateway(t, trackingPolicyWith(`{ "consumers": ["Alice"] }`), nil)
	for _, key := range []string{"ka", "kc"} {
		rec := askForwardAuth(gw, "GET", "/.portcullis/auth/nginx", "", map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/fa", "apikey": key})
		if rec.Code != 200 {
			t.Fatalf("forward auth with key %s: got %d, want 200", key, rec.Code)
		}
	}
	want := map[string]float64{"consumer=Alice,route=fa,status=200": 1, "consumer=other,route=fa,status=200": 1}
	if got := seriesOf(t, gw.metrics, "portcullis_forward_auth_requests_total"); !maps.Equal(got, want) {
		t.Errorf("portcullis_forward_auth_requests_total:\ngot  %v\nwant %v", got, want)
	}
}

// TestReloadDeletesSeriesOfUntrackedConsumers: a reload that removes a consumer or stops
// tracking it deletes its series (requests, forward auth, its limit's rejections); the series
// of consumers still tracked, of "other" and of "" stay with their counts.
func TestReloadDeletesSeriesOfUntrackedConsumers(t *testing.T) {
	tests := []struct {
		name          string
		before, after string // metrics blocks
		removeBob     bool
		wantConsumers []string // consumer label values left in portcullis_requests_total
	}{
		{
			name:          "a group no longer tracked",
			before:        `{ "consumers": ["Alice"], "consumer_groups": ["partners"] }`,
			after:         `{ "consumers": ["Alice"] }`,
			wantConsumers: []string{"", "Alice", "other"},
		},
		{
			name:          "a tracked consumer removed from the policy",
			before:        `{ "consumers": ["Alice", "Bob"] }`,
			after:         `{ "consumers": ["Alice"] }`,
			removeBob:     true,
			wantConsumers: []string{"", "Alice", "other"},
		},
		{
			name:          "all consumers, one removed",
			before:        `{ "all_consumers": true }`,
			after:         `{ "all_consumers": true }`,
			removeBob:     true,
			wantConsumers: []string{"", "Alice", "Carol"},
		},
		{
			name:          "tracking switched off",
			before:        `{ "all_consumers": true }`,
			wantConsumers: []string{""},
		},
		{
			name:          "nothing changes",
			before:        `{ "consumers": ["Alice", "Bob"] }`,
			after:         `{ "consumers": ["Bob", "Alice"] }`,
			wantConsumers: []string{"", "Alice", "Bob", "other"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, up := newTestGateway(t, trackingPolicyWith(tt.before), nil)
			for _, key := range []string{"ka", "kb", "kc", "kb"} { // Bob twice: a rejection
				serve(gw, "GET", "/r", map[string]string{"apikey": key})
			}
			askForwardAuth(gw, "GET", "/.portcullis/auth/nginx", "", map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/fa", "apikey": "kb"})
			serve(gw, "GET", "/r", nil)

			after := trackingPolicyWith(tt.after)
			if tt.removeBob {
				after = strings.Replace(after, `{ "username": "Bob", "group": "partners", "idps": [ { "idp": "keys", "key": "kb" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 60 } } },`, "", 1)
				if strings.Contains(after, `"username": "Bob"`) {
					t.Fatal("the policy without Bob still names Bob: trackingPolicy changed")
				}
			}
			swapPolicy(t, gw, after, up.URL)
			gw.retiring.Wait() // the series go once the old snapshot's requests are done

			consumers := map[string]bool{}
			for k := range seriesOf(t, gw.metrics, "portcullis_requests_total") {
				_, rest, _ := strings.Cut(k, "consumer=")
				c, _, _ := strings.Cut(rest, ",")
				consumers[c] = true
			}
			got := slices.Sorted(maps.Keys(consumers))
			if !slices.Equal(got, tt.wantConsumers) {
				t.Errorf("consumer labels of portcullis_requests_total after the reload: got %q, want %q", got, tt.wantConsumers)
			}
			bobKept := slices.Contains(tt.wantConsumers, "Bob")
			for _, name := range []string{"portcullis_forward_auth_requests_total", "portcullis_ratelimit_rejections_total"} {
				for _, k := range keysOf(seriesOf(t, gw.metrics, name)) {
					if strings.Contains(k, "Bob") != bobKept {
						t.Errorf("%s after the reload: series %s; want Bob's series kept: %v", name, k, bobKept)
					}
				}
			}
			if got := seriesOf(t, gw.metrics, "portcullis_requests_total")["consumer=,route=r,status=401"]; got != 1 {
				t.Errorf(`portcullis_requests_total{consumer=""} after the reload: got %v, want 1 (kept)`, got)
			}
		})
	}
}

// TestRouteLimitSeriesFromStart: a route's own limit has its rejection series at 0 as soon as the
// route is served, before any request, so that an alert on it reads 0 and not "no data".
func TestRouteLimitSeriesFromStart(t *testing.T) {
	gw := newTestGatewayAt(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] },
    "plugins": { "limit-count": { "count": 5, "time_window": 60 } } } ]
}`, "http://127.0.0.1:1")
	got := seriesOf(t, gw.metrics, "portcullis_ratelimit_rejections_total")
	want := map[string]float64{"limit=route:r,plugin=limit-count,route=r": 0}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
