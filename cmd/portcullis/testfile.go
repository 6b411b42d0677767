package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/portcullis/portcullis/policies"
)

// This file reads the test files of `portcullis test`: JSON validated against the embedded,
// published schema, every problem located at its file:line:col and JSON path.

//go:embed testfile.schema.json
var testSchemaJSON []byte

// testSchemaURL is the test file schema's $id.
const testSchemaURL = "https://raw.githubusercontent.com/portcullis/portcullis/main/cmd/portcullis/testfile.schema.json"

// maxTestFileSize caps a test file.
const maxTestFileSize = 16 << 20

var testSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(testSchemaJSON))
	if err != nil {
		return nil, fmt.Errorf("parsing the test file schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(testSchemaURL, doc); err != nil {
		return nil, fmt.Errorf("adding the test file schema: %w", err)
	}
	return c.Compile(testSchemaURL)
})

// testFile is a decoded test file.
type testFile struct {
	Schema    string         `json:"$schema"`
	IssuerKey *testIssuerKey `json:"issuer_key"`
	Tests     []testCase     `json:"tests"`
}

// testIssuerKey stands in for the issuers' signing keys (testissuer.go).
type testIssuerKey struct {
	PrivateKey string `json:"private_key"`
	Algorithm  string `json:"algorithm"`
}

// testCase is one request and the decision expected of it.
type testCase struct {
	Name    string      `json:"name"`
	Request testRequest `json:"request"`
	After   int         `json:"after"`
	Expect  testExpect  `json:"expect"`
	// line is where the case starts in its file, for the report.
	line int
}

type testRequest struct {
	Method     string            `json:"method"`
	URL        string            `json:"url"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
	RemoteAddr string            `json:"remote_addr"`
	APIKey     string            `json:"apikey"`
	Basic      *struct {
		User     string `json:"user"`
		Password string `json:"password"`
	} `json:"basic"`
	HMAC *struct {
		KeyID     string   `json:"key_id"`
		Secret    string   `json:"secret"`
		Algorithm string   `json:"algorithm"`
		Headers   []string `json:"headers"`
	} `json:"hmac"`
	OIDC *struct {
		IdP    string         `json:"idp"`
		Claims map[string]any `json:"claims"`
	} `json:"oidc"`
	JWT *struct {
		Claims     map[string]any `json:"claims"`
		Secret     string         `json:"secret"`
		PrivateKey string         `json:"private_key"`
		Algorithm  string         `json:"algorithm"`
	} `json:"jwt"`
}

// testExpect is the expected decision. Nil fields are not checked.
type testExpect struct {
	Status   int               `json:"status"`
	Consumer *string           `json:"consumer"`
	Route    *string           `json:"route"`
	Step     string            `json:"step"`
	Headers  map[string]string `json:"headers"`
}

// readTestFile reads, validates and decodes a test file, resolving ${env:NAME} with lookupEnv.
// The error joins every problem found, each a *policies.Error.
func readTestFile(name string, lookupEnv func(string) (string, bool)) (*testFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, &policies.Error{File: name, Msg: err.Error()}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTestFileSize+1))
	if err != nil {
		return nil, &policies.Error{File: name, Msg: err.Error()}
	}
	if len(data) > maxTestFileSize {
		return nil, &policies.Error{File: name, Msg: fmt.Sprintf("larger than %d MiB", maxTestFileSize>>20)}
	}
	return parseTestFile(name, data, lookupEnv)
}

// parseTestFile is readTestFile on the bytes of file name.
func parseTestFile(name string, data []byte, lookupEnv func(string) (string, bool)) (*testFile, error) {
	src := policies.NewJSONFile(name, data)
	var tree any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		var se *json.SyntaxError
		off := len(data)
		if errors.As(err, &se) {
			off = int(se.Offset) - 1 // Decode reports the offset just past the offending byte
		}
		return nil, src.ErrAtOffset(off, "", "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, src.ErrAtOffset(int(dec.InputOffset()), "", "invalid JSON: unexpected data after the top-level value")
	}
	sch, err := testSchema()
	if err != nil {
		return nil, err
	}
	var errs []error
	if err := sch.Validate(tree); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return nil, fmt.Errorf("validating %s: %w", name, err)
		}
		for _, e := range schemaErrors(src, tree, ve) {
			errs = append(errs, e)
		}
		return nil, errors.Join(errs...)
	}

	tree = resolveEnv(src, "$", tree, lookupEnv, &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	resolved, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	var tf testFile
	dec = json.NewDecoder(bytes.NewReader(resolved))
	dec.DisallowUnknownFields() // the schema already refused them: a mismatch is a bug
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", name, err)
	}

	names := map[string]int{}
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		p := policies.IndexPath("$.tests", i)
		tc.line = src.Line(p)
		if first, dup := names[tc.Name]; dup {
			errs = append(errs, src.ErrAt(p+".name", "duplicate case name %q (first at line %d)", tc.Name, first))
		} else {
			names[tc.Name] = tc.line
		}
		if j := tc.Request.JWT; j != nil && (j.Secret == "") == (j.PrivateKey == "") {
			errs = append(errs, src.ErrAt(p+".request.jwt", "give exactly one of secret and private_key"))
		}
		if _, err := remoteAddr(tc.Request.RemoteAddr); err != nil {
			errs = append(errs, src.ErrAt(p+".request.remote_addr", "%v", err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &tf, nil
}

var schemaPrinter = message.NewPrinter(language.English)

// schemaErrors lists the leaf problems of a schema validation error, located.
func schemaErrors(src *policies.JSONFile, tree any, ve *jsonschema.ValidationError) []*policies.Error {
	if len(ve.Causes) > 0 {
		var out []*policies.Error
		for _, c := range ve.Causes {
			out = append(out, schemaErrors(src, tree, c)...)
		}
		return out
	}
	path := instanceJSONPath(tree, ve.InstanceLocation)
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		var out []*policies.Error
		for _, p := range k.Properties {
			out = append(out, src.ErrAtKey(policies.KeyPath(path, p), "unknown field %q", p))
		}
		return out
	case *kind.Required:
		var out []*policies.Error
		for _, p := range k.Missing {
			out = append(out, src.ErrAt(path, "missing required field %q", p))
		}
		return out
	case *kind.Type:
		return []*policies.Error{src.ErrAt(path, "got %s, want %s", k.Got, strings.Join(k.Want, " or "))}
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			b, _ := json.Marshal(w)
			want[i] = string(b)
		}
		got, _ := json.Marshal(k.Got)
		return []*policies.Error{src.ErrAt(path, "got %s, want one of %s", got, strings.Join(want, ", "))}
	case *kind.MinLength:
		return []*policies.Error{src.ErrAt(path, "must not be empty")}
	}
	return []*policies.Error{src.ErrAt(path, "%s", ve.ErrorKind.LocalizedString(schemaPrinter))}
}

// instanceJSONPath converts a schema instance location to a JSON path, telling array indices
// from object keys by the tree.
func instanceJSONPath(tree any, loc []string) string {
	p, node := "$", tree
	for _, seg := range loc {
		switch n := node.(type) {
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(n) {
				return policies.KeyPath(p, seg)
			}
			p, node = policies.IndexPath(p, i), n[i]
		case map[string]any:
			p, node = policies.KeyPath(p, seg), n[seg]
		default:
			return policies.KeyPath(p, seg)
		}
	}
	return p
}

// resolveEnv substitutes ${env:NAME} in every string of tree, the value at path; "$${" is a
// literal "${". Problems name the variable, never a value.
func resolveEnv(src *policies.JSONFile, path string, tree any, lookupEnv func(string) (string, bool), errs *[]error) any {
	switch n := tree.(type) {
	case map[string]any:
		for k, v := range n {
			n[k] = resolveEnv(src, policies.KeyPath(path, k), v, lookupEnv, errs)
		}
	case []any:
		for i, v := range n {
			n[i] = resolveEnv(src, policies.IndexPath(path, i), v, lookupEnv, errs)
		}
	case string:
		out, problems := policies.ExpandEnv(n, lookupEnv)
		for _, problem := range problems {
			*errs = append(*errs, src.ErrAt(path, "%s", problem))
		}
		return out
	}
	return tree
}
