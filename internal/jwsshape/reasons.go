package jwsshape

import "strconv"

// Reasons go to the access log and to explain, so they never quote what a client wrote in a
// credential: a token's header is the client's, and a field of it may carry anything, a secret
// sent to the wrong place included. Identifiers that name a binding (a keyId, a username, a
// token's issuer or key id) may be quoted; free text may not.

// registeredJWSAlgorithms are the JWS "alg" names of RFC 7518 and RFC 8037.
var registeredAlgorithms = map[string]bool{
	"none": true, "HS256": true, "HS384": true, "HS512": true,
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "ES256K": true, "EdDSA": true,
}

// ReasonAlg is a token's "alg" as a reason shows it: quoted when it is a registered name.
func ReasonAlg(alg string) string {
	if registeredAlgorithms[alg] {
		return strconv.Quote(alg)
	}
	return "(not a registered algorithm)"
}
