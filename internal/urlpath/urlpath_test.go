package urlpath

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		want  string
		flags Flags
		err   error
	}{
		// Already canonical: returned as it is.
		{"root", "/", "/", 0, nil},
		{"empty is the root", "", "/", 0, nil},
		{"plain", "/pets/12", "/pets/12", 0, nil},
		{"trailing slash kept", "/pets/", "/pets/", 0, nil},
		{"dots inside a name", "/static/app.min.js", "/static/app.min.js", 0, nil},
		{"three dots are a name", "/pets/.../x", "/pets/.../x", 0, nil},
		{"dot-prefixed name", "/pets/.well-known/x", "/pets/.well-known/x", 0, nil},
		{"sub-delims", "/a/b!$&'()*+,=:@c", "/a/b!$&'()*+,=:@c", 0, nil},
		{"parameter on a name", "/pets;jsessionid=1/x", "/pets;jsessionid=1/x", 0, nil},

		// The attacks of issue 11.
		{"dot-dot", "/pets/../adminpanel/users", "/adminpanel/users", 0, nil},
		{"encoded dot-dot", "/pets/%2e%2e/admin", "/admin", 0, nil},
		{"upper-case encoded dot-dot", "/pets/%2E%2E/admin", "/admin", 0, nil},
		{"half-encoded dot-dot", "/pets/.%2e/admin", "/admin", 0, nil},
		{"other half encoded", "/pets/%2E./admin", "/admin", 0, nil},
		{"Tomcat's ..;", "/pets/..;/admin", "", 0, ErrDotParameter},
		{"..; with a value", "/pets/..;x=1/admin", "", 0, ErrDotParameter},
		{".; parameter", "/pets/.;/admin", "", 0, ErrDotParameter},
		{"encoded ..;", "/pets/%2e%2e;/admin", "", 0, ErrDotParameter},
		{"..%3B", "/pets/..%3b/admin", "", 0, ErrDotParameter},
		{"encoded slashes around dot-dot", "/pets/%2f..%2fadmin", "", 0, ErrHiddenDot},
		{"dot-dot between encoded slashes", "/pets/x%2F..%2F..%2Fadmin", "", 0, ErrHiddenDot},
		{"dot-dot after an encoded backslash", "/pets/x%5c..", "", 0, ErrHiddenDot},
		{"dot-dot;%2F", "/pets/x%2F..;/admin", "", 0, ErrDotParameter},
		{"double-encoded dot-dot is data", "/pets/%252e%252e/admin", "/pets/%252e%252e/admin", 0, nil},
		{"double slash at the start", "//admin", "/admin", 0, nil},
		{"double slashes inside", "/pets//..//admin", "/admin", 0, nil},
		{"raw backslash", `/pets\..\admin`, "", 0, ErrBackslash},
		{"raw backslash alone", `/pets\x`, "", 0, ErrBackslash},
		{"above the root", "/..", "", 0, ErrAboveRoot},
		{"above the root later", "/pets/../../etc/passwd", "", 0, ErrAboveRoot},
		{"encoded above the root", "/%2e%2e/etc", "", 0, ErrAboveRoot},
		{"NUL", "/pets/%00", "", 0, ErrControl},
		{"raw NUL", "/pets/\x00", "", 0, ErrControl},
		{"encoded newline", "/pets/%0a", "", 0, ErrControl},
		{"raw tab", "/pets/\t", "", 0, ErrControl},
		{"DEL", "/pets/%7F", "", 0, ErrControl},
		{"bad escape", "/pets/%zz", "", 0, ErrBadEscape},
		{"truncated escape", "/pets/%2", "", 0, ErrBadEscape},
		{"escape cut by a slash", "/pets/%2/x", "", 0, ErrBadEscape},
		{"not absolute", "pets", "", 0, ErrNotAbsolute},
		{"asterisk", "*", "", 0, ErrNotAbsolute},

		// Dot-segments that stay inside the path.
		{"dot", "/pets/./12", "/pets/12", 0, nil},
		{"trailing dot", "/pets/.", "/pets/", 0, nil},
		{"trailing dot-dot", "/pets/12/..", "/pets/", 0, nil},
		{"dot-dot to the root", "/pets/..", "/", 0, nil},
		{"encoded dot", "/pets/%2E/12", "/pets/12", 0, nil},

		// Escapes.
		{"unreserved decoded", "/%70ets/%41%7e%2D%5f", "/pets/A~-_", 0, nil},
		{"reserved kept, hex upper-cased", "/pets/a%3fb%23c", "/pets/a%3Fb%23c", 0, nil},
		{"percent kept", "/pets/100%25", "/pets/100%25", 0, nil},
		{"raw non-ASCII encoded", "/pets/caf\xc3\xa9", "/pets/caf%C3%A9", 0, nil},
		{"raw quote and braces encoded", `/pets/"{x}"`, "/pets/%22%7Bx%7D%22", 0, nil},
		{"encoded slash kept and flagged", "/files/a%2fb", "/files/a%2Fb", HasEncodedSlash, nil},
		{"encoded backslash kept and flagged", "/files/a%5Cb", "/files/a%5Cb", HasEncodedSlash, nil},
		{"encoded slash before dot-dot segment", "/files/a%2Fb/../c", "/files/c", HasEncodedSlash, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, flags, err := Normalize(tt.raw)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Normalize(%q): got error %v, want %v", tt.raw, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("Normalize(%q): got %q, want %q", tt.raw, got, tt.want)
			}
			if flags != tt.flags {
				t.Errorf("Normalize(%q): got flags %b, want %b", tt.raw, flags, tt.flags)
			}
		})
	}
}

func TestStripPrefix(t *testing.T) {
	tests := []struct {
		name, p, prefix, want string
		ok                    bool
	}{
		{"the prefix itself", "/v1", "/v1", "/", true},
		{"the prefix with a slash", "/v1/", "/v1", "/", true},
		{"under the prefix", "/v1/x/y", "/v1", "/x/y", true},
		{"not at a segment boundary", "/v1x", "/v1", "/v1x", false},
		{"other path", "/v2/x", "/v1", "/v2/x", false},
		{"encoded slash stays encoded", "/v1/a%2Fb", "/v1", "/a%2Fb", true},
		{"no prefix", "/x", "", "/x", true},
		{"deep prefix", "/api/v1/pets", "/api/v1", "/pets", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := StripPrefix(tt.p, tt.prefix)
			if got != tt.want || ok != tt.ok {
				t.Errorf("StripPrefix(%q, %q): got %q, %v, want %q, %v", tt.p, tt.prefix, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestNormalizeCanonicalDoesNotAllocate: the request path's common case costs nothing.
func TestNormalizeCanonicalDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/pets/12", "/static/app.min.js", "/a/b/c/"} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = Normalize(p) }); n != 0 {
			t.Errorf("Normalize(%q): got %v allocations, want 0", p, n)
		}
	}
	// The slow path too, when it finds nothing to change.
	if n := testing.AllocsPerRun(100, func() { _, _, _ = Normalize("/pets;v=1/a%2Fb") }); n != 0 {
		t.Errorf("slow path without a change: got %v allocations, want 0", n)
	}
}

// upstreamView resolves p as a lenient upstream would: every escape decoded (once), a
// backslash read as a slash, Tomcat's path parameters dropped, dot-segments resolved (a ".."
// above the root clamped there, as browsers and path.Clean do).
func upstreamView(p string) string {
	d, err := url.PathUnescape(p)
	if err != nil {
		d = p
	}
	segs := strings.Split(strings.ReplaceAll(d, `\`, "/"), "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return path.Clean("/" + strings.Join(segs, "/"))
}

// dotSegment reports a segment of p that is "." or ".." as the gateway reads it, or as an
// upstream reads it after decoding escapes, dropping path parameters or splitting on encoded
// slashes.
func dotSegment(p string) (string, bool) {
	for _, s := range strings.Split(p, "/") {
		d, err := url.PathUnescape(s)
		if err != nil {
			d = s
		}
		for _, piece := range strings.FieldsFunc(d, func(r rune) bool { return r == '/' || r == '\\' }) {
			if j := strings.IndexByte(piece, ';'); j >= 0 {
				piece = piece[:j]
			}
			if piece == "." || piece == ".." {
				return s, true
			}
		}
		if s == "." || s == ".." {
			return s, true
		}
	}
	return "", false
}

func FuzzNormalize(f *testing.F) {
	for _, seed := range []struct{ path, prefix string }{
		{"/pets/../adminpanel/users", "/pets"},
		{"/pets/%2e%2e/admin", "/pets"},
		{"/pets/.%2e/admin", "/pets"},
		{"/pets/%2E./admin", "/pets"},
		{"/pets/..;/admin", "/pets"},
		{"/pets/%2f..%2fadmin", "/pets"},
		{"/pets/%252e%252e/admin", "/pets"},
		{"//admin", "/"},
		{`/pets\..\admin`, "/pets"},
		{"/v1/../x", "/v1"},
		{"/v1/..%2fx", "/v1"},
		{"/v1x", "/v1"},
		{"/v1/a%2Fb", "/v1"},
		{"/static/app.min.js", "/static"},
		{"/a/./b/../../c/", "/a"},
		{"/caf\xc3\xa9/%7e", "/caf%C3%A9"},
		{"/x%5C.%5C", "/x"},
	} {
		f.Add(seed.path, seed.prefix)
	}
	const base = "/base"
	f.Fuzz(func(t *testing.T, raw, rawPrefix string) {
		got, flags, err := Normalize(raw)
		if raw != "" && raw[0] == '/' {
			slow, sflags, serr := normalizeSlow(raw)
			if slow != got || sflags != flags || !errors.Is(serr, err) && !errors.Is(err, serr) {
				t.Fatalf("fast and slow paths differ on %q: %q %b %v and %q %b %v", raw, got, flags, err, slow, sflags, serr)
			}
		}
		if err != nil {
			return
		}
		if got == "" || got[0] != '/' || strings.Contains(got, "//") {
			t.Fatalf("Normalize(%q) = %q: not a clean absolute path", raw, got)
		}
		if s, ok := dotSegment(got); ok {
			t.Fatalf("Normalize(%q) = %q: holds the dot-segment %q", raw, got, s)
		}
		if strings.ContainsAny(got, "\\\x00") {
			t.Fatalf("Normalize(%q) = %q: holds a backslash or NUL", raw, got)
		}
		again, aflags, err := Normalize(got)
		if err != nil || again != got || aflags != flags {
			t.Fatalf("not idempotent: Normalize(%q) = %q, then %q, %b, %v", raw, got, again, aflags, err)
		}

		// strip_prefix never lets the forwarded path leave the target's base.
		prefix, pflags, err := Normalize(rawPrefix)
		if err != nil || pflags != 0 {
			return
		}
		prefix = strings.TrimSuffix(prefix, "/")
		rest, ok := StripPrefix(got, prefix)
		if !ok {
			return
		}
		if rest == "" || rest[0] != '/' {
			t.Fatalf("StripPrefix(%q, %q) = %q: not absolute", got, prefix, rest)
		}
		if v := upstreamView(base + rest); v != base && !strings.HasPrefix(v, base+"/") {
			t.Fatalf("%q with prefix %q stripped is forwarded as %q, which an upstream resolves to %q, outside %q", raw, prefix, base+rest, v, base)
		}
	})
}

func BenchmarkNormalize(b *testing.B) {
	for _, p := range []string{"/petstore/pets/12", "/static/app.min.js", "/pets/./a/../12", "/pets/%2e%2e/admin%3f"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = Normalize(p)
			}
		})
	}
}
