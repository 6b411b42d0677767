package policies

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
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

// scan is what one validating pass over a file finds.
type scan struct {
	// rootObject tells that the top-level value is an object; members are then its members.
	rootObject bool
	members    []member
	// consumers are the start offsets of the elements of the top-level "consumers" array;
	// consumersArray tells that it is an array.
	consumersArray bool
	consumers      []int
	// dups are the duplicate keys found, as the slow parser would report them.
	dups []*Error
	// tooDeep is the error at the first value nested deeper than MaxDepth; the scan stops there.
	tooDeep *Error
}

// scanner checks that a file is JSON exactly as encoding/json accepts it, finds duplicate keys
// and records the top-level layout, without building anything per value. It does not word
// syntax errors: on one it stops, and the caller asks the slow parser for the message.
type scanner struct {
	src   *source
	data  []byte
	pos   int
	depth int
	// path is the path of the current value, kept as segments and only formatted for an error.
	path []pathSeg
	out  scan
}

type pathSeg struct {
	key   string
	index int // -1 for a key segment
}

// scanSource validates src. ok is false on a syntax error (including trailing data) and on
// nesting deeper than MaxDepth, which the returned scan's tooDeep then reports.
func scanSource(src *source) (scan, bool) {
	s := &scanner{src: src, data: src.data}
	s.skipWS()
	if !s.value() {
		return scan{tooDeep: s.out.tooDeep}, false
	}
	s.skipWS()
	if s.pos != len(s.data) {
		return scan{}, false
	}
	return s.out, true
}

func (s *scanner) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) value() bool {
	if s.pos >= len(s.data) {
		return false
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

func (s *scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return false
	}
	s.pos += len(lit)
	return true
}

func (s *scanner) number() bool {
	d, i := s.data, s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return false
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return false
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	s.pos = i
	return true
}

// str consumes a string and returns its raw bytes between the quotes.
func (s *scanner) str() ([]byte, bool) {
	d := s.data
	start := s.pos + 1
	for i := start; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return d[start:i], true
		case c < 0x20:
			return nil, false
		case c == '\\':
			i++
			if i >= len(d) {
				return nil, false
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) {
					return nil, false
				}
				for _, h := range d[i+1 : i+5] {
					if !isHex(h) {
						return nil, false
					}
				}
				i += 4
			default:
				return nil, false
			}
		}
	}
	return nil, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// decodeKey returns a key's string as encoding/json decodes it (escapes, invalid UTF-8).
func decodeKey(raw []byte) string {
	if simpleString(raw) {
		return string(raw)
	}
	var k string
	// Quoting again is safe: raw is a valid JSON string body.
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	if err := json.Unmarshal(q, &k); err != nil {
		return string(raw)
	}
	return k
}

// simpleString tells that a raw string body decodes to itself: no escapes, only ASCII.
func simpleString(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

type seenKey struct {
	name string
	off  int
}

// enter counts one more level of nesting at the '{' or '[' at s.pos; false when it is one
// too many. The path is formatted once, for the error, and is at most MaxDepth segments.
func (s *scanner) enter() bool {
	if s.depth++; s.depth > MaxDepth {
		s.out.tooDeep = s.src.errAtOffset(s.pos, s.pathString(), "nesting deeper than %d levels of arrays and objects", MaxDepth)
		return false
	}
	return true
}

func (s *scanner) object() bool {
	if !s.enter() {
		return false
	}
	defer func() { s.depth-- }()
	top := s.depth == 1
	s.pos++ // '{'
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return true
	}
	var small [8]seenKey
	seen := small[:0]
	var big map[string]int
	s.path = append(s.path, pathSeg{index: -1})
	seg := len(s.path) - 1
	for {
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return false
		}
		keyOff := s.pos
		raw, ok := s.str()
		if !ok {
			return false
		}
		k := decodeKey(raw)
		first, dup := -1, false
		if big != nil {
			first, dup = big[k]
		} else {
			for _, e := range seen {
				if e.name == k {
					first, dup = e.off, true
					break
				}
			}
		}
		s.path[seg].key = k
		if dup {
			line, col := s.src.lineCol(first)
			s.out.dups = append(s.out.dups, s.src.errAtOffset(keyOff, s.pathString(), "duplicate key %q (first at line %d, column %d)", k, line, col))
		} else if big != nil {
			big[k] = keyOff
		} else if len(seen) < cap(small) {
			seen = append(seen, seenKey{k, keyOff})
		} else {
			big = make(map[string]int, 2*len(seen))
			for _, e := range seen {
				big[e.name] = e.off
			}
			big[k] = keyOff
		}
		s.skipWS()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return false
		}
		s.pos++
		s.skipWS()
		start := s.pos
		var vok bool
		if top && k == "consumers" && s.pos < len(s.data) && s.data[s.pos] == '[' && !dup {
			s.out.consumersArray = true
			vok = s.consumersArray()
		} else {
			vok = s.value()
		}
		if !vok {
			return false
		}
		if top && !dup {
			s.out.members = append(s.out.members, member{key: k, start: start, end: s.pos})
		}
		s.skipWS()
		if s.pos >= len(s.data) {
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipWS()
		case '}':
			s.pos++
			s.path = s.path[:seg]
			if top {
				s.out.rootObject = true
			}
			return true
		default:
			return false
		}
	}
}

func (s *scanner) array() bool {
	return s.elements(nil)
}

// consumersArray scans the top-level consumers array, recording each element's span.
func (s *scanner) consumersArray() bool {
	return s.elements(func(start, _ int) { s.out.consumers = append(s.out.consumers, start) })
}

func (s *scanner) elements(record func(start, end int)) bool {
	if !s.enter() {
		return false
	}
	defer func() { s.depth-- }()
	s.pos++ // '['
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return true
	}
	s.path = append(s.path, pathSeg{})
	seg := len(s.path) - 1
	for i := 0; ; i++ {
		s.path[seg].index = i
		start := s.pos
		if !s.value() {
			return false
		}
		if record != nil {
			record(start, s.pos)
		}
		s.skipWS()
		if s.pos >= len(s.data) {
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipWS()
		case ']':
			s.pos++
			s.path = s.path[:seg]
			return true
		default:
			return false
		}
	}
}

func (s *scanner) pathString() jsonPath { return formatPath(s.path) }

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

// skipValue returns the end of the valid JSON value at off (which follows no whitespace).
func skipValue(d []byte, off int) int {
	switch d[off] {
	case '{', '[':
		depth := 0
		for i := off; i < len(d); i++ {
			switch d[i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			case '"':
				i = skipString(d, i) - 1
			}
		}
		return len(d)
	case '"':
		return skipString(d, off)
	}
	i := off
	for i < len(d) {
		switch d[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// skipString returns the offset just past the string starting at off.
func skipString(d []byte, off int) int {
	for i := off + 1; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(d)
}

func skipWSAt(d []byte, off int) int {
	for off < len(d) {
		switch d[off] {
		case ' ', '\t', '\n', '\r':
			off++
		default:
			return off
		}
	}
	return off
}

// locator finds the offsets of JSON paths in a syntactically valid file by walking it, instead
// of indexing every value up front: valid policies never ask. It caches the element offsets of
// the arrays it walks so that many errors in a large array stay cheap.
type locator struct {
	data   []byte
	arrays map[int][]int
}

// find returns the offset of the value at path, or of its nearest enclosing value that
// exists; keyOff is the offset of the key when path ends in an existing object member.
func (l *locator) find(path jsonPath) (valueOff, keyOff int, found bool) {
	d := l.data
	cur := skipWSAt(d, 0)
	keyOff = -1
	rest := string(path)
	if len(rest) == 0 || rest[0] != '$' {
		return cur, -1, false
	}
	rest = rest[1:]
	for rest != "" {
		var key string
		index, isIndex := -1, false
		switch {
		case rest[0] == '.':
			end := 1
			for end < len(rest) && rest[end] != '.' && rest[end] != '[' {
				end++
			}
			key, rest = rest[1:end], rest[end:]
		case rest[0] == '[' && len(rest) > 1 && rest[1] == '"':
			end := skipString([]byte(rest), 1)
			if err := json.Unmarshal([]byte(rest[1:end]), &key); err != nil || end >= len(rest) {
				return cur, -1, false
			}
			rest = rest[end+1:]
		case rest[0] == '[':
			end := 1
			for end < len(rest) && rest[end] != ']' {
				end++
			}
			n, err := strconv.Atoi(rest[1:end])
			if err != nil || end >= len(rest) {
				return cur, -1, false
			}
			index, isIndex = n, true
			rest = rest[end+1:]
		default:
			return cur, -1, false
		}
		if cur >= len(d) {
			return cur, -1, false
		}
		if isIndex {
			if d[cur] != '[' {
				return cur, -1, false
			}
			elems := l.elements(cur)
			if index < 0 || index >= len(elems) {
				return cur, -1, false
			}
			cur, keyOff = elems[index], -1
			continue
		}
		if d[cur] != '{' {
			return cur, -1, false
		}
		k, v, ok := l.member(cur, key)
		if !ok {
			return cur, -1, false
		}
		cur, keyOff = v, k
	}
	return cur, keyOff, true
}

// member finds key in the object at off; with duplicate keys, the first.
func (l *locator) member(off int, key string) (keyOff, valueOff int, ok bool) {
	d := l.data
	i := skipWSAt(d, off+1)
	for i < len(d) && d[i] == '"' {
		kStart := i
		kEnd := skipString(d, i)
		match := decodeKey(d[kStart+1:kEnd-1]) == key
		i = skipWSAt(d, kEnd)
		i = skipWSAt(d, i+1) // ':'
		if match {
			return kStart, i, true
		}
		i = skipWSAt(d, skipValue(d, i))
		if i < len(d) && d[i] == ',' {
			i = skipWSAt(d, i+1)
		}
	}
	return 0, 0, false
}

// elements returns the offsets of the elements of the array at off.
func (l *locator) elements(off int) []int {
	if e, ok := l.arrays[off]; ok {
		return e
	}
	d := l.data
	var out []int
	i := skipWSAt(d, off+1)
	for i < len(d) && d[i] != ']' {
		out = append(out, i)
		i = skipWSAt(d, skipValue(d, i))
		if i < len(d) && d[i] == ',' {
			i = skipWSAt(d, i+1)
		}
	}
	if l.arrays == nil {
		l.arrays = map[int][]int{}
	}
	l.arrays[off] = out
	return out
}

// lineIndex converts offsets to line and column without rescanning the file from its start:
// it holds a checkpoint every lineStep bytes.
type lineIndex struct {
	cps []lineCheckpoint
}

const lineStep = 4096

// lineCheckpoint is the position at off, a rune boundary: its line, the line's start, and
// the number of runes from the line's start to off.
type lineCheckpoint struct {
	off, line, lineStart, runes int
}

func newLineIndex(d []byte) *lineIndex {
	li := &lineIndex{cps: make([]lineCheckpoint, 0, len(d)/lineStep+1)}
	line, lineStart, runes := 1, 0, 0
	for i := 0; i < len(d); {
		if i >= len(li.cps)*lineStep {
			li.cps = append(li.cps, lineCheckpoint{off: i, line: line, lineStart: lineStart, runes: runes})
		}
		c := d[i]
		size := 1
		if c >= utf8.RuneSelf {
			_, size = utf8.DecodeRune(d[i:])
		}
		i += size
		runes++
		if c == '\n' {
			line++
			lineStart = i
			runes = 0
		}
	}
	return li
}

// lineCol is the 1-based line and character column of off, the same as counting from the
// file's start (utf8.RuneCount of the line up to off).
func (li *lineIndex) lineCol(d []byte, off int) (int, int) {
	k := off / lineStep
	if k >= len(li.cps) {
		k = len(li.cps) - 1
	}
	for k > 0 && li.cps[k].off > off {
		k--
	}
	if k < 0 {
		return 1, utf8.RuneCount(d[:off]) + 1
	}
	cp := li.cps[k]
	line, base, col := cp.line, cp.off, cp.runes
	for i := cp.off; i < off; i++ {
		if d[i] == '\n' {
			line++
			base, col = i+1, 0
		}
	}
	return line, col + utf8.RuneCount(d[base:off]) + 1
}
