package gateway

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

const dashboardPath = "../examples/grafana/portcullis-dashboard.json"

// TestDashboardQueriesExportedMetrics: every metric the Grafana dashboard queries (panels,
// variables, annotations) is one the gateway exports, with the _bucket/_sum/_count series of
// its histograms, so that a renamed metric cannot leave a panel silently empty.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parsing %s: %v", dashboardPath, err)
	}
	exported := exportedSeriesNames(t)
	exprs := dashboardExprs(dash)
	if len(exprs) < 20 {
		t.Fatalf("found %d PromQL expressions in the dashboard, want its panels' (at least 20): the walk missed them", len(exprs))
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		names := promqlMetricNames(e)
		if len(names) == 0 {
			t.Errorf("expression %q: found no metric name in it", e)
		}
		for _, n := range names {
			seen[n] = true
			if !exported[n] {
				t.Errorf("expression %q queries %s, which the gateway does not export", e, n)
			}
		}
	}
	// The dashboard covers what the issue asks of it.
	for _, n := range []string{"portcullis_request_duration_seconds_bucket", "portcullis_requests_in_flight", "portcullis_ratelimit_rejections_total",
		"portcullis_auth_decisions_total", "portcullis_idp_request_duration_seconds_bucket", "portcullis_redis_duration_seconds_count",
		"portcullis_redis_breaker_open", "portcullis_policy_reloads_total", "portcullis_policy_last_reload_success_timestamp_seconds",
		"portcullis_upstream_duration_seconds_bucket", "portcullis_forward_auth_requests_total"} {
		if !seen[n] {
			t.Errorf("the dashboard has no query of %s", n)
		}
	}
}

// exportedSeriesNames builds a Metrics, records into every collector so that each family has
// a series, and returns the names a scrape shows (a histogram's as _bucket, _sum and _count).
func exportedSeriesNames(t *testing.T) map[string]bool {
	t.Helper()
	m := NewMetrics()
	m.BuildInfo("v0.0.0-test")
	m.certificateExpiry(func() time.Time { return time.Now().Add(time.Hour) })
	m.shadowDecisions()
	lim := &limit{owner: "consumer:a", metricOwner: "consumer:a", kind: "limit-count"}
	m.request("r", "a", 200)
	m.forwardAuthDecision("r", "a", 200)
	m.observeDuration("r", 200, time.Millisecond)
	m.authDecision(nil)
	m.rateRejected("r", lim)
	m.rateDegraded(lim)
	m.upstreamObserver("r").Observe(0.001)
	m.poolCounters("127.0.0.1:1").Dialed.Inc()
	m.Reload(nil)
	m.Reload(errors.New("bad policy"))
	m.IdPCall("corp", "jwks", time.Millisecond, nil)
	m.IdPCache("corp", "token", true)
	m.RedisCall("limit", time.Millisecond, nil)
	m.RedisBreaker(true)
	m.consumersG.Set(1)
	m.policyInfoG.WithLabelValues("abc").Set(1)

	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		name := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	return out
}

// dashboardExprs collects the PromQL of a dashboard: "expr" of panel targets and annotations,
// and the query of query variables.
func dashboardExprs(v any) []string {
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			if v["type"] == "query" {
				switch q := v["query"].(type) {
				case string:
					out = append(out, q)
				case map[string]any:
					if s, ok := q["query"].(string); ok {
						out = append(out, s)
					}
				}
			}
			for k, c := range v {
				walk(c, k)
			}
		case []any:
			for _, c := range v {
				walk(c, key)
			}
		case string:
			if key == "expr" {
				out = append(out, v)
			}
		}
	}
	walk(v, "")
	slices.Sort(out)
	return slices.Compact(out)
}

var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlVariables = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	promqlIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// promqlKeywords are PromQL's words that are not metric names (operators and modifiers); a
// word followed by "(" is a function or aggregation and is skipped without a list.
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true,
	"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}

// promqlMetricNames lists the metric names an expression selects. It is a small lexer, not a
// parser: strings, label matchers, ranges, grouping clauses and dashboard variables are cut
// out; what is left of the identifiers not followed by "(" are metric names. label_values(m,
// label) of a variable query names m.
func promqlMetricNames(expr string) []string {
	if rest, ok := strings.CutPrefix(strings.TrimSpace(expr), "label_values("); ok {
		if i := strings.LastIndex(rest, ","); i >= 0 {
			expr = rest[:i] // the label is the last argument
		}
	}
	s := promqlStrings.ReplaceAllString(expr, " ")
	s = promqlVariables.ReplaceAllString(s, " ")
	for {
		next := promqlMatchers.ReplaceAllString(s, " ")
		next = promqlRanges.ReplaceAllString(next, " ")
		next = promqlGrouping.ReplaceAllString(next, " ")
		if next == s {
			break
		}
		s = next
	}
	var out []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] == '.' || s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9') {
			continue // inside a number: the h of 1h, the e of 1e3
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue // a function or aggregation
		}
		if promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		out = append(out, tok)
	}
	return out
}

func TestPromQLMetricNames(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"quantile", `histogram_quantile(0.99, sum by (le, route) (rate(portcullis_request_duration_seconds_bucket{job=~"$job", route=~"a|b"}[$__rate_interval])))`,
			[]string{"portcullis_request_duration_seconds_bucket"}},
		{"ratio with a matcher holding a name", `sum(rate(a_total{x="b_total"}[5m])) / sum without (x) (rate(c_total[5m] offset 1h)) > bool 1e3`,
			[]string{"a_total", "c_total"}},
		{"time arithmetic", `time() - max(last_seconds{job=~"${job}"})`, []string{"last_seconds"}},
		{"label_values", `label_values(portcullis_build_info{job=~"$job", x="y"}, instance)`, []string{"portcullis_build_info"}},
		{"binary with on", `x_total * on (instance) group_left (version) y_info`, []string{"x_total", "y_info"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := promqlMetricNames(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("promqlMetricNames(%q): got %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}
