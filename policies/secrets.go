package policies

import (
	"errors"
	"io/fs"
	"strings"
)

// resolver substitutes ${env:NAME} and ${file:PATH} references in string values.
type resolver struct {
	lookupEnv func(string) (string, bool)
	readFile  func(string) ([]byte, error)
}

// resolveTree substitutes references in every string value of tree, the value at base in src,
// in place, and returns the new tree. Problems are reported at the string's position and never
// quote a resolved value. The path is kept as segments and formatted only for a problem, so
// that walking a tree costs nothing per level.
func (r *resolver) resolveTree(src *source, base jsonPath, tree any, errs *errorList) any {
	var segs []pathSeg
	var walk func(v any) any
	walk = func(v any) any {
		switch n := v.(type) {
		case map[string]any:
			segs = append(segs, pathSeg{index: -1})
			for k, c := range n {
				segs[len(segs)-1].key = k
				n[k] = walk(c)
			}
			segs = segs[:len(segs)-1]
		case []any:
			segs = append(segs, pathSeg{})
			for i, c := range n {
				segs[len(segs)-1].index = i
				n[i] = walk(c)
			}
			segs = segs[:len(segs)-1]
		case string:
			out, problems := r.resolve(n)
			if len(problems) > 0 {
				path := base + formatPath(segs)[len(rootPath):]
				for _, p := range problems {
					errs.add(src.errAt(path, "%s", p))
				}
			}
			return out
		}
		return v
	}
	return walk(tree)
}

// ExpandEnv substitutes the ${env:NAME} references of s, for inputs that may name environment
// variables but not files (`portcullis test`'s test files): "$${" is a literal "${", and the
// problems name the variable, never a value.
func ExpandEnv(s string, lookupEnv func(string) (string, bool)) (string, []string) {
	r := resolver{lookupEnv: lookupEnv}
	return r.resolve(s)
}

// resolve substitutes the references of s; without readFile, a ${file:…} is an unknown
// reference. "$${" stands for a literal "${". The problems name
// the variable or file, never a value.
func (r *resolver) resolve(s string) (string, []string) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var problems []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			// "$${": the first '$' escapes; keep one literal "${".
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			problems = append(problems, `unterminated "${" reference (write "$${" for a literal "${")`)
			b.WriteString(s[i:])
			break
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		kindName, arg, ok := strings.Cut(ref, ":")
		switch {
		case ok && kindName == "env" && arg != "":
			v, found := r.lookupEnv(arg)
			if !found {
				problems = append(problems, "environment variable "+arg+" is not set")
				continue
			}
			b.WriteString(v)
		case ok && kindName == "file" && arg != "" && r.readFile != nil:
			data, err := r.readFile(arg)
			if err != nil {
				// The error of reading names the file and the cause, not the content.
				problems = append(problems, "cannot read secret file "+arg+": "+fileErrReason(err))
				continue
			}
			v := string(data)
			if strings.HasSuffix(v, "\r\n") {
				v = v[:len(v)-2]
			} else {
				v = strings.TrimSuffix(v, "\n")
			}
			b.WriteString(v)
		case r.readFile == nil:
			problems = append(problems, "unknown reference ${"+ref+"}: want ${env:NAME}")
		default:
			problems = append(problems, `unsupported reference "${`+ref+`}": use ${env:NAME} or ${file:PATH} (write "$${" for a literal "${")`)
		}
	}
	return b.String(), problems
}

// fileErrReason is the cause of a read error without the path (the message names it already).
func fileErrReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
