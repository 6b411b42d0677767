package policies

import (
	"bytes"
	"errors"
	"io"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// MaxDepth is the deepest nesting of arrays and objects a policy file may have. A policy
// needs about eight levels; the bound keeps every later stage (the generic tree, the schema
// engine, the error paths) linear in the file's size, where 100 000 nested "[" would
// otherwise cost gigabytes. The scanner, the first reader of every file, enforces it.
const MaxDepth = 64

// member is one top-level member of a policy file.
type member struct {
	key        string
	start, end int // the value's bytes
}

// span is the bytes of one value in a file.
type span struct{ start, end int }

// scan is what one validating pass over a file finds.
type scan struct {
	// rootObject tells that the top-level value is an object; members are then its members.
	rootObject bool
	members    []member
	// consumers are the elements of the top-level "consumers" array; consumersArray tells
	// that it is an array.
	consumersArray bool
	consumers      []span
	// dups are the duplicate keys found, as the slow parser reports them.
	dups []*Error
	// tooDeep is the error at the first value nested deeper than MaxDepth; the scan stops there.
	tooDeep *Error
}

// scanner checks that a file is JSON exactly as encoding/json accepts it, finds duplicate keys
// and records the top-level layout, without building anything per value. The tokenizer is
// jsontext's (the staging module of encoding/json/v2), which validates the grammar and rejects
// duplicate names as it goes; the scanner adds the depth bound and the layout. It does not
// word syntax errors: on one it stops, and the caller asks the slow parser (syntaxErrors) for
// the message, in encoding/json's words.
type scanner struct {
	src *source
	dec *jsontext.Decoder
	out scan
}

// errTooDeep stops a scan at nesting deeper than MaxDepth; out.tooDeep words it.
var errTooDeep = errors.New("nesting too deep")

// scanSource validates src. ok is false on a syntax error (including trailing data) and on
// nesting deeper than MaxDepth, which the returned scan's tooDeep then reports.
func scanSource(src *source) (scan, bool) {
	s := &scanner{
		src: src,
		// A bytes.Buffer is read in place, without a copy. encoding/json, which the rest of
		// the loader decodes with, takes invalid UTF-8 (as U+FFFD), so the scanner does too.
		dec: jsontext.NewDecoder(bytes.NewBuffer(src.data), jsontext.AllowInvalidUTF8(true)),
	}
	err := s.root()
	if err == nil {
		// jsontext reads a stream of values; a policy file is one.
		if _, terr := s.dec.ReadToken(); terr != io.EOF {
			return scan{}, false
		}
		return s.out, true
	}
	if errors.Is(err, errTooDeep) {
		return scan{tooDeep: s.out.tooDeep}, false
	}
	if errors.Is(err, jsontext.ErrDuplicateName) {
		// jsontext stops at the first duplicate; the slow parser finds them all, each with
		// where its key first appeared, and whatever else is wrong after it.
		r := parseSlow(src)
		switch {
		case r.deep:
			return scan{tooDeep: r.err}, false
		case r.err != nil:
			return scan{}, false
		}
		return scan{dups: r.dups}, true
	}
	return scan{}, false
}

// root reads the top-level value, recording the layout of an object.
func (s *scanner) root() error {
	if s.dec.PeekKind() != '{' {
		return s.value()
	}
	if _, err := s.dec.ReadToken(); err != nil {
		return err
	}
	for s.dec.PeekKind() != '}' {
		name, err := s.dec.ReadToken()
		if err != nil {
			return err
		}
		k := name.String()
		start := skipSpace(s.src.data, int(s.dec.InputOffset()))
		if k == "consumers" && s.dec.PeekKind() == '[' {
			s.out.consumersArray = true
			err = s.consumersArray()
		} else {
			err = s.value()
		}
		if err != nil {
			return err
		}
		s.out.members = append(s.out.members, member{key: k, start: start, end: int(s.dec.InputOffset())})
	}
	if _, err := s.dec.ReadToken(); err != nil {
		return err
	}
	s.out.rootObject = true
	return nil
}

// consumersArray reads the top-level consumers array, recording each element's span.
func (s *scanner) consumersArray() error {
	if err := s.begin(); err != nil {
		return err
	}
	for s.dec.PeekKind() != ']' {
		start := skipSpace(s.src.data, int(s.dec.InputOffset()))
		if err := s.value(); err != nil {
			return err
		}
		s.out.consumers = append(s.out.consumers, span{start, int(s.dec.InputOffset())})
	}
	_, err := s.dec.ReadToken()
	return err
}

// value reads one value, checking its depth. Its recursion stops at MaxDepth.
func (s *scanner) value() error {
	switch s.dec.PeekKind() {
	case '{', '[':
	default:
		// A scalar, or invalid input, which ReadToken reports.
		_, err := s.dec.ReadToken()
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	for {
		switch s.dec.PeekKind() {
		case '}', ']':
			_, err := s.dec.ReadToken()
			return err
		case '"':
			if k, _ := s.dec.StackIndex(s.dec.StackDepth()); k == '{' {
				// A member's name: jsontext checks that it is unique.
				if _, err := s.dec.ReadToken(); err != nil {
					return err
				}
			}
		}
		if err := s.value(); err != nil {
			return err
		}
	}
}

// begin reads the '{' or '[' that opens a value, refusing one level of nesting too many.
func (s *scanner) begin() error {
	if _, err := s.dec.ReadToken(); err != nil {
		return err
	}
	if s.dec.StackDepth() > MaxDepth {
		s.out.tooDeep = s.src.errAtOffset(int(s.dec.InputOffset())-1, s.stackPath(), "nesting deeper than %d levels of arrays and objects", MaxDepth)
		return errTooDeep
	}
	return nil
}

// stackPath is the path of the value just opened, for an error: jsontext's JSON Pointer to
// it, with the kind of each enclosing level telling an array index from an object key.
func (s *scanner) stackPath() jsonPath {
	p, level := rootPath, 1
	for tok := range s.dec.StackPointer().Tokens() {
		if k, _ := s.dec.StackIndex(level); k == '[' {
			i, _ := strconv.Atoi(tok)
			p = p.index(i)
		} else {
			p = p.key(tok)
		}
		level++
	}
	return p
}
