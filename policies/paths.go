package policies

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/gorilla/mux"

	"github.com/portcullis/portcullis/internal/urlpath"
)

// templatePart is one {name:pattern} of a gorilla/mux template.
type templatePart struct {
	start, end    int // the braces, tpl[start:end]
	name, pattern string
	// explicit: a ":" follows the name (an empty pattern after it is an error, not the default).
	explicit bool
}

// templateParts splits a gorilla/mux template as mux does (braceIndices, then the first ":").
func templateParts(tpl string) ([]templatePart, error) {
	var parts []templatePart
	level, start := 0, 0
	for i := 0; i < len(tpl); i++ {
		switch tpl[i] {
		case '{':
			if level++; level == 1 {
				start = i
			}
		case '}':
			if level--; level == 0 {
				name, pattern, explicit := strings.Cut(tpl[start+1:i], ":")
				parts = append(parts, templatePart{start: start, end: i + 1, name: name, pattern: pattern, explicit: explicit})
			} else if level < 0 {
				return nil, errors.New("unbalanced braces")
			}
		}
	}
	if level != 0 {
		return nil, errors.New("unbalanced braces")
	}
	return parts, nil
}

// checkTemplateVars checks the variables of a template before mux sees it: mux panics on a
// capture group (it numbers its own groups), so this is where such a template is refused.
func checkTemplateVars(tpl string, parts []templatePart) error {
	for _, p := range parts {
		if p.name == "" || p.explicit && p.pattern == "" {
			return fmt.Errorf("%q has a variable without a name or pattern", tpl[p.start:p.end])
		}
		if p.pattern == "" {
			continue
		}
		re, err := regexp.Compile("^" + p.pattern + "$")
		if err != nil {
			return err // regexp's own message names the problem and the pattern
		}
		if re.NumSubexp() > 0 {
			return fmt.Errorf("the pattern of {%s} has a capture group, which is not allowed: write (?:...) instead of (...)", p.name)
		}
	}
	return nil
}

// muxError runs one mux route construction and returns its error, or its panic as an error:
// mux panics on templates its own checks let through.
func muxError(build func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gorilla/mux refuses it: %v", r)
		}
	}()
	return build()
}

// CheckPathTemplate checks a route path as the gateway's router reads it, without letting
// gorilla/mux panic: the gateway calls it too before it hands a template to mux.
func CheckPathTemplate(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q must start with \"/\"", p)
	}
	parts, err := templateParts(p)
	if err != nil {
		return fmt.Errorf("path %q has %w", p, err)
	}
	if err := checkTemplateVars(p, parts); err != nil {
		return fmt.Errorf("invalid path template %q: %w", p, err)
	}
	if err := muxError(func() error { return mux.NewRouter().NewRoute().Path(p).GetError() }); err != nil {
		return fmt.Errorf("invalid path template %q: %w", p, err)
	}
	return nil
}

// checkPathNormalised refuses a template whose literal text no normalised request path can
// have: requests are matched after normalisation (internal/urlpath), so /pets//x, /a/../b or
// /%70ets would never match. An encoded slash is the route's choice (allowEncoded).
func checkPathNormalised(p string, allowEncoded bool) error {
	parts, err := templateParts(p)
	if err != nil {
		return nil // reported by CheckPathTemplate
	}
	// Each variable stands for one plain character: what is checked is the literal text.
	var b strings.Builder
	end := 0
	for _, part := range parts {
		b.WriteString(p[end:part.start])
		b.WriteByte('v')
		end = part.end
	}
	b.WriteString(p[end:])
	lit := b.String()
	norm, flags, err := urlpath.Normalize(lit)
	switch {
	case err != nil:
		return fmt.Errorf("path %q never matches: requests with such a path are refused (%w)", p, err)
	case flags&urlpath.HasEncodedSlash != 0 && !allowEncoded:
		return fmt.Errorf("path %q never matches: it has an encoded slash and the route does not set allow_encoded_slashes", p)
	case norm != lit && len(parts) == 0:
		return fmt.Errorf("path %q never matches: requests are matched on their normalised path; write %q", p, norm)
	case norm != lit:
		return fmt.Errorf("path %q never matches: requests are matched on their normalised path (no \".\" or \"..\" segments, no \"//\", unreserved characters unescaped, other escapes in upper case)", p)
	}
	return nil
}

// checkStripPrefix: a prefix is stripped from the normalised path at a segment boundary, so it
// must be a normalised path itself.
func checkStripPrefix(sp string) error {
	if !strings.HasPrefix(sp, "/") {
		return fmt.Errorf("strip_prefix %q must start with \"/\"", sp)
	}
	trimmed := strings.TrimSuffix(sp, "/")
	if trimmed == "" {
		return nil
	}
	norm, flags, err := urlpath.Normalize(trimmed)
	switch {
	case err != nil:
		return fmt.Errorf("strip_prefix %q is not a path a request can have: %w", sp, err)
	case flags != 0:
		return fmt.Errorf("strip_prefix %q must not hold an encoded slash", sp)
	case norm != trimmed:
		return fmt.Errorf("strip_prefix %q is not a normalised path: write %q", sp, norm)
	}
	return nil
}

// checkTargetPath: the base path of a target is put before the forwarded path as written, so
// it must not hold what normalisation removes from requests.
func checkTargetPath(escaped string) error {
	if escaped == "" || escaped == "/" {
		return nil
	}
	norm, flags, err := urlpath.Normalize(escaped)
	switch {
	case err != nil:
		return fmt.Errorf("the upstream URL's path %q is not a normalised path: %w", escaped, err)
	case flags != 0:
		return fmt.Errorf("the upstream URL's path %q must not hold an encoded slash", escaped)
	case norm != escaped:
		return fmt.Errorf("the upstream URL's path %q is not a normalised path: write %q", escaped, norm)
	}
	return nil
}

// CheckHost checks a route host: a host name (a {name:pattern} part allowed, as gorilla/mux
// does), matched case-insensitively, with one trailing dot ignored, and never with a port.
func CheckHost(h string) error {
	parts, err := templateParts(h)
	if err != nil {
		return fmt.Errorf("host %q has %w", h, err)
	}
	if err := checkTemplateVars(h, parts); err != nil {
		return fmt.Errorf("invalid host template %q: %w", h, err)
	}
	if strings.HasPrefix(h, "[") {
		// An IPv6 literal: its colons are not a port.
		if !strings.HasSuffix(h, "]") {
			return fmt.Errorf("host %q has a port: hosts are matched without the port; write %q", h, h[:strings.LastIndexByte(h, ']')+1])
		}
		return nil
	}
	end := 0
	for _, part := range append(parts, templatePart{start: len(h), end: len(h)}) {
		lit := h[end:part.start]
		end = part.end
		if strings.Contains(lit, "..") {
			return fmt.Errorf("host %q is not a host name: it has an empty label", h)
		}
		for i := 0; i < len(lit); i++ {
			c := lit[i]
			switch {
			case c == ':':
				return fmt.Errorf("host %q has a port: hosts are matched without the port; write %q", h, h[:strings.LastIndexByte(h, ':')])
			case c <= ' ' || c >= 0x7f || strings.IndexByte(`/\?#@%"<>[]`, c) >= 0:
				return fmt.Errorf("host %q is not a host name", h)
			}
		}
	}
	if strings.TrimSuffix(h, ".") == "" || strings.HasPrefix(h, ".") {
		return fmt.Errorf("host %q is not a host name", h)
	}
	return muxError(func() error { return mux.NewRouter().NewRoute().Host(h).GetError() })
}
