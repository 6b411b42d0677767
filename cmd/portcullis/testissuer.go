package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/portcullis/portcullis/policies"
)

// OIDC and Keycloak cases run offline: the test file names a key ("issuer_key") that stands in
// for every issuer's signing key. The providers' HTTP client is answered in process: each
// issuer's discovery document and a JWKS with that key's public half; any other call to an
// identity provider (introspection, Keycloak's permission decisions) fails, so such cases are
// refused as "not supported offline" rather than sent to the network.

// testIssuerKID is the kid of the stand-in key.
const testIssuerKID = "portcullis-test"

// testIssuer is the stand-in of the policy's issuers.
type testIssuer struct {
	key  jwk.Key // private, with kid testIssuerKID
	alg  string
	jwks []byte
}

// newTestIssuer reads the file's issuer_key; nil without one.
func newTestIssuer(ik *testIssuerKey) (*testIssuer, error) {
	if ik == nil {
		return nil, nil
	}
	k, err := jwk.ParseKey([]byte(ik.PrivateKey), jwk.WithPEM(true))
	if err != nil {
		return nil, fmt.Errorf("parsing issuer_key.private_key: %w", err)
	}
	if private, err := jwk.IsPrivateKey(k); err != nil || !private {
		return nil, errors.New("parsing issuer_key.private_key: the PEM holds no private key")
	}
	alg := ik.Algorithm
	if alg == "" {
		if alg, err = defaultAlgorithm(k); err != nil {
			return nil, err
		}
	}
	_ = k.Set(jwk.KeyIDKey, testIssuerKID)
	_ = k.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(alg))
	pub, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("issuer_key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	return &testIssuer{key: k, alg: alg, jwks: b}, nil
}

// RoundTrip answers the discovery documents and JWKS of every issuer; nothing else.
func (ti *testIssuer) RoundTrip(r *http.Request) (*http.Response, error) {
	u := *r.URL
	u.RawQuery = ""
	s := u.String()
	switch {
	case strings.HasSuffix(s, "/.well-known/openid-configuration"):
		iss := strings.TrimSuffix(s, "/.well-known/openid-configuration")
		doc, _ := json.Marshal(map[string]string{"issuer": iss, "jwks_uri": iss + "/.portcullis-test/jwks"})
		return jsonResponse(r, doc), nil
	case strings.HasSuffix(s, "/.portcullis-test/jwks"):
		return jsonResponse(r, ti.jwks), nil
	}
	return nil, fmt.Errorf("portcullis test runs offline: not calling %s %s", r.Method, r.URL.Redacted())
}

func jsonResponse(r *http.Request, body []byte) *http.Response {
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: r}
}

// token signs claims for the policy's provider idpName: iss is its issuer, aud its audience
// (or client id), iat now and exp an hour later, unless the claims set them.
func (ti *testIssuer) token(snap *policies.Snapshot, idpName string, claims map[string]any) (header, value string, err error) {
	if ti == nil {
		return "", "", errors.New(`an "oidc" credential needs the file's issuer_key`)
	}
	var cfg *policies.IdP
	for i := range snap.Policy.IdPs {
		if snap.Policy.IdPs[i].Name == idpName {
			cfg = &snap.Policy.IdPs[i]
		}
	}
	if cfg == nil || (cfg.Type != "oidc" && cfg.Type != "keycloak") {
		return "", "", fmt.Errorf("oidc.idp %q is no oidc or keycloak provider of the policy", idpName)
	}
	iss := strings.TrimRight(cfg.Issuer, "/")
	if cfg.Type == "keycloak" {
		iss = strings.TrimRight(cfg.URL, "/") + "/realms/" + cfg.Realm
	}
	claims = maps.Clone(claims)
	now := time.Now()
	defaults := map[string]any{jwt.IssuerKey: iss, jwt.IssuedAtKey: now.Unix(), jwt.ExpirationKey: now.Add(time.Hour).Unix()}
	if aud := cfg.Audience; aud != "" {
		defaults[jwt.AudienceKey] = aud
	} else if cfg.ClientID != "" {
		defaults[jwt.AudienceKey] = cfg.ClientID
	}
	for k, v := range defaults {
		if claims[k] == nil {
			claims[k] = v
		}
	}
	tok := jwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			return "", "", fmt.Errorf("setting claim %q: %w", k, err)
		}
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(ti.alg), ti.key))
	if err != nil {
		return "", "", fmt.Errorf("signing the oidc token: %w", err)
	}
	header = cfg.Header
	if header == "" || strings.EqualFold(header, "Authorization") {
		return "Authorization", "Bearer " + string(signed), nil
	}
	return header, string(signed), nil
}
