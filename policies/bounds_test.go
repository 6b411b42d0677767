package policies

import (
	"math/big"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
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
	keys, policies := []string{"consumer", "route", "remote_addr", "subject"}, []string{"local", "redis"}
	codes := intRange{lo: 200, hi: 599}
	want := limitRules{
		count: intRange{lo: 1, hi: 2147483647}, timeWindow: intRange{lo: 1, hi: 31536000}, countCode: codes,
		rate: numRange{lo: 0, hi: 1e6}, burst: numRange{lo: 0, loInclusive: true, hi: 2147483647}, reqCode: codes,
		countKey: keys, countPolicy: policies, windows: []string{"fixed", "sliding"},
		reqKey: keys, reqPolicy: policies,
	}
	if !reflect.DeepEqual(s.limits, want) {
		t.Errorf("fast decoder rules: got %+v, want %+v (the schema's)", s.limits, want)
	}
}

// TestReadLimitRulesRefuses: a schema rule the fast decoder cannot check makes compiling the
// schemas fail, rather than letting the decoder accept what validate refuses.
func TestReadLimitRulesRefuses(t *testing.T) {
	rat := func(n int64) *big.Rat { return big.NewRat(n, 1) }
	obj := func(props map[string]*jsonschema.Schema) *jsonschema.Schema {
		return &jsonschema.Schema{Properties: props}
	}
	good := func() (lc, lr map[string]*jsonschema.Schema) {
		ints := func() *jsonschema.Schema { return &jsonschema.Schema{Minimum: rat(1), Maximum: rat(10)} }
		enum := func() *jsonschema.Schema { return &jsonschema.Schema{Enum: &jsonschema.Enum{Values: []any{"a"}}} }
		lc = map[string]*jsonschema.Schema{"count": ints(), "time_window": ints(), "rejected_code": ints(),
			"key": enum(), "policy": enum(), "window_type": enum()}
		lr = map[string]*jsonschema.Schema{"rate": {ExclusiveMinimum: rat(0), Maximum: rat(10)},
			"burst": {Minimum: rat(0), Maximum: rat(10)}, "rejected_code": ints(), "key": enum(), "policy": enum()}
		return lc, lr
	}
	consumer := func(lc, lr map[string]*jsonschema.Schema) *jsonschema.Schema {
		// The limits sit behind a $ref, as in the real schema.
		return obj(map[string]*jsonschema.Schema{"plugins": {Ref: obj(map[string]*jsonschema.Schema{
			"limit-count": {Ref: obj(lc)}, "limit-req": {Ref: obj(lr)}})}})
	}
	t.Run("good", func(t *testing.T) {
		if _, err := readLimitRules(consumer(good())); err != nil {
			t.Fatalf("got %v, want no error", err)
		}
	})
	tests := []struct {
		name   string
		change func(lc, lr map[string]*jsonschema.Schema)
	}{
		{"missing field", func(lc, _ map[string]*jsonschema.Schema) { delete(lc, "count") }},
		{"exclusive maximum", func(lc, _ map[string]*jsonschema.Schema) { lc["count"].ExclusiveMaximum = rat(5) }},
		{"fractional integer bound", func(lc, _ map[string]*jsonschema.Schema) { lc["time_window"].Maximum = big.NewRat(1, 2) }},
		{"no minimum", func(_, lr map[string]*jsonschema.Schema) { lr["rate"].ExclusiveMinimum = nil }},
		{"inexact float bound", func(_, lr map[string]*jsonschema.Schema) { lr["burst"].Maximum = big.NewRat(1, 3) }},
		{"no enum", func(lc, _ map[string]*jsonschema.Schema) { lc["key"].Enum = nil }},
		{"enum of numbers", func(_, lr map[string]*jsonschema.Schema) { lr["policy"].Enum.Values = []any{1} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc, lr := good()
			tt.change(lc, lr)
			if r, err := readLimitRules(consumer(lc, lr)); err == nil {
				t.Errorf("got rules %+v and no error, want an error", r)
			}
		})
	}
}
