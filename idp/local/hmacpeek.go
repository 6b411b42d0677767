package local

import (
	"net/http"
	"strings"

	"github.com/portcullis/portcullis/idp"
)

var _ idp.Peeker = (*HMACAuth)(nil)

// Peek reports the keyId of the Signature credential in r, for the chain to tell which of two
// hmac-auth providers (one validating bodies, one not) owns it before either applies its own
// settings to it.
func (h *HMACAuth) Peek(r *http.Request) (place, lookup string, ok bool) {
	v, n := ownValue(r, "Authorization", isSignatureScheme)
	if n != 1 {
		return "", "", false
	}
	_, rest, _ := strings.Cut(v, " ")
	p, err := parseSignatureParams(rest)
	if err != nil || p.keyID == "" {
		return "", "", false
	}
	return placeSignature, p.keyID, true
}
