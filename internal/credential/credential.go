// Package credential holds what several providers do with a credential's bytes: hash it without
// copying it, and remove it from a request before the request goes upstream (hide_credentials,
// session cookies). Removing keeps every other value byte for byte: the upstream sees what the
// client sent, less the credential.
package credential

import (
	"crypto/sha256"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"unsafe"
)

// Sum is sha256.Sum256 of s without copying s into a new slice, which for a bearer token is an
// allocation of its whole length on every request. Sum256 only reads its argument and keeps
// nothing of it, so the read-only view of the string's bytes is safe.
func Sum(s string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// HideHeader removes the values of the named header that ours accepts and keeps the others.
func HideHeader(h http.Header, name string, ours func(string) bool) {
	vs := h.Values(name)
	if len(vs) == 0 {
		return
	}
	keep := make([]string, 0, len(vs))
	for _, v := range vs {
		if !ours(v) {
			keep = append(keep, v)
		}
	}
	if len(keep) == 0 {
		h.Del(name)
		return
	}
	h[http.CanonicalHeaderKey(name)] = keep
}

// HideQuery removes the query parameter name when any of its values is ours. All its values go:
// which of two copies the upstream would read is its own choice.
func HideQuery(u *url.URL, name string, ours func(string) bool) {
	if u == nil || u.RawQuery == "" || name == "" {
		return
	}
	q := u.Query()
	vs, ok := q[name]
	if !ok {
		return
	}
	for _, v := range vs {
		if ours(v) {
			q.Del(name)
			u.RawQuery = q.Encode()
			return
		}
	}
}

// HideCookies removes from the Cookie header every cookie for which drop answers true, keeping
// the other cookie-pairs exactly as the client wrote them (net/http's Cookies/AddCookie would
// re-encode, or drop, values it does not accept).
func HideCookies(h http.Header, drop func(name, value string) bool) {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return
	}
	var keep []string
	changed := false
	for _, line := range lines {
		parts := strings.Split(line, ";")
		out := parts[:0]
		for _, p := range parts {
			// The name and value net/http's Request.Cookie reads from this pair (the providers
			// read their cookies so): whatever one of them found must go.
			name, value, _ := strings.Cut(textproto.TrimString(p), "=")
			name = textproto.TrimString(name)
			if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			if drop(name, value) {
				changed = true
				continue
			}
			out = append(out, p)
		}
		if len(out) > 0 {
			keep = append(keep, strings.TrimLeft(strings.Join(out, ";"), " "))
		}
	}
	if !changed {
		return
	}
	if len(keep) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = keep
}
