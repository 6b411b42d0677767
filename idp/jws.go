package idp

import (
	"crypto/sha256"
	"strings"
	"unsafe"
)

// isCompactJWS reports whether s has the shape of a compact JWS: three base64url parts, the first
// two non-empty, the signature too unless emptySignature (alg "none", which jwt-auth claims in
// order to refuse it). Both jwt-auth and oidc ask this of every bearer value, so it is a table
// lookup per byte.
func isCompactJWS(s string, emptySignature bool) bool {
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
	return isBase64URL(s[:first]) && isBase64URL(rest[:second]) && isBase64URL(sig)
}

// isBase64URL reports whether s has only characters of the unpadded base64url alphabet.
func isBase64URL(s string) bool {
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

// sumString is sha256.Sum256 of s without copying s into a new slice, which for a bearer token
// is an allocation of its whole length on every request. Sum256 only reads its argument and
// keeps nothing of it, so the read-only view of the string's bytes is safe.
func sumString(s string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
}
