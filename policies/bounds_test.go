package policies

import (
	"path/filepath"
	"strings"
	"testing"
)

// Every count and seconds setting has a maximum that keeps its arithmetic (seconds × 10⁹,
// sums of weights, 32-bit counters) from overflowing; validate refuses a value above it,
// on the fast consumer path as on the schema's.
func TestNumberBoundsAreEnforced(t *testing.T) {
	const base = `{
  "redis": { "addr": "127.0.0.1:6379", "db": %DB% },
  "idps": [
    { "name": "keys", "type": "key-auth" },
    { "name": "h", "type": "hmac-auth", "clock_skew": %SKEW%, "max_req_body_size": %BODY% },
    { "name": "j", "type": "jwt-auth", "leeway": %LEEWAY% }
  ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "k" } ],
    "plugins": { "limit-count": { "count": %COUNT%, "time_window": %WINDOW% }, "limit-req": { "rate": %RATE%, "burst": %BURST% } } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1", "weight": %WEIGHT% } ] } } ]
}`
	ok := map[string]string{"%DB%": "0", "%SKEW%": "300", "%BODY%": "1024", "%LEEWAY%": "0", "%COUNT%": "10",
		"%WINDOW%": "60", "%RATE%": "1", "%BURST%": "0", "%WEIGHT%": "1"}
	tests := []struct {
		name, field, value, path string
	}{
		{"hmac clock_skew that overflows nanoseconds", "%SKEW%", "10000000000", "$.idps[1].clock_skew"},
		{"hmac clock_skew just over a year", "%SKEW%", "31536001", "$.idps[1].clock_skew"},
		{"hmac max_req_body_size", "%BODY%", "1073741825", "$.idps[1].max_req_body_size"},
		{"jwt leeway", "%LEEWAY%", "10000000000", "$.idps[2].leeway"},
		{"redis db", "%DB%", "65536", "$.redis.db"},
		{"limit-count count", "%COUNT%", "2147483648", "$.consumers[0].plugins[\"limit-count\"].count"},
		{"limit-count time_window", "%WINDOW%", "10000000000", "$.consumers[0].plugins[\"limit-count\"].time_window"},
		{"limit-req rate", "%RATE%", "1000001", "$.consumers[0].plugins[\"limit-req\"].rate"},
		{"limit-req burst", "%BURST%", "2147483648", "$.consumers[0].plugins[\"limit-req\"].burst"},
		{"target weight", "%WEIGHT%", "1000001", "$.routes[0].upstream.targets[0].weight"},
	}
	fill := func(over map[string]string) string {
		s := base
		for k, v := range ok {
			if o, found := over[k]; found {
				v = o
			}
			s = strings.ReplaceAll(s, k, v)
		}
		return s
	}
	t.Run("in range", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"p.json": fill(nil)})
		if err := Validate(filepath.Join(dir, "p.json"), testOptions(nil, nil)); err != nil {
			t.Fatalf("got %v, want a valid policy", err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"p.json": fill(map[string]string{tt.field: tt.value})})
			err := Validate(filepath.Join(dir, "p.json"), testOptions(nil, nil))
			found := false
			for _, e := range Errors(err) {
				if strings.HasPrefix(e.Path, tt.path) {
					found = true
				}
			}
			if !found {
				t.Errorf("got %v, want an error at %s", err, tt.path)
			}
		})
	}
}

func TestSchemaLimitBounds(t *testing.T) {
	s, err := compiledSchemas()
	if err != nil {
		t.Fatal(err)
	}
	want := limitBounds{count: 2147483647, timeWindow: 31536000, rate: 1e6, burst: 2147483647}
	if s.limits != want {
		t.Errorf("fast decoder bounds: got %+v, want %+v (the schema's maxima)", s.limits, want)
	}
}
