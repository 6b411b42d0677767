// Package urlpath normalises the path of a request target before anything is decided on it.
//
// A gateway that matches routes on one spelling of a path and forwards another lets a client
// reach what its routes forbid: /pets/../admin matches /pets/{rest:.*} and reaches /admin on any
// upstream that resolves dot-segments. Normalize turns every spelling into one canonical escaped
// form, or refuses a path that has none, so that routes match, and upstreams receive, exactly
// the same bytes.
package urlpath

import (
	"errors"
	"strings"
)

// The reasons a path cannot be normalised safely. Each is answered 400 by the gateway.
var (
	ErrNotAbsolute  = errors.New(`the path does not start with "/"`)
	ErrAboveRoot    = errors.New(`a ".." segment goes above the root`)
	ErrBackslash    = errors.New("a backslash in the path")
	ErrControl      = errors.New("a control character in the path")
	ErrBadEscape    = errors.New("an invalid percent-escape in the path")
	ErrDotParameter = errors.New(`a dot-segment with a path parameter (like "..;")`)
	ErrHiddenDot    = errors.New(`a dot-segment between encoded slashes (like "%2F..%2F")`)
	// ErrEncodedSlash is not returned by Normalize (which reports it as HasEncodedSlash): only
	// the matched route can say whether it is allowed.
	ErrEncodedSlash = errors.New("an encoded slash or backslash (%2F, %5C) in the path")
)

// Flags say what Normalize found in a path it accepted.
type Flags uint8

const (
	// HasEncodedSlash: the result holds %2F or %5C, kept encoded (one segment, not two).
	HasEncodedSlash Flags = 1 << iota
)

// class of each byte as it may appear raw in a path.
const (
	cPlain   = iota // unreserved but '.', sub-delims but ';', ':', '@': kept, never special
	cEncode         // printable but not allowed raw in a path, or not ASCII: percent-encoded
	cCtl            // control characters and DEL: refused
	cSpecial        // '/', '.', '%', ';', '\\': the slow path looks at them
)

var classes = func() (t [256]uint8) {
	for i := range t {
		c := byte(i)
		switch {
		case c < 0x20 || c == 0x7f:
			t[i] = cCtl
		case c >= 0x80:
			t[i] = cEncode
		case c == '/' || c == '.' || c == '%' || c == ';' || c == '\\':
			t[i] = cSpecial
		case isUnreserved(c) || strings.IndexByte("!$&'()*+,=:@", c) >= 0:
			t[i] = cPlain
		default: // space " # < > ? [ ] ^ ` { | }
			t[i] = cEncode
		}
	}
	return t
}()

// isUnreserved is RFC 3986's unreserved: ALPHA DIGIT - . _ ~
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// Normalize returns the canonical escaped form of raw, the path of a request target as the
// client sent it (without the query):
//
//   - percent-escapes of unreserved characters are decoded (%41 is A, %2e is "."), the others
//     are kept with upper-case hex (%2f is %2F); an escape is decoded once only: %252e is the
//     three characters "%2e" as data, never ".";
//   - bytes not allowed raw in a path (non-ASCII, space, ", <, >, [, ], ^, `, {, |, }, #) are
//     percent-encoded;
//   - runs of "/" are merged into one, as nginx's merge_slashes does;
//   - dot-segments are removed (RFC 3986 §5.2.4), including those spelt with escapes.
//
// It refuses, with one of the Err values, what no canonical form can express safely: a ".."
// above the root, a raw backslash, control characters (raw or encoded), invalid escapes, a
// dot-segment with a path parameter ("..;", which Tomcat reads as ".."), and a dot-segment
// between encoded slashes. An encoded slash or backslash is kept encoded and reported in the
// flags; whether it is allowed is the route's decision.
//
// When raw is already canonical, Normalize returns it unchanged without allocating.
func Normalize(raw string) (string, Flags, error) {
	if raw == "" {
		return "/", 0, nil
	}
	if raw[0] != '/' {
		return "", 0, ErrNotAbsolute
	}
	if canonical(raw) {
		return raw, 0, nil
	}
	return normalizeSlow(raw)
}

// canonical reports whether raw needs no work: only plain bytes, single slashes, dots that
// are not dot-segments.
func canonical(raw string) bool {
	seg := 1 // start of the current segment
	dots := 0
	for i := 1; i < len(raw); i++ {
		c := raw[i]
		switch classes[c] {
		case cPlain:
			continue
		case cSpecial:
			switch c {
			case '.':
				dots++
				continue
			case '/':
				if i == seg || (dots == i-seg && dots <= 2) {
					return false // "//", "/./", "/../"
				}
				seg, dots = i+1, 0
				continue
			}
		}
		return false
	}
	n := len(raw) - seg
	return n == 0 || dots != n || n > 2
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func normalizeSlow(raw string) (string, Flags, error) {
	var flags Flags
	var stack [256]byte
	out := append(stack[:0], '/')
	for i := 1; i <= len(raw); {
		// One segment: raw[i:end].
		end := strings.IndexByte(raw[i:], '/')
		last := end < 0
		if last {
			end = len(raw)
		} else {
			end += i
		}
		mark := len(out)
		for j := i; j < end; j++ {
			c := raw[j]
			switch classes[c] {
			case cPlain:
				out = append(out, c)
			case cEncode:
				out = append(out, '%', upperHex[c>>4], upperHex[c&15])
			case cCtl:
				return "", 0, ErrControl
			default:
				switch c {
				case '\\':
					return "", 0, ErrBackslash
				case '%':
					if j+2 >= end {
						return "", 0, ErrBadEscape
					}
					hi, ok1 := unhex(raw[j+1])
					lo, ok2 := unhex(raw[j+2])
					if !ok1 || !ok2 {
						return "", 0, ErrBadEscape
					}
					v := hi<<4 | lo
					j += 2
					switch {
					case v < 0x20 || v == 0x7f:
						return "", 0, ErrControl
					case isUnreserved(v):
						out = append(out, v)
					default:
						if v == '/' || v == '\\' {
							flags |= HasEncodedSlash
						}
						out = append(out, '%', upperHex[v>>4], upperHex[v&15])
					}
				default: // '.' and ';'
					out = append(out, c)
				}
			}
		}
		seg := out[mark:]
		switch {
		case len(seg) == 0:
			// An empty segment: "//" merged, or the one after a trailing "/", already written.
		case isDots(seg) == 1:
			out = out[:mark]
		case isDots(seg) == 2:
			if mark == 1 {
				return "", 0, ErrAboveRoot
			}
			// Drop the parent: out[:mark-1] ends with it, its "/" before.
			k := mark - 2
			for out[k] != '/' {
				k--
			}
			out = out[:k+1]
		default:
			if err := checkSegment(seg); err != nil {
				return "", 0, err
			}
			if !last {
				out = append(out, '/')
			}
		}
		i = end + 1
	}
	if string(out) == raw {
		return raw, flags, nil
	}
	return string(out), flags, nil
}

// isDots is 1 for ".", 2 for "..", 0 otherwise.
func isDots(s []byte) int {
	if len(s) == 1 && s[0] == '.' {
		return 1
	}
	if len(s) == 2 && s[0] == '.' && s[1] == '.' {
		return 2
	}
	return 0
}

// checkSegment refuses a canonical segment that an upstream could still read as a dot-segment:
// one whose part before a path parameter (";", or %3B for upstreams that decode first) is "."
// or "..", and a "." or ".." piece between encoded slashes (for upstreams that decode %2F).
func checkSegment(seg []byte) error {
	pieces := 0
	for rest := seg; ; {
		n := indexEncodedSlash(rest)
		piece := rest
		if n >= 0 {
			piece = rest[:n]
		}
		if isDots(piece) > 0 {
			if pieces > 0 || n >= 0 {
				return ErrHiddenDot
			}
		}
		if isDots(beforeParameter(piece)) > 0 {
			return ErrDotParameter
		}
		if n < 0 {
			return nil
		}
		rest = rest[n+3:]
		pieces++
	}
}

// beforeParameter is s up to its first ";" or "%3B".
func beforeParameter(s []byte) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == ';' {
			return s[:i]
		}
		if s[i] == '%' && i+2 < len(s) && s[i+1] == '3' && s[i+2] == 'B' {
			return s[:i]
		}
	}
	return nil // no parameter: nothing to check
}

// indexEncodedSlash is the index of the first %2F or %5C in a canonical segment, or -1.
func indexEncodedSlash(s []byte) int {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && (s[i+1] == '2' && s[i+2] == 'F' || s[i+1] == '5' && s[i+2] == 'C') {
			return i
		}
	}
	return -1
}

// StripPrefix removes prefix (a canonical path without a trailing "/") from the canonical path
// p at a segment boundary: "/v1" strips "/v1" and "/v1/x" but not "/v1x". It works on the
// escaped form, so an encoded slash stays encoded. ok is false when p is not under prefix.
func StripPrefix(p, prefix string) (string, bool) {
	if prefix == "" || prefix == "/" {
		return p, true
	}
	if !strings.HasPrefix(p, prefix) {
		return p, false
	}
	rest := p[len(prefix):]
	switch {
	case rest == "":
		return "/", true
	case rest[0] == '/':
		return rest, true
	}
	return p, false
}
