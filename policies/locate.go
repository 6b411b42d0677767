package policies

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// The helpers below read JSON that the scanner has already validated (scan.go): the fast
// consumer decoder and the locator, which finds the offset of a path for an error. On valid
// input they need no error handling, which keeps them short.

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
