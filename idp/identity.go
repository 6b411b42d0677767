package idp

import (
	"encoding/base64"
	"encoding/json"
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

// EncodeUserinfo is the X-Userinfo value of claims: base64 of their JSON, "" if they don't encode.
func EncodeUserinfo(claims map[string]any) string {
	b, err := json.Marshal(claims)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}
