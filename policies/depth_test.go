package policies

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDeepNesting: a file nested past MaxDepth is refused with a positioned error at the first
// value too deep, at a cost linear in the file (it used to build a path string per level:
// gigabytes for 100 000 "[").
func TestDeepNesting(t *testing.T) {
	const limit = 10 << 20
	deepArrays := func(n int) string { return strings.Repeat("[", n) }
	tests := []struct {
		name   string
		policy string
		want   string
	}{
		{
			name:   "12 000 nested arrays",
			policy: deepArrays(12000),
			want:   `p.json:1:65: $` + strings.Repeat("[0]", MaxDepth) + `: nesting deeper than 64 levels of arrays and objects`,
		},
		{
			name:   "100 000 nested arrays (200 KB)",
			policy: strings.Repeat("[ ", 100000),
			want:   `p.json:1:129: $` + strings.Repeat("[0]", MaxDepth) + `: nesting deeper than 64 levels of arrays and objects`,
		},
		{
			name:   "nested objects",
			policy: strings.Repeat(`{"a":`, 100000),
			want:   `p.json:1:321: $` + strings.Repeat(".a", MaxDepth) + `: nesting deeper than 64 levels of arrays and objects`,
		},
		{
			name:   "inside a consumer",
			policy: "{\n  \"consumers\": [ { \"username\": \"a\", \"desc\": " + deepArrays(100000),
			want:   `p.json:2:106: $.consumers[0].desc` + strings.Repeat("[0]", MaxDepth-3) + `: nesting deeper than 64 levels of arrays and objects`,
		},
		{
			name:   "valid JSON too deep",
			policy: `{"routes": ` + deepArrays(70) + strings.Repeat("]", 70) + `}`,
			want:   `p.json:1:75: $.routes` + strings.Repeat("[0]", MaxDepth-1) + `: nesting deeper than 64 levels of arrays and objects`,
		},
		{
			// One level less is read, and the schema words what is wrong with it.
			name:   "at the limit",
			policy: `{"x": ` + deepArrays(MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`,
			want:   `p.json:1:2: $.x: unknown field "x"`,
		},
	}
	if _, err := compiledSchemas(); err != nil { // compiled once; not the file's cost
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(writeFiles(t, map[string]string{"p.json": tt.policy}), "p.json")
			var err error
			n := allocated(func() { err = Validate(path, Options{}) })
			got := errorLines(t, err)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("errors: got %q, want [%q]", got, tt.want)
			}
			if n > limit {
				t.Errorf("validating a %d-byte file allocated %d bytes, want at most %d", len(tt.policy), n, limit)
			}
		})
	}

	// The slow parser, which words the scanner's syntax errors, is bounded the same way.
	t.Run("slow parser", func(t *testing.T) {
		src := &source{name: "p.json", data: []byte(deepArrays(100000))}
		var errs []*Error
		n := allocated(func() { errs = syntaxErrors(src) })
		want := `p.json:1:65: $` + strings.Repeat("[0]", MaxDepth) + `: nesting deeper than 64 levels of arrays and objects`
		if len(errs) != 1 || errs[0].Error() != want {
			t.Errorf("errors: got %v, want [%q]", errs, want)
		}
		if n > limit {
			t.Errorf("allocated %d bytes, want at most %d", n, limit)
		}
	})
}
