// Package jwsshape holds the checks of a compact JWS's shape that jwt-auth and oidc both ask of every
// bearer value before they parse it, and the way reasons name a token's algorithm.
package jwsshape

import "strings"

// IsCompact reports whether s has the shape of a compact JWS: three base64url parts, the first
// two non-empty, the signature too unless emptySignature (alg "none", which jwt-auth claims in
// order to refuse it). Both jwt-auth and oidc ask this of every bearer value, so it is a table
// lookup per byte.
func IsCompact(s string, emptySignature bool) bool {
	first := strings.IndexByte(s, '.')
	if first <= 0 {
		return false
	}
	rest := s[first+1:]
	second := strings.IndexByte(rest, '.')
	if second <= 0 {
		return false
	}
	sig := rest[second+1:]
	if sig == "" && !emptySignature {
		return false
	}
	return IsBase64URL(s[:first]) && IsBase64URL(rest[:second]) && IsBase64URL(sig)
}

// IsBase64URL reports whether s has only characters of the unpadded base64url alphabet.
func IsBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if !base64URLAlphabet[s[i]] {
			return false
		}
	}
	return true
}

var base64URLAlphabet = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()
