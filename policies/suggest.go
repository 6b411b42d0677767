package policies

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Suggestions for the errors a person makes writing a policy: a misspelt field or name gets a
// "did you mean", and the names APISIX uses for what Portcullis calls otherwise get ours.

// didYouMean is " (did you mean %q?)" for the candidate closest to got, or "" when none is
// close: at most a third of got's length in edits (one at least, three at most), for names of
// three characters or more.
func didYouMean(got string, candidates []string) string {
	if c := closest(got, candidates); c != "" {
		return " (did you mean \"" + c + "\"?)"
	}
	return ""
}

// closest is the candidate didYouMean suggests, or "".
func closest(got string, candidates []string) string {
	if len(got) < 3 {
		return "" // one edit away from a name this short is every other short name
	}
	best, bestD := "", 0
	limit := min(3, max(1, len(got)/3))
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	for _, c := range sorted {
		if c == got || c == "" {
			continue
		}
		d := editDistance(strings.ToLower(got), strings.ToLower(c))
		if d <= limit && (best == "" || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings (bytes; names are ASCII).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // a name this long is no typo of a field
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// apisixFields are APISIX's names for what a Portcullis policy writes otherwise.
var apisixFields = map[string]string{
	"uri":                  `a route's "paths"`,
	"uris":                 `a route's "paths"`,
	"host":                 `a route's "hosts"`,
	"nodes":                `"upstream": {"targets": [{"url": …, "weight": …}]}`,
	"key-auth":             `an idp of type "key-auth" and a binding {"idp": …, "key": …} in the consumer's "idps"`,
	"basic-auth":           `an idp of type "basic-auth" and a binding in the consumer's "idps"`,
	"jwt-auth":             `an idp of type "jwt-auth" and a binding in the consumer's "idps"`,
	"hmac-auth":            `an idp of type "hmac-auth" and a binding in the consumer's "idps"`,
	"openid-connect":       `an idp of type "oidc" or "keycloak"`,
	"consumer-restriction": `a route's "consumers" or "consumer_groups" allow and deny lists`,
	"group_id":             `a consumer's "group"`,
}

// fieldHint is what to say after `unknown field "name"` for an object of the schema at
// location loc (the schema's "#/$defs/…" of the object, "" for the whole policy);
// meant is the field name suggested, "" when the hint suggests none.
func fieldHint(loc, name string) (hint, meant string) {
	if h, ok := apisixFields[name]; ok {
		return " (APISIX's " + name + "; here: " + h + ")", ""
	}
	if c := closest(name, schemaProperties(loc)); c != "" {
		return " (did you mean \"" + c + "\"?)", c
	}
	return "", ""
}

// schemaProperties lists the properties of the object schema at loc in the embedded schema.
// It runs on the error path only.
func schemaProperties(loc string) []string {
	var root map[string]any
	if json.Unmarshal(schemaJSON, &root) != nil {
		return nil
	}
	node := root
	_, frag, _ := strings.Cut(loc, "#")
	for _, seg := range strings.Split(strings.Trim(frag, "/"), "/") {
		if seg == "" {
			continue
		}
		next, ok := node[seg].(map[string]any)
		if !ok {
			return nil
		}
		node = next
	}
	props, _ := node["properties"].(map[string]any)
	out := make([]string, 0, len(props))
	for k := range props {
		out = append(out, k)
	}
	return out
}

// namesOf lists an index's names.
func namesOf(index map[string]int) []string { return slices.Collect(maps.Keys(index)) }
