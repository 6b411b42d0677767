package local

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
)

// This file holds what the hmac-auth verifier and its clients share: the algorithms, the signing
// string of APISIX 3.11+ (draft-cavage-http-signatures), and the client-side signer.

// hmacHash returns the hash of an APISIX hmac-auth algorithm name, or nil when unknown.
func hmacHash(algorithm string) func() hash.Hash {
	switch algorithm {
	case "hmac-sha1":
		return sha1.New
	case "hmac-sha256":
		return sha256.New
	case "hmac-sha512":
		return sha512.New
	}
	return nil
}

// HMACAlgorithms are the algorithm names hmac-auth knows, as APISIX spells them.
func HMACAlgorithms() []string { return []string{"hmac-sha1", "hmac-sha256", "hmac-sha512"} }

// requestTargetHeader is the pseudo-header that signs the method and the request URI.
const requestTargetHeader = "@request-target"

// appendSigningString appends the signing string as APISIX builds it: the keyId, then per listed
// header "name: value", or "METHOD target" for @request-target, each line ended by "\n". A listed
// header the request lacks contributes no line, as in APISIX. Names must be lowercase
// (draft-cavage-http-signatures; parseSignatureParams and SignHMAC lowercase them), so that what
// the coverage checks read and what is signed are the same names.
func appendSigningString(dst []byte, keyID string, headers []string, method, target string, lookup func(name string) (string, bool)) []byte {
	dst = append(dst, keyID...)
	dst = append(dst, '\n')
	for _, h := range headers {
		if v, ok := lookup(h); ok {
			dst = append(dst, h...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, '\n')
		} else if h == requestTargetHeader {
			dst = append(dst, method...)
			dst = append(dst, ' ')
			dst = append(dst, target...)
			dst = append(dst, '\n')
		}
	}
	return dst
}

// requestHeaderLookup reads signed header values from a request: the first value of a header, and
// the Host, which net/http keeps outside the header map.
func requestHeaderLookup(r *http.Request) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if strings.EqualFold(name, "host") {
			if r.Host != "" {
				return r.Host, true
			}
		}
		if name == requestTargetHeader {
			return "", false
		}
		if vs := r.Header.Values(name); len(vs) > 0 {
			return vs[0], true
		}
		return "", false
	}
}

// requestTarget is the request URI as the client sent it, path and query (nginx's $request_uri).
// An absolute-form request line ("GET http://host/path") signs its path and query only, as nginx
// does.
func requestTarget(r *http.Request) string {
	t := r.RequestURI
	if (t == "" || !strings.HasPrefix(t, "/")) && r.URL != nil {
		t = r.URL.RequestURI()
	}
	if t == "" {
		t = "/"
	}
	return t
}

// BodyDigest is the Digest header value hmac-auth expects for body: "SHA-256=<base64>".
func BodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
}

// SignInput is a request to sign for hmac-auth.
type SignInput struct {
	KeyID  string
	Secret string
	// Algorithm is one of HMACAlgorithms; default "hmac-sha256".
	Algorithm string
	// Method and Target are the request method and URI as sent ("/path?query"; default "/").
	Method string
	Target string
	// Headers are the signed header names in order; default "@request-target" and "date", and
	// "digest" when Body is set. Names are lowercased (draft-cavage), as the verifier does.
	Headers []string
	// Header holds the values of the signed headers. A listed header must be present in it, except
	// "@request-target", and "digest" when Body is set.
	Header http.Header
	// Body, when non-nil, is digested into SignOutput.Digest (for validate_request_body).
	Body []byte
}

// SignOutput is what a client adds to its request.
type SignOutput struct {
	// Authorization is the full Authorization header value.
	Authorization string
	// Digest is the Digest header value, or "" without a body.
	Digest string
	// SigningString is the signed text, for debugging a client.
	SigningString string
}

// SignHMAC signs a request for hmac-auth. It is what the CLI's sign command and the tests use.
func SignHMAC(in SignInput) (SignOutput, error) {
	if in.Algorithm == "" {
		in.Algorithm = "hmac-sha256"
	}
	if in.Target == "" {
		in.Target = "/"
	}
	if in.Headers == nil {
		in.Headers = []string{requestTargetHeader, "date"}
		if in.Body != nil {
			in.Headers = append(in.Headers, "digest")
		}
	}
	lower := make([]string, len(in.Headers))
	for i, h := range in.Headers {
		lower[i] = strings.ToLower(h)
	}
	in.Headers = lower
	var errs []error
	if in.KeyID == "" || strings.ContainsAny(in.KeyID, "\"\n") {
		errs = append(errs, errors.New("key id must be non-empty, without quotes or newlines"))
	}
	if in.Secret == "" {
		errs = append(errs, errors.New("secret must not be empty"))
	}
	newHash := hmacHash(in.Algorithm)
	if newHash == nil {
		errs = append(errs, fmt.Errorf("algorithm %q is not one of %s", in.Algorithm, strings.Join(HMACAlgorithms(), ", ")))
	}
	if in.Method == "" {
		errs = append(errs, errors.New("method must not be empty"))
	}
	if len(in.Headers) == 0 {
		errs = append(errs, errors.New("headers must name at least one header: a signature of the keyId alone is refused"))
	}
	var out SignOutput
	if in.Body != nil {
		out.Digest = BodyDigest(in.Body)
	}
	lookup := func(name string) (string, bool) {
		if name == requestTargetHeader {
			return "", false
		}
		if vs := in.Header.Values(name); len(vs) > 0 {
			return vs[0], true
		}
		if strings.EqualFold(name, "digest") && out.Digest != "" {
			return out.Digest, true
		}
		return "", false
	}
	for _, h := range in.Headers {
		if h == "" || strings.ContainsAny(h, " \"\n") {
			errs = append(errs, fmt.Errorf("header name %q is invalid", h))
			continue
		}
		if _, ok := lookup(h); !ok && h != requestTargetHeader {
			errs = append(errs, fmt.Errorf("header %q is listed for signing but has no value", h))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return SignOutput{}, fmt.Errorf("signing request: %w", err)
	}
	s := appendSigningString(nil, in.KeyID, in.Headers, in.Method, in.Target, lookup)
	mac := hmac.New(newHash, []byte(in.Secret))
	mac.Write(s)
	out.SigningString = string(s)
	out.Authorization = `Signature keyId="` + in.KeyID + `",algorithm="` + in.Algorithm +
		`",headers="` + strings.Join(in.Headers, " ") +
		`",signature="` + base64.StdEncoding.EncodeToString(mac.Sum(nil)) + `"`
	return out, nil
}

// SignRequest signs r in place: it takes Method, Target and Header from r (the Host from r.Host),
// and sets the Authorization header, plus Digest when in.Body is non-nil. The caller sets Date.
func SignRequest(r *http.Request, in SignInput) error {
	in.Method = r.Method
	in.Target = requestTarget(r)
	in.Header = r.Header.Clone()
	if in.Header == nil {
		in.Header = http.Header{}
	}
	if r.Host != "" && in.Header.Get("Host") == "" {
		in.Header.Set("Host", r.Host)
	}
	out, err := SignHMAC(in)
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", out.Authorization)
	if out.Digest != "" {
		r.Header.Set("Digest", out.Digest)
	}
	return nil
}
