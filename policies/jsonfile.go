package policies

// JSONFile positions problems in a JSON file that is not a policy (portcullis test's test
// files) the way policy errors are positioned: file:line:col of the value at fault, and its JSON
// path in the $.a.b[0]["x-y"] notation that KeyPath and IndexPath build.
type JSONFile struct{ src source }

// NewJSONFile is the file name holding data, which should be valid JSON: positions are found
// in it only when a problem is reported.
func NewJSONFile(name string, data []byte) *JSONFile {
	return &JSONFile{src: source{name: name, data: data}}
}

// ErrAt is a problem at the value of path, or at the nearest enclosing value that exists.
func (f *JSONFile) ErrAt(path, format string, args ...any) *Error {
	return f.src.errAt(jsonPath(path), format, args...)
}

// ErrAtKey is a problem at the key of the member path (an unknown field).
func (f *JSONFile) ErrAtKey(path, format string, args ...any) *Error {
	return f.src.errAtKey(jsonPath(path), format, args...)
}

// ErrAtOffset is a problem at byte offset off (a syntax error), reported with path.
func (f *JSONFile) ErrAtOffset(off int, path, format string, args ...any) *Error {
	return f.src.errAtOffset(off, jsonPath(path), format, args...)
}

// Line is the 1-based line of the value at path.
func (f *JSONFile) Line(path string) int {
	line, _ := f.src.lineCol(f.src.valueOffset(jsonPath(path)))
	return line
}

// KeyPath extends path by the member k.
func KeyPath(path, k string) string { return string(jsonPath(path).key(k)) }

// IndexPath extends path by the element i.
func IndexPath(path string, i int) string { return string(jsonPath(path).index(i)) }
