package policies

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// file is one policy file after the per-file stage (syntax, schema, secrets).
//
// A file's consumers array can be huge, so its elements are not put through the generic path
// (a generic tree, the JSON Schema engine, a Marshal/Decode round trip): the fast consumer
// decoder decodes those it can straight into Consumers, and only the others take the generic
// path, one element at a time. The rest of the file is small and always takes it.
type file struct {
	src *source
	// top is the file's generic tree with secrets substituted; when split, its consumers
	// array is left out.
	top   any
	split bool
	// When split: every consumer, and the trees of those left to the generic path (by index),
	// decoded in stage 2.
	consumers []Consumer
	slow      map[int]any
}

// readFile checks one file and reports its problems into errs. It returns nil when the file's
// syntax is wrong (nothing else is checked then); a non-nil error is not the policy's fault.
// slowConsumers sends every consumer the generic way (tests compare both ways).
func readFile(f rawFile, sch *schemas, res *resolver, slowConsumers bool, errs *errorList) (*file, error) {
	src := &source{name: f.name, data: f.data}
	sc, ok := scanSource(src)
	if !ok {
		if sc.tooDeep != nil {
			// Positioned already; the slow parser must not walk such a file.
			errs.add(sc.tooDeep)
			return nil, nil
		}
		*errs = append(*errs, syntaxErrors(src)...)
		return nil, nil
	}
	if len(sc.dups) > 0 {
		*errs = append(*errs, sc.dups...)
		return nil, nil
	}
	fl := &file{src: src}
	if !sc.rootObject || !sc.consumersArray {
		tree, err := decodeAny(f.data)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", f.name, err)
		}
		if err := schemaCheck(src, sch.policy, rootPath, tree, errs); err != nil {
			return nil, err
		}
		fl.top = res.resolveTree(src, rootPath, tree, errs)
		return fl, nil
	}

	top := make(map[string]any, len(sc.members))
	for _, m := range sc.members {
		if m.key == "consumers" {
			// Checked element by element below.
			top[m.key] = []any{}
			continue
		}
		v, err := decodeAny(f.data[m.start:m.end])
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", f.name, err)
		}
		top[m.key] = v
	}
	if err := schemaCheck(src, sch.policy, rootPath, top, errs); err != nil {
		return nil, err
	}
	fl.top = res.resolveTree(src, rootPath, top, errs)
	fl.split = true

	n := len(sc.consumers)
	fl.consumers = make([]Consumer, n)
	dec := newConsumerDecoder(res, sch)
	for i, sp := range sc.consumers {
		span := f.data[sp.start:sp.end]
		if !slowConsumers && dec.decode(span, &fl.consumers[i]) {
			continue
		}
		tree, err := decodeAny(span)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", f.name, err)
		}
		base := rootPath.key("consumers").index(i)
		if err := schemaCheck(src, sch.consumer, base, tree, errs); err != nil {
			return nil, err
		}
		if fl.slow == nil {
			fl.slow = map[int]any{}
		}
		fl.slow[i] = res.resolveTree(src, base, tree, errs)
	}
	return fl, nil
}

func schemaCheck(src *source, sch *jsonschema.Schema, base jsonPath, tree any, errs *errorList) error {
	serrs, err := validateSchema(src, sch, base, tree)
	if err != nil {
		return err
	}
	*errs = append(*errs, serrs...)
	return nil
}

// decodeAny decodes JSON the way the schema engine reads it (numbers as json.Number).
func decodeAny(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeStrict decodes a generic tree into dst, rejecting unknown fields.
func decodeStrict(tree any, dst any) (reencode bool, err error) {
	raw, err := json.Marshal(tree)
	if err != nil {
		return true, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return false, dec.Decode(dst)
}

// decode returns the file's typed policy with the binding field masks of the consumers whose
// typed bindings cannot tell which fields were written (those decoded generically: a
// reference may have substituted ""), by the consumer's index in the file.
func (f *file) decode(res *resolver) (Policy, map[int][]uint32, *Error) {
	if !f.split {
		return f.decodeWhole(f.top)
	}
	var p Policy
	top, _ := f.top.(map[string]any)
	delete(top, "$schema")
	delete(top, "consumers")
	if _, err := decodeStrict(top, &p); err != nil {
		return f.exact(res)
	}
	p.Consumers = f.consumers
	var masks map[int][]uint32
	for i, tree := range f.slow {
		if _, err := decodeStrict(tree, &p.Consumers[i]); err != nil {
			return f.exact(res)
		}
		if mk := consumerMasks(tree); mk != nil {
			if masks == nil {
				masks = map[int][]uint32{}
			}
			masks[i] = mk
		}
	}
	// The trees are not needed any more; the policy is.
	f.top, f.slow, f.consumers = nil, nil, nil
	return p, masks, nil
}

// exact decodes the whole file in one piece, for the wording of a decoding error exactly as
// for the whole document.
func (f *file) exact(res *resolver) (Policy, map[int][]uint32, *Error) {
	tree, err := decodeAny(f.src.data)
	if err != nil {
		return Policy{}, nil, &Error{File: f.src.name, Msg: "decoding the policy: " + err.Error()}
	}
	var discard errorList
	return f.decodeWhole(res.resolveTree(f.src, rootPath, tree, &discard))
}

func (f *file) decodeWhole(tree any) (Policy, map[int][]uint32, *Error) {
	root, _ := tree.(map[string]any)
	delete(root, "$schema")
	var p Policy
	if reencode, err := decodeStrict(root, &p); err != nil {
		if reencode {
			return Policy{}, nil, &Error{File: f.src.name, Msg: "re-encoding the policy: " + err.Error()}
		}
		// The schema admits only what decodes; this is a schema gap.
		return Policy{}, nil, &Error{File: f.src.name, Msg: "decoding the policy: " + err.Error()}
	}
	var masks map[int][]uint32
	arr, _ := root["consumers"].([]any)
	for i, node := range arr {
		if mk := consumerMasks(node); mk != nil {
			if masks == nil {
				masks = map[int][]uint32{}
			}
			masks[i] = mk
		}
	}
	f.top = nil
	return p, masks, nil
}

// consumerMasks returns the field masks of a generically decoded consumer's bindings.
func consumerMasks(node any) []uint32 {
	obj, _ := node.(map[string]any)
	bnodes, _ := obj["idps"].([]any)
	if len(bnodes) == 0 {
		return nil
	}
	out := make([]uint32, len(bnodes))
	for j, bn := range bnodes {
		b, _ := bn.(map[string]any)
		for k := range b {
			out[j] |= bindingFieldBit(k)
		}
	}
	return out
}

// bindingFieldNames are the binding's JSON fields in sorted order; bit i of a mask stands for
// bindingFieldNames[i].
var bindingFieldNames = [...]string{
	"algorithm", "claims", "client_roles", "groups", "id", "idp", "key", "key_id", "password",
	"permissions", "public_key", "realm_roles", "scopes", "secret", "subject", "username",
}

func bindingFieldBit(name string) uint32 {
	for i, n := range bindingFieldNames {
		if n == name {
			return 1 << i
		}
	}
	return 0
}

// The bindingFieldNames bits.
const (
	fieldAlgorithm uint32 = 1 << iota
	fieldClaims
	fieldClientRoles
	fieldGroups
	fieldID
	fieldIdP
	fieldKey
	fieldKeyID
	fieldPassword
	fieldPermissions
	fieldPublicKey
	fieldRealmRoles
	fieldScopes
	fieldSecret
	fieldSubject
	fieldUsername
)

// fieldMask is the fields a typed binding holds. It is exact for bindings decoded by the fast
// decoder, which declines a field whose reference substitutes "" and decodes [] and {} to
// non-nil values.
func (b *Binding) fieldMask() uint32 {
	var m uint32
	for _, f := range [...]struct {
		bit     uint32
		present bool
	}{
		{fieldAlgorithm, b.Algorithm != ""},
		{fieldClaims, b.Claims != nil},
		{fieldClientRoles, b.ClientRoles != nil},
		{fieldGroups, b.Groups != nil},
		{fieldID, b.ID != ""},
		{fieldIdP, b.IdP != ""},
		{fieldKey, b.Key != ""},
		{fieldKeyID, b.KeyID != ""},
		{fieldPassword, b.Password != ""},
		{fieldPermissions, b.Permissions != nil},
		{fieldPublicKey, b.PublicKey != ""},
		{fieldRealmRoles, b.RealmRoles != nil},
		{fieldScopes, b.Scopes != nil},
		{fieldSecret, b.Secret != ""},
		{fieldSubject, b.Subject != ""},
		{fieldUsername, b.Username != ""},
	} {
		if f.present {
			m |= f.bit
		}
	}
	return m
}
