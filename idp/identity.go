package idp

import (
	"net/http"
	"strings"
)

// IsIdentityHeader reports the headers that carry an identity to the upstream
// (X-Consumer-*, X-Credential-Identifier, X-Userinfo, X-Access-Token, X-Id-Token). Only the
// gateway sets them: they are dropped from every client request, so no provider may read its
// credential from one. name may be in any case.
func IsIdentityHeader(name string) bool {
	k := http.CanonicalHeaderKey(name) // no allocation for the canonical keys of a parsed request
	switch k {
	case "X-Credential-Identifier", "X-Userinfo", "X-Access-Token", "X-Id-Token":
		return true
	}
	return strings.HasPrefix(k, "X-Consumer-")
}
