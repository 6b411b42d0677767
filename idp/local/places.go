package local

import "net/http"

// ownValue returns the first value of the named header that ours accepts, and how many values
// ours accepts. A provider that finds more than one credential of its own in a place refuses the
// request: which of them the chain checked and which the upstream reads would otherwise be two
// different questions, and the unchecked one would travel upstream.
func ownValue(r *http.Request, name string, ours func(string) bool) (first string, n int) {
	for _, v := range r.Header.Values(name) {
		if ours(v) {
			if n == 0 {
				first = v
			}
			n++
		}
	}
	return first, n
}

// Places a credential is read from, as Peeker reports them. A place names the header (in
// canonical form), query parameter or cookie, and for a shared header the scheme.
const (
	placeBasic     = "header Authorization Basic"
	placeSignature = "header Authorization Signature"
)
