// Package local holds the providers that decide from the policy alone, without asking an IdP:
// key-auth, basic-auth, jwt-auth and hmac-auth, named and behaving as APISIX's plugins.
//
// They are one package rather than four because they share the Authorization header (basic,
// Signature and Bearer schemes; see places.go) and the rule that a second credential of one
// provider in a request is refused: the tests of how they coexist in one chain need all four.
// The client side of hmac-auth (SignHMAC, SignRequest) lives here too, next to the verifier it
// must agree with.
package local
