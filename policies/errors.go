package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// Error is one problem of a policy, located in its source file. Load and Validate return
// every problem at once as an errors.Join of *Error values; use errors.As to get one, or
// Errors to get them all.
type Error struct {
	// File is the policy file; Line and Col (1-based, Col counts characters) point at the
	// offending value, or at the key for an unknown field. Line is 0 when the problem concerns
	// the file as a whole (unreadable, empty folder).
	File      string
	Line, Col int
	// Path is the JSON path of the offending value within File, like $.consumers[1].idps[0].idp.
	Path string
	// Msg says what is wrong. It never holds a secret value.
	Msg string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Col)
	}
	if e.Path != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Path, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// Errors returns the *Error values inside err (as returned by Load or Validate), in order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return out
}

// errorList collects problems; its err joins them sorted by file and position.
type errorList []*Error

func (l *errorList) add(e *Error) { *l = append(*l, e) }

func (l errorList) err() error {
	if len(l) == 0 {
		return nil
	}
	sorted := make([]*Error, len(l))
	copy(sorted, l)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	errs := make([]error, 0, len(sorted))
	seen := make(map[string]bool, len(sorted))
	for _, e := range sorted {
		// The schema may report one problem through two keywords; say it once.
		if s := e.Error(); !seen[s] {
			seen[s] = true
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// jsonPath is a JSON path in the $.a.b[0]["x-y"] notation.
type jsonPath string

const rootPath jsonPath = "$"

func (p jsonPath) key(k string) jsonPath {
	if isIdent(k) {
		return p + "." + jsonPath(k)
	}
	q, _ := json.Marshal(k)
	return p + "[" + jsonPath(q) + "]"
}

// isIdent matches ^[A-Za-z_][A-Za-z0-9_]*$.
func isIdent(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func (p jsonPath) index(i int) jsonPath { return p + "[" + jsonPath(strconv.Itoa(i)) + "]" }

// source is one policy file. Positions are found only when an error is reported: the locator
// and the line index are built on first use.
type source struct {
	name  string
	data  []byte
	loc   *locator
	lines *lineIndex
}

// lineCol converts a byte offset to a 1-based line and character column.
func (s *source) lineCol(off int) (int, int) {
	if off > len(s.data) {
		off = len(s.data)
	}
	if off < 0 {
		off = 0
	}
	if s.lines == nil {
		s.lines = newLineIndex(s.data)
	}
	return s.lines.lineCol(s.data, off)
}

func (s *source) locate(path jsonPath) (valueOff, keyOff int, found bool) {
	if s.loc == nil {
		s.loc = &locator{data: s.data}
	}
	return s.loc.find(path)
}

// errAt builds an error at the value of path (or the nearest enclosing value that exists).
func (s *source) errAt(path jsonPath, format string, args ...any) *Error {
	return s.errAtOffset(s.valueOffset(path), path, format, args...)
}

// errAtKey builds an error at the key of the member path (for unknown fields).
func (s *source) errAtKey(path jsonPath, format string, args ...any) *Error {
	if _, off, found := s.locate(path); found && off >= 0 {
		return s.errAtOffset(off, path, format, args...)
	}
	return s.errAt(path, format, args...)
}

func (s *source) errAtOffset(off int, path jsonPath, format string, args ...any) *Error {
	line, col := s.lineCol(off)
	return &Error{File: s.name, Line: line, Col: col, Path: string(path), Msg: fmt.Sprintf(format, args...)}
}

// where is "file:line:col" of path's value, for messages that point at another place.
func (s *source) where(path jsonPath) string {
	line, col := s.lineCol(s.valueOffset(path))
	return fmt.Sprintf("%s:%d:%d", s.name, line, col)
}

func (s *source) valueOffset(path jsonPath) int {
	off, _, _ := s.locate(path)
	return off
}

// parentPath strips the last segment of p.
func parentPath(p jsonPath) (jsonPath, bool) {
	if p == rootPath {
		return "", false
	}
	s := string(p)
	if s[len(s)-1] == ']' {
		// Either [n] or ["key"]; a quoted key may itself contain '[' so scan from the right
		// honouring quotes.
		inQuote := false
		for i := len(s) - 2; i >= 0; i-- {
			switch {
			case s[i] == '"' && (i == 0 || s[i-1] != '\\'):
				inQuote = !inQuote
			case s[i] == '[' && !inQuote:
				return jsonPath(s[:i]), true
			}
		}
		return rootPath, true
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return jsonPath(s[:i]), true
		}
	}
	return rootPath, true
}

// syntaxErrors words the syntax errors and duplicate keys of a file that the scanner
// rejected, the way encoding/json's tokenizer sees them. It is slow and only runs then. Its
// cost stays linear in the file: it keeps the path as segments, formats it only for an
// error, and stops at MaxDepth like the scanner.
func syntaxErrors(s *source) []*Error {
	r := parseSlow(s)
	if r.err != nil {
		return append([]*Error{r.err}, r.dups...)
	}
	if len(r.dups) > 0 {
		return r.dups
	}
	// The scanner and encoding/json disagree; say so rather than loading a file half-read.
	return []*Error{{File: s.name, Msg: "invalid JSON: the file could not be read"}}
}

// slowParse is what the slow parser finds in a file.
type slowParse struct {
	// err is the error it stopped at, if any; deep tells that it is the depth bound's.
	err  *Error
	deep bool
	// dups are the duplicate keys before err.
	dups []*Error
}

func parseSlow(s *source) slowParse {
	dec := json.NewDecoder(bytes.NewReader(s.data))
	dec.UseNumber()
	p := &parser{src: s, dec: dec}
	err := p.value()
	if err == nil {
		off := skipSpace(s.data, int(dec.InputOffset()))
		if _, terr := dec.Token(); terr != io.EOF {
			err = s.errAtOffset(off, rootPath, "invalid JSON: unexpected data after the top-level value")
		}
	}
	r := slowParse{dups: p.dups, deep: p.deep}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{File: s.name, Msg: err.Error()}
		}
		r.err = e
	}
	return r
}

// pathSeg is one segment of a path kept as segments, formatted only for an error.
type pathSeg struct {
	key   string
	index int // -1 for a key segment
}

// formatPath formats a path kept as segments, for an error.
func formatPath(segs []pathSeg) jsonPath {
	p := rootPath
	for _, seg := range segs {
		if seg.index >= 0 {
			p = p.index(seg.index)
		} else {
			p = p.key(seg.key)
		}
	}
	return p
}

type parser struct {
	src  *source
	dec  *json.Decoder
	dups []*Error
	// deep tells that the parser stopped at nesting deeper than MaxDepth.
	deep bool
	// path is the current value's path as segments; pathString formats it for an error.
	path []pathSeg
}

func (p *parser) pathString() jsonPath {
	return formatPath(p.path)
}

func (p *parser) syntax(err error) error {
	data := p.src.data
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// A Decoder's Token reports the offset of the offending byte (unlike Unmarshal's, which
		// is just past it).
		off := int(se.Offset)
		return p.src.errAtOffset(off, p.pathString(), "invalid JSON: %s", se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return p.src.errAtOffset(len(data), p.pathString(), "invalid JSON: unexpected end of file")
	default:
		return p.src.errAtOffset(int(p.dec.InputOffset()), p.pathString(), "invalid JSON: %s", err.Error())
	}
}

func (p *parser) value() error {
	start := skipSpace(p.src.data, int(p.dec.InputOffset()))
	tok, err := p.dec.Token()
	if err != nil {
		return p.syntax(err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			if len(p.path) >= MaxDepth {
				return p.tooDeep(start)
			}
			// First occurrence of each key, for the duplicate-key message.
			keys := map[string]int{}
			p.path = append(p.path, pathSeg{index: -1})
			seg := len(p.path) - 1
			for p.dec.More() {
				keyStart := skipSpace(p.src.data, int(p.dec.InputOffset()))
				kt, err := p.dec.Token()
				if err != nil {
					p.path = p.path[:seg]
					return p.syntax(err)
				}
				k, ok := kt.(string)
				if !ok {
					p.path = p.path[:seg]
					return p.src.errAtOffset(keyStart, p.pathString(), "invalid JSON: object key must be a string")
				}
				p.path[seg].key = k
				if first, dup := keys[k]; dup {
					line, col := p.src.lineCol(first)
					p.dups = append(p.dups, p.src.errAtOffset(keyStart, p.pathString(), "duplicate key %q (first at line %d, column %d)", k, line, col))
				} else {
					keys[k] = keyStart
				}
				if err := p.value(); err != nil {
					return err
				}
			}
			p.path = p.path[:seg]
			if _, err := p.dec.Token(); err != nil {
				return p.syntax(err)
			}
			return nil
		case '[':
			if len(p.path) >= MaxDepth {
				return p.tooDeep(start)
			}
			p.path = append(p.path, pathSeg{})
			seg := len(p.path) - 1
			for i := 0; p.dec.More(); i++ {
				p.path[seg].index = i
				if err := p.value(); err != nil {
					return err
				}
			}
			p.path = p.path[:seg]
			if _, err := p.dec.Token(); err != nil {
				return p.syntax(err)
			}
			return nil
		default:
			return p.src.errAtOffset(start, p.pathString(), "invalid JSON: unexpected %q", string(t))
		}
	default:
		return nil
	}
}

func (p *parser) tooDeep(start int) error {
	p.deep = true
	return p.src.errAtOffset(start, p.pathString(), "nesting deeper than %d levels of arrays and objects", MaxDepth)
}

// skipSpace advances off past whitespace and the ':' and ',' separators that the decoder
// consumes silently before the next token.
func skipSpace(data []byte, off int) int {
	for off < len(data) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ':', ',':
			off++
		default:
			return off
		}
	}
	return off
}
