package credential

import (
	"crypto/sha256"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestSum(t *testing.T) {
	for _, s := range []string{"", "k", strings.Repeat("eyJhbGciOiJSUzI1NiJ9.", 40)} {
		if got, want := Sum(s), sha256.Sum256([]byte(s)); got != want {
			t.Errorf("Sum(%d bytes) = %x, want %x", len(s), got, want)
		}
	}
}

func TestHideHeader(t *testing.T) {
	ours := func(v string) bool { return strings.HasPrefix(v, "Bearer ") }
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"absent", nil, nil},
		{"only ours", []string{"Bearer a"}, nil},
		{"keeps others", []string{"Basic x", "Bearer a", "Other"}, []string{"Basic x", "Other"}},
		{"none ours", []string{"Basic x"}, []string{"Basic x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.in {
				h.Add("Authorization", v)
			}
			HideHeader(h, "authorization", ours)
			if got := h.Values("Authorization"); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHideQuery(t *testing.T) {
	ours := func(v string) bool { return v == "secret" }
	tests := []struct {
		name, raw, want string
	}{
		{"absent", "a=1", "a=1"},
		{"ours", "a=1&token=secret", "a=1"},
		{"second copy ours", "token=other&token=secret&b=2", "b=2"},
		{"not ours", "token=other", "token=other"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &url.URL{Path: "/", RawQuery: tt.raw}
			HideQuery(u, "token", ours)
			if u.RawQuery != tt.want {
				t.Errorf("got %q, want %q", u.RawQuery, tt.want)
			}
		})
	}
}

func TestHideCookies(t *testing.T) {
	drop := func(name, value string) bool { return name == "session" || (name == "tok" && value == "secret") }
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"only dropped", []string{"session=abc"}, nil},
		{"others kept byte for byte", []string{"a=1; session=abc;b=\"q w\""}, []string{"a=1;b=\"q w\""}},
		{"value decides", []string{"tok=other; tok=secret"}, []string{"tok=other"}},
		{"quoted value", []string{`tok="secret"; c=3`}, []string{"c=3"}},
		{"two lines", []string{"session=x", "c=3"}, []string{"c=3"}},
		{"unchanged", []string{"a=1;  b=2"}, []string{"a=1;  b=2"}},
		{"space before =, as net/http reads it", []string{"tok =secret; c=3"}, []string{"c=3"}},
		{"space after =: another value", []string{"tok= secret"}, []string{"tok= secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.in != nil {
				h["Cookie"] = slices.Clone(tt.in)
			}
			HideCookies(h, drop)
			if got := h["Cookie"]; !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzHideCookies: whatever the Cookie header, no cookie that net/http's Request.Cookie finds
// and drop accepts survives HideCookies (a provider read its credential that way).
func FuzzHideCookies(f *testing.F) {
	for _, s := range []string{"tok=secret", "tok =secret", ` tok="secret" `, "a=1; tok=secret;b", "tok=secret;tok=secret", "tok\t=secret"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		drop := func(name, value string) bool { return name == "tok" && value == "secret" }
		h := http.Header{"Cookie": {line}}
		HideCookies(h, drop)
		r := &http.Request{Header: h}
		for _, c := range r.Cookies() {
			if drop(c.Name, c.Value) {
				t.Fatalf("Cookie %q: %s=%s survived", line, c.Name, c.Value)
			}
		}
	})
}
