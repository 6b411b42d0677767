package policies

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed policy.schema.json
var schemaJSON []byte

// Schema returns the published JSON Schema (draft 2020-12) of a policy file, for editors and
// for the CLI to print. The caller owns the returned copy.
func Schema() []byte { return bytes.Clone(schemaJSON) }

// SchemaURL is the schema's $id.
const SchemaURL = "https://raw.githubusercontent.com/portcullis/portcullis/main/policies/policy.schema.json"

// schemas are the embedded schema compiled once: the whole policy, and the consumer definition
// alone for validating the elements of a large consumers array one by one. Immutable.
type schemas struct {
	policy, consumer *jsonschema.Schema
	// duration is the schema's duration pattern, for the fast consumer decoder.
	duration *regexp.Regexp
	// limits are the schema's bounds and enums of a limit's fields, for the fast consumer
	// decoder, so that it can never accept what validate refuses.
	limits limitRules
}

// limitRules are what the schema allows in limit-count's and limit-req's fields that the fast
// consumer decoder checks itself: the bounds of the numbers and the values of the enums.
type limitRules struct {
	count, timeWindow, countCode   intRange
	rate, burst                    numRange
	reqCode                        intRange
	countKey, countPolicy, windows []string
	reqKey, reqPolicy              []string
}

// intRange is an integer's inclusive bounds.
type intRange struct{ lo, hi int }

// numRange is a number's bounds: above lo (at least lo when loInclusive), at most hi.
type numRange struct {
	lo          float64
	loInclusive bool
	hi          float64
}

var compiledSchemas = sync.OnceValues(func() (*schemas, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("parsing the policy schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaURL, doc); err != nil {
		return nil, fmt.Errorf("adding the policy schema: %w", err)
	}
	var out schemas
	if out.policy, err = c.Compile(SchemaURL); err != nil {
		return nil, fmt.Errorf("compiling the policy schema: %w", err)
	}
	if out.consumer, err = c.Compile(SchemaURL + "#/$defs/consumer"); err != nil {
		return nil, fmt.Errorf("compiling the policy schema's consumer: %w", err)
	}
	var defs struct {
		Defs struct {
			Duration struct {
				Pattern string `json:"pattern"`
			} `json:"duration"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(schemaJSON, &defs); err != nil {
		return nil, fmt.Errorf("reading the policy schema's duration pattern: %w", err)
	}
	if out.duration, err = regexp.Compile(defs.Defs.Duration.Pattern); err != nil {
		return nil, fmt.Errorf("compiling the policy schema's duration pattern: %w", err)
	}
	if out.limits, err = readLimitRules(out.consumer); err != nil {
		return nil, fmt.Errorf("reading the policy schema's limits: %w", err)
	}
	return &out, nil
})

// readLimitRules reads limitRules from the compiled consumer schema. It fails on a rule the
// fast decoder cannot check (an exclusive maximum, a bound that is not exact), so that a
// change to the schema cannot silently widen what the decoder accepts.
func readLimitRules(consumer *jsonschema.Schema) (limitRules, error) {
	plugins := property(consumer, "plugins")
	lc, lr := property(plugins, "limit-count"), property(plugins, "limit-req")
	var r limitRules
	var errs []error
	ints := func(obj *jsonschema.Schema, name string, dst *intRange) {
		var err error
		if *dst, err = integerRange(property(obj, name)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	nums := func(obj *jsonschema.Schema, name string, dst *numRange) {
		var err error
		if *dst, err = numberRange(property(obj, name)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	enums := func(obj *jsonschema.Schema, name string, dst *[]string) {
		var err error
		if *dst, err = stringEnum(property(obj, name)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	ints(lc, "count", &r.count)
	ints(lc, "time_window", &r.timeWindow)
	ints(lc, "rejected_code", &r.countCode)
	enums(lc, "key", &r.countKey)
	enums(lc, "policy", &r.countPolicy)
	enums(lc, "window_type", &r.windows)
	nums(lr, "rate", &r.rate)
	nums(lr, "burst", &r.burst)
	ints(lr, "rejected_code", &r.reqCode)
	enums(lr, "key", &r.reqKey)
	enums(lr, "policy", &r.reqPolicy)
	return r, errors.Join(errs...)
}

// resolved follows a schema's $ref (a property that is only a reference to a definition).
func resolved(s *jsonschema.Schema) *jsonschema.Schema {
	for s != nil && s.Ref != nil {
		s = s.Ref
	}
	return s
}

// property is the resolved schema of an object schema's property, nil if it has none.
func property(obj *jsonschema.Schema, name string) *jsonschema.Schema {
	if obj = resolved(obj); obj == nil {
		return nil
	}
	return resolved(obj.Properties[name])
}

func integerRange(s *jsonschema.Schema) (intRange, error) {
	switch {
	case s == nil:
		return intRange{}, errors.New("not in the schema")
	case s.Minimum == nil || s.Maximum == nil || s.ExclusiveMinimum != nil || s.ExclusiveMaximum != nil:
		return intRange{}, errors.New("want an inclusive minimum and maximum")
	case !s.Minimum.IsInt() || !s.Maximum.IsInt() || !s.Minimum.Num().IsInt64() || !s.Maximum.Num().IsInt64():
		return intRange{}, fmt.Errorf("want integer bounds, got %s and %s", s.Minimum.RatString(), s.Maximum.RatString())
	}
	return intRange{lo: int(s.Minimum.Num().Int64()), hi: int(s.Maximum.Num().Int64())}, nil
}

func numberRange(s *jsonschema.Schema) (numRange, error) {
	if s == nil {
		return numRange{}, errors.New("not in the schema")
	}
	lo, inclusive := s.Minimum, true
	if lo == nil {
		lo, inclusive = s.ExclusiveMinimum, false
	}
	if lo == nil || s.Maximum == nil || s.ExclusiveMaximum != nil || (s.Minimum != nil && s.ExclusiveMinimum != nil) {
		return numRange{}, errors.New("want one minimum, inclusive or not, and an inclusive maximum")
	}
	l, lexact := lo.Float64()
	h, hexact := s.Maximum.Float64()
	if !lexact || !hexact {
		return numRange{}, fmt.Errorf("want bounds that a float64 holds exactly, got %s and %s", lo.RatString(), s.Maximum.RatString())
	}
	return numRange{lo: l, loInclusive: inclusive, hi: h}, nil
}

func stringEnum(s *jsonschema.Schema) ([]string, error) {
	if s == nil || s.Enum == nil {
		return nil, errors.New("want an enum")
	}
	out := make([]string, len(s.Enum.Values))
	for i, v := range s.Enum.Values {
		str, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want an enum of strings, got %v", v)
		}
		out[i] = str
	}
	return out, nil
}

// compiledSchema is the schema of a whole policy.
func compiledSchema() (*jsonschema.Schema, error) {
	s, err := compiledSchemas()
	if err != nil {
		return nil, err
	}
	return s.policy, nil
}

var printer = message.NewPrinter(language.English)

// validateSchema checks tree, the value at base in src, against sch and returns every leaf
// problem.
func validateSchema(src *source, sch *jsonschema.Schema, base jsonPath, tree any) ([]*Error, error) {
	err := sch.Validate(tree)
	if err == nil {
		return nil, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, fmt.Errorf("validating %s against the schema: %w", src.name, err)
	}
	var all []*Error
	n := &schemaNotes{unknown: map[string]bool{}, misspelt: map[string]bool{}, required: map[*Error]string{}}
	collectSchemaErrors(src, base, tree, ve, nil, &all, n)
	out := all[:0]
	for _, e := range all {
		// An unknown field also fails the per-type propertyNames rule; say it once, as unknown.
		if n.unknown[e.Path] && !strings.HasPrefix(e.Msg, "unknown field") {
			continue
		}
		// A misspelt required field is one mistake: its "did you mean" says it all.
		if key, ok := n.required[e]; ok && n.misspelt[key] {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// schemaNotes is what collecting the schema errors learns beyond the errors themselves.
type schemaNotes struct {
	// unknown are the paths of unknown fields.
	unknown map[string]bool
	// misspelt holds object path + "\x00" + field for the fields an unknown one is a typo of;
	// required maps each missing-field error to that same key.
	misspelt map[string]bool
	required map[*Error]string
}

func collectSchemaErrors(src *source, base jsonPath, tree any, ve *jsonschema.ValidationError, parentLoc []string, out *[]*Error, n *schemaNotes) {
	// propertyNames' causes only restate the enum; the kind itself names the field.
	_, isPropNames := ve.ErrorKind.(*kind.PropertyNames)
	if !isPropNames && len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collectSchemaErrors(src, base, tree, c, ve.InstanceLocation, out, n)
		}
		return
	}
	loc := ve.InstanceLocation
	if isPropNames {
		// jsonschema v6.0.3 reuses the slice of a propertyNames error's location, so it may
		// hold another value's; the enclosing error is at the same object.
		loc = parentLoc
	}
	path, node := instancePath(base, tree, loc)
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			n.unknown[string(path.key(p))] = true
			hint, meant := fieldHint(ve.SchemaURL, p)
			if meant != "" {
				n.misspelt[string(path)+"\x00"+meant] = true
			}
			*out = append(*out, src.errAtKey(path.key(p), "unknown field %q%s", p, hint))
		}
	case *kind.PropertyNames:
		msg := fmt.Sprintf("field %q is not allowed here", k.Property)
		if obj, ok := node.(map[string]any); ok {
			if t, ok := obj["type"].(string); ok {
				msg = fmt.Sprintf("field %q is not valid for an idp of type %q", k.Property, t)
			}
		}
		*out = append(*out, src.errAtKey(path.key(k.Property), "%s", msg))
	case *kind.Required:
		for _, p := range k.Missing {
			e := src.errAt(path, "missing required field %q", p)
			n.required[e] = string(path) + "\x00" + p
			*out = append(*out, e)
		}
	case *kind.FalseSchema:
		*out = append(*out, src.errAt(path, "value not allowed here"))
	default:
		*out = append(*out, src.errAt(path, "%s", schemaMessage(ve)))
	}
}

// schemaMessage words the common schema failures for people writing policies.
func schemaMessage(ve *jsonschema.ValidationError) string {
	switch k := ve.ErrorKind.(type) {
	case *kind.Pattern:
		if strings.HasSuffix(ve.SchemaURL, "#/$defs/duration") {
			return fmt.Sprintf("invalid duration %q: want a Go duration like \"30s\" or \"1m30s\"", k.Got)
		}
		return fmt.Sprintf("%q does not match %q", k.Got, k.Want)
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			b, _ := json.Marshal(w)
			want[i] = string(b)
		}
		got, _ := json.Marshal(k.Got)
		return fmt.Sprintf("got %s, want one of %s", got, strings.Join(want, ", "))
	case *kind.Type:
		if strings.HasSuffix(ve.SchemaURL, "#/$defs/duration") && k.Got == "number" {
			return "got a number, want a duration string such as \"5s\" or \"1m30s\""
		}
		return fmt.Sprintf("got %s, want %s", k.Got, strings.Join(k.Want, " or "))
	case *kind.Minimum:
		return fmt.Sprintf("must be at least %s, got %s", k.Want.RatString(), k.Got.RatString())
	case *kind.Maximum:
		return fmt.Sprintf("must be at most %s, got %s", k.Want.RatString(), k.Got.RatString())
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("must be greater than %s, got %s", k.Want.RatString(), k.Got.RatString())
	case *kind.MinItems:
		return fmt.Sprintf("needs at least %d item(s), got %d", k.Want, k.Got)
	case *kind.MinLength:
		return "must not be empty"
	case *kind.UniqueItems:
		return fmt.Sprintf("items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	}
	return ve.ErrorKind.LocalizedString(printer)
}

// instancePath converts a schema instance location to a JSON path, using the tree to tell
// array indices from object keys, and returns the value at that location.
func instancePath(base jsonPath, tree any, loc []string) (jsonPath, any) {
	p, node := base, tree
	for _, seg := range loc {
		switch n := node.(type) {
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(n) {
				return p.key(seg), nil
			}
			p, node = p.index(i), n[i]
		case map[string]any:
			p, node = p.key(seg), n[seg]
		default:
			return p.key(seg), nil
		}
	}
	return p, node
}
