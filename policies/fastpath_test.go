package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// Pools of raw JSON values the generators pick from: plausible ones, and ones that exercise the
// edges of the schema, of secrets and of decoding.
var (
	rawStrings = []string{`"a"`, `"bob"`, `""`, `"${env:X}"`, `"${env:EMPTY}"`, `"${env:MISSING}"`,
		`"$${env:X}"`, `"${file:/s}"`, `"${file:/nope}"`, `"${"`, `"caf\u00e9"`, `"café"`, `"a\"b"`,
		`"\u0000x"`, "\"bad\xff\"", `"keys"`, `"jwt"`, `"corp"`}
	rawOdd = []string{`1`, `0`, `-1`, `1.0`, `1e2`, `600`, `599`, `200`, `199`, `1000000000000`,
		`0.5`, `-0`, `1e-400`, `-1e-400`, `0.0000000000000000001`, `true`, `false`, `null`, `[]`, `["a"]`,
		`["", "b"]`, `["${env:X}"]`, `{}`, `{"a": "b"}`, `{"a": ["x"]}`, `{"a": 1}`, `"consumer"`,
		`"route"`, `"ip"`, `"local"`, `"redis"`, `"Local"`, `"fixed"`, `"sliding"`, `"1s"`, `"5 s"`,
		`"1m30s"`, `"99999999999999h"`, `"0"`, `".5s"`}
)

type valueGen struct{ r *rand.Rand }

func (g valueGen) pick(pool []string) string { return pool[g.r.IntN(len(pool))] }

// value is a plausible value from want most of the time, anything otherwise.
func (g valueGen) value(want ...string) string {
	switch n := g.r.IntN(10); {
	case n < 6 && len(want) > 0:
		return g.pick(want)
	case n < 8:
		return g.pick(rawStrings)
	default:
		return g.pick(rawOdd)
	}
}

// object writes the members picked from fields (key → plausible values), sometimes with an odd
// key.
func (g valueGen) object(fields map[string][]string, value func(key string, want []string) string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	// Map order is random; sort for a reproducible sequence from the seed.
	sortStrings(keys)
	var parts []string
	for _, k := range keys {
		if g.r.IntN(3) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%q: %s", k, value(k, fields[k])))
	}
	if g.r.IntN(12) == 0 {
		parts = append(parts, g.pick([]string{`"Username": "x"`, `"unknown": 1`, `"user\u006eame": "x"`, `"$schema": "x"`}))
	}
	g.r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	return "{" + strings.Join(parts, ", ") + "}"
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

var (
	strs      = []string{`"a"`, `"b"`, `"${env:X}"`}
	lists     = []string{`[]`, `["a"]`, `["a", "b"]`}
	keyValues = []string{`"keys"`, `"jwt"`, `"corp"`, `"basic"`}
)

func (g valueGen) binding() string {
	return g.object(map[string][]string{
		"idp": keyValues, "key": strs, "username": strs, "password": strs, "secret": strs,
		"public_key": strs, "algorithm": {`"HS256"`}, "key_id": strs, "subject": strs, "id": {`"cred-1"`, `"a b"`, `""`},
		"claims": {`{}`, `{"aud": "api"}`, `{"groups": ["a", "b"], "x": ""}`, `{"a": []}`},
		"scopes": lists, "realm_roles": lists, "groups": lists, "permissions": lists,
		"client_roles": {`{}`, `{"app": ["r"]}`, `{"app": []}`},
	}, func(k string, want []string) string {
		if k == "idp" && g.r.IntN(5) != 0 {
			return g.pick(keyValues)
		}
		return g.value(want...)
	})
}

func (g valueGen) plugins() string {
	lc := g.object(map[string][]string{
		"count": {`1`, `100`}, "time_window": {`1`, `60`}, "key": {`"consumer"`, `"route"`, `"remote_addr"`},
		"policy": {`"local"`, `"redis"`}, "window_type": {`"fixed"`, `"sliding"`}, "rejected_code": {`429`, `503`},
		"rejected_msg": strs, "allow_degradation": {`true`, `false`}, "sync_interval": {`"1s"`, `"1m30s"`, `"0"`},
	}, func(_ string, want []string) string { return g.value(want...) })
	lr := g.object(map[string][]string{
		"rate": {`1`, `0.5`, `10.25`}, "burst": {`0`, `2`, `1.5`}, "nodelay": {`true`},
		"key": {`"consumer"`}, "policy": {`"local"`}, "rejected_code": {`503`}, "rejected_msg": strs,
		"allow_degradation": {`false`},
	}, func(_ string, want []string) string { return g.value(want...) })
	return g.object(map[string][]string{"limit-count": {lc}, "limit-req": {lr}}, func(_ string, want []string) string {
		if g.r.IntN(6) == 0 {
			return g.value()
		}
		return want[0]
	})
}

// consumer generates one consumer element, valid or not in many ways.
func (g valueGen) consumer(i int) string {
	var bindings []string
	for range g.r.IntN(4) {
		bindings = append(bindings, g.binding())
	}
	return g.object(map[string][]string{
		"username": {fmt.Sprintf(`"u%d"`, i)}, "desc": {`"d"`, `""`}, "group": {`"g"`},
		"idps":    {"[" + strings.Join(bindings, ", ") + "]"},
		"plugins": {g.plugins()},
	}, func(k string, want []string) string {
		if (k == "idps" || k == "plugins" || k == "username") && g.r.IntN(8) != 0 {
			return want[0]
		}
		return g.value(want...)
	})
}

func testResolver() *resolver {
	opts := testOptions(map[string]string{"X": "val", "EMPTY": ""}, map[string]string{"/s": "secret\n"})
	return &resolver{lookupEnv: opts.LookupEnv, readFile: opts.ReadFile}
}

// TestFastConsumerMatchesSlow checks the fast consumer decoder against the generic way on
// generated consumers: whatever it accepts, the schema, the secrets and strict decoding accept
// too, and decode to the same value with the same binding fields.
func TestFastConsumerMatchesSlow(t *testing.T) {
	sch, err := compiledSchemas()
	if err != nil {
		t.Fatal(err)
	}
	res := testResolver()
	dec := newConsumerDecoder(res, sch)
	g := valueGen{r: rand.New(rand.NewPCG(6, 1))}
	fixed := []string{
		`{"username": "c0", "idps": [{"idp": "keys", "key": "key-0-abcdefgh"}], "plugins": {"limit-count": {"count": 100, "time_window": 60}}}`,
		`{"username": "a", "idps": []}`,
		`{"username": "a"}`,
		`{"username": "a", "idps": [{"idp": "corp", "subject": "s", "claims": {"aud": "api", "groups": ["a", "b"]}, "client_roles": {"app": []}}]}`,
		`{"username": "a", "idps": [{"idp": "keys", "key": "${env:EMPTY}"}]}`,
		`{"username": "a", "plugins": {"limit-count": {"count": 1.0, "time_window": 1}}}`,
		`{"username": "a", "plugins": {"limit-req": {"rate": 1e-400}}}`,
		`{"username": "a", "plugins": {"limit-req": {"rate": 1, "burst": -1e-400}}}`,
		`{"username": "a", "plugins": {"limit-count": {"count": 1, "time_window": 1, "sync_interval": "99999999999999h"}}}`,
	}
	accepted := 0
	const generated = 3000
	for i := 0; i < len(fixed)+generated; i++ {
		var doc string
		if i < len(fixed) {
			doc = fixed[i]
		} else {
			doc = g.consumer(i)
		}
		data := []byte(doc)
		src := &source{name: "c.json", data: data}
		sc, ok := scanSource(src)
		if !ok || len(sc.dups) > 0 {
			continue // the generator made invalid JSON; not the decoder's business
		}
		var fast Consumer
		if !dec.decode(data, &fast) {
			continue
		}
		accepted++
		tree, err := decodeAny(data)
		if err != nil {
			t.Fatal(err)
		}
		var errs errorList
		if err := schemaCheck(src, sch.consumer, rootPath, tree, &errs); err != nil {
			t.Fatal(err)
		}
		tree = res.resolveTree(src, rootPath, tree, &errs)
		var slow Consumer
		if _, err := decodeStrict(tree, &slow); err != nil {
			errs.add(&Error{Msg: err.Error()})
		}
		if len(errs) > 0 {
			t.Errorf("fast decoder accepted what the slow way rejects:\n%s\nslow: %v", doc, errs.err())
			continue
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("decoded differently:\n%s\nfast: %#v\nslow: %#v", doc, fast, slow)
			continue
		}
		masks := consumerMasks(tree)
		for j := range fast.IdPs {
			if got, want := fast.IdPs[j].fieldMask(), masks[j]; got != want {
				t.Errorf("binding %d fields: got mask %b, want %b\n%s", j, got, want, doc)
			}
		}
	}
	// The generator must exercise the fast path, not only the fallback.
	if accepted < generated/20 {
		t.Errorf("fast decoder accepted only %d of %d consumers", accepted, len(fixed)+generated)
	}
	t.Logf("fast decoder accepted %d of %d consumers", accepted, len(fixed)+generated)
}

// TestLoadFastMatchesSlow loads generated policies with and without the fast consumer
// decoder: same errors (messages, positions, paths), same policy.
func TestLoadFastMatchesSlow(t *testing.T) {
	g := valueGen{r: rand.New(rand.NewPCG(6, 2))}
	opts := testOptions(map[string]string{"X": "val", "EMPTY": ""}, map[string]string{"/s": "secret\n"})
	opts = opts.withDefaults()
	const head = `{
  "idps": [
    { "name": "keys", "type": "key-auth" }, { "name": "basic", "type": "basic-auth" },
    { "name": "jwt", "type": "jwt-auth" }, { "name": "corp", "type": "oidc", "issuer": "https://id.example" }
  ],
  "consumer_groups": [ { "name": "g" } ],
  "consumers": [
`
	const tail = `
  ],
  "routes": [ { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://u" } ] }, "anonymous_consumer": "u1" } ]
}`
	for n := range 40 {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var cs []string
			// Mostly good consumers with a few generated ones, so that policies load or fail on
			// a few problems, like real ones.
			for i := range 30 {
				if g.r.IntN(10) < 8 {
					cs = append(cs, fmt.Sprintf(`    {"username": "u%d", "idps": [{"idp": "keys", "key": "k%d-%d"}], "plugins": {"limit-count": {"count": 1, "time_window": 1}}}`, i, n, i))
				} else {
					cs = append(cs, "    "+g.consumer(i))
				}
			}
			dir := writeFiles(t, map[string]string{"p.json": head + strings.Join(cs, ",\n") + tail})
			path := filepath.Join(dir, "p.json")
			fastSnap, fastErr := load(path, opts, loadMode{validateOnly: true})
			slowSnap, slowErr := load(path, opts, loadMode{validateOnly: true, slowConsumers: true})
			fastLines, slowLines := errorLines(t, fastErr), errorLines(t, slowErr)
			if !reflect.DeepEqual(fastLines, slowLines) {
				t.Errorf("errors differ:\nfast:\n%s\nslow:\n%s", strings.Join(fastLines, "\n"), strings.Join(slowLines, "\n"))
			}
			if (fastSnap == nil) != (slowSnap == nil) {
				t.Fatalf("fast snapshot %v, slow %v", fastSnap != nil, slowSnap != nil)
			}
			if fastSnap != nil {
				defer fastSnap.Close()
				defer slowSnap.Close()
				if !reflect.DeepEqual(fastSnap.Policy, slowSnap.Policy) {
					t.Errorf("policies differ")
				}
				if !reflect.DeepEqual(fastSnap.ConsumerPlugins, slowSnap.ConsumerPlugins) {
					t.Errorf("consumer plugins differ")
				}
			}
		})
	}
}

// FuzzScan checks the scanner against encoding/json: it accepts exactly what encoding/json
// accepts, and finds the duplicate keys the slow parser reports.
func FuzzScan(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a": 1, "a": 2}`, `{"consumers": [{"username": "a", "username": "b"}]}`,
		`{"a": [1, 2.5e-3, -0, true, false, null, "x\u00e9\n"]}`, `{"a\u0062": 1, "ab": 2}`, "{\"\xff\": 1, \"\xfe\": 2}",
		`{"a": 01}`, `{"a": 1.}`, `{"a": "\x"}`, `{} {}`, `{"a": [1,]}`, `{"a" 1}`, ` {"a": tru}`, `"\u12"`, "\ufeff{}",
		`{"consumers": [1, {"x": {"y": 1, "y": 2}}], "consumers": 3}`,
		strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1),
		`{"a": ` + strings.Repeat(`{"b": [`, MaxDepth/2) + `"[[[["` + strings.Repeat("]}", MaxDepth/2) + `}`,
		strings.Repeat(`[{"x":`, 40) + `tru`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &source{name: "f.json", data: data}
		sc, ok := scanSource(src)
		if sc.tooDeep != nil {
			// Refused for its depth, which must really be too deep; the slow parser, if it
			// gets as far, says the same.
			if ok {
				t.Fatalf("scanner ok with a nesting error: %q", data)
			}
			if d := nesting(data); d <= MaxDepth {
				t.Fatalf("nesting error at depth %d: %q", d, data)
			}
			if json.Valid(data) {
				if errs := syntaxErrors(src); errs[0].Error() != sc.tooDeep.Error() {
					t.Fatalf("slow parser: got %q, want %q", errs[0], sc.tooDeep)
				}
			}
			return
		}
		if want := json.Valid(data) && nesting(data) <= MaxDepth; ok != want {
			t.Fatalf("scanner ok %v, encoding/json valid %v: %q", ok, want, data)
		}
		if !ok {
			return
		}
		var want []string
		for _, e := range syntaxErrors(src) {
			if strings.Contains(e.Msg, "duplicate key") {
				want = append(want, e.Error())
			}
		}
		var got []string
		for _, e := range sc.dups {
			got = append(got, e.Error())
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("duplicate keys: got %q, want %q in %q", got, want, data)
		}
	})
}

// nesting is the deepest nesting of brackets outside strings in data.
func nesting(data []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		case '"':
			i = skipString(data, i) - 1
		}
	}
	return deepest
}

// TestScanMutations runs FuzzScan's property on mutations of a policy.
func TestScanMutations(t *testing.T) {
	seed, err := os.ReadFile("../examples/petstore.json")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(6, 3))
	alphabet := []byte("{}[],:\"\\ \n0123456789.eE+-truefalsnl\x00\xff")
	for i := range 2000 {
		data := bytes.Clone(seed)
		for range 1 + r.IntN(3) {
			at := r.IntN(len(data))
			switch r.IntN(3) {
			case 0:
				data = append(data[:at], data[at+1:]...)
			case 1:
				data[at] = alphabet[r.IntN(len(alphabet))]
			default:
				data = append(data[:at], append([]byte{alphabet[r.IntN(len(alphabet))]}, data[at:]...)...)
			}
		}
		src := &source{name: "m.json", data: data}
		_, ok := scanSource(src)
		if want := json.Valid(data); ok != want {
			t.Fatalf("mutation %d: scanner ok %v, encoding/json valid %v: %q", i, ok, want, data)
		}
	}
}

// eagerPositions indexes every value and key of a valid document by path, the way Load did
// before positions became lazy (values: the last occurrence; keys: the first).
func eagerPositions(t *testing.T, data []byte) (values, keys map[jsonPath]int) {
	t.Helper()
	values, keys = map[jsonPath]int{}, map[jsonPath]int{}
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func(path jsonPath)
	walk = func(path jsonPath) {
		start := skipSpace(data, int(dec.InputOffset()))
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		values[path] = start
		d, ok := tok.(json.Delim)
		if !ok {
			return
		}
		if d == '{' {
			for dec.More() {
				keyStart := skipSpace(data, int(dec.InputOffset()))
				kt, _ := dec.Token()
				child := path.key(kt.(string))
				if _, seen := keys[child]; !seen {
					keys[child] = keyStart
				}
				walk(child)
			}
		} else {
			for i := 0; dec.More(); i++ {
				walk(path.index(i))
			}
		}
		if _, err := dec.Token(); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	}
	walk(rootPath)
	return values, keys
}

func TestLocatorMatchesEagerIndex(t *testing.T) {
	docs := map[string][]byte{
		"odd keys": []byte("{\n  \"a\\\"[b\": { \"x-y\": [1, {\"\": 2, \"caf\\u00e9\": \"é\"}] },\n\t\"list\" : [ [ ], { }, \"s\\\\\", -1.5e3, null ],\n  \"\u00e9\": true, \"a.b\": 1, \"0\": [0]\n}"),
	}
	examples, _ := filepath.Glob("../examples/*.json")
	for _, f := range examples {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Base(f)] = data
	}
	for name, data := range docs {
		t.Run(name, func(t *testing.T) {
			values, keys := eagerPositions(t, data)
			src := &source{name: name, data: data}
			for path, want := range values {
				got, keyOff, found := src.locate(path)
				if !found || got != want {
					t.Errorf("%s: got value offset %d (found %v), want %d", path, got, found, want)
				}
				if wantKey, ok := keys[path]; ok && keyOff != wantKey {
					t.Errorf("%s: got key offset %d, want %d", path, keyOff, wantKey)
				}
			}
			// A path that does not exist resolves to its nearest existing ancestor.
			for path := range values {
				missing := path.key("no_such_field").index(3)
				if got := src.valueOffset(missing); got != values[path] {
					t.Errorf("%s: got %d, want the ancestor's %d", missing, got, values[path])
				}
			}
		})
	}
}

func TestLineIndex(t *testing.T) {
	var b strings.Builder
	r := rand.New(rand.NewPCG(6, 4))
	pieces := []string{"a", "é", "日本", "\n", "\r\n", "\xff", "\xe2\x82", "😀", strings.Repeat("x", 3000)}
	for b.Len() < 5*lineStep {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	data := []byte(b.String())
	naive := func(off int) (int, int) {
		line, lineStart := 1, 0
		for i := 0; i < off; i++ {
			if data[i] == '\n' {
				line++
				lineStart = i + 1
			}
		}
		return line, utf8.RuneCount(data[lineStart:off]) + 1
	}
	src := &source{name: "t", data: data}
	for off := 0; off <= len(data); off += 1 + r.IntN(13) {
		wl, wc := naive(off)
		if gl, gc := src.lineCol(off); gl != wl || gc != wc {
			t.Fatalf("offset %d: got %d:%d, want %d:%d", off, gl, gc, wl, wc)
		}
	}
}
