package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/idp/local"
)

// signOptions are the flags of sign.
type signOptions struct {
	keyID, secret, algorithm, headers, date, body string
	extra                                         repeated
}

func (o *signOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.keyID, "key-id", "", "the key_id `ID` of the binding")
	fs.StringVar(&o.secret, "secret", "", "the `SECRET` of the binding")
	fs.StringVar(&o.algorithm, "algorithm", "hmac-sha256", "the algorithm `ALG`: hmac-sha1, hmac-sha256 or hmac-sha512")
	fs.StringVar(&o.headers, "headers", "", "`NAMES` of the headers to sign, space-separated, in order; default \"@request-target date\", and digest with --body")
	fs.StringVar(&o.date, "date", "", "the Date header, an RFC 1123 `DATE`; default now")
	fs.StringVar(&o.body, "body", "", "`FILE` holding the request body, digested into a Digest header")
	fs.Var(&o.extra, "header", "another request header `\"Name: value\"`, signed when listed in --headers")
}

// cmdSign prints the headers a client sends for hmac-auth.
func cmdSign(args []string, stdout, stderr io.Writer) error {
	var o signOptions
	fs, err := parseFlags("sign", o.define, args, stdout, stderr, 2)
	if err != nil {
		return err
	}
	if o.keyID == "" || o.secret == "" {
		return usageError("sign", stderr, "missing --key-id or --secret")
	}
	method, target := strings.ToUpper(fs.Arg(0)), fs.Arg(1)

	h := http.Header{}
	if u, err := url.Parse(target); err == nil && u.IsAbs() {
		target = u.RequestURI()
		h.Set("Host", u.Host)
	}
	for _, kv := range o.extra {
		name, value, err := cutHeader("--header", kv)
		if err != nil {
			return err
		}
		h.Add(name, value)
	}
	if o.date == "" {
		o.date = time.Now().UTC().Format(http.TimeFormat)
	} else if _, err := http.ParseTime(o.date); err != nil {
		return fmt.Errorf("parsing --date: %w", err)
	}
	h.Set("Date", o.date)

	in := local.SignInput{KeyID: o.keyID, Secret: o.secret, Algorithm: o.algorithm, Method: method, Target: target,
		Header: h}
	if o.headers != "" {
		in.Headers = strings.Fields(o.headers)
	}
	if o.body != "" {
		body, err := os.ReadFile(o.body)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		in.Body = body
	}
	out, err := local.SignHMAC(in)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Date: %s\n", o.date)
	if out.Digest != "" {
		fmt.Fprintf(stdout, "Digest: %s\n", out.Digest)
	}
	fmt.Fprintf(stdout, "Authorization: %s\n", out.Authorization)
	return nil
}

// tokenOptions are the flags of token.
type tokenOptions struct {
	key, keyClaim, secret, privateKey, algorithm string
	ttl                                          time.Duration
	claims                                       repeated
}

func (o *tokenOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.key, "key", "", "the binding's `KEY`, the value of the key claim")
	fs.StringVar(&o.keyClaim, "key-claim", "key", "the `CLAIM` naming the binding (the provider's key_claim)")
	fs.StringVar(&o.secret, "secret", "", "the HMAC `SECRET`, for HS256, HS384, HS512")
	fs.StringVar(&o.privateKey, "private-key", "", "`PEMFILE` holding the private key, for RS*, PS*, ES*, EdDSA")
	fs.StringVar(&o.algorithm, "algorithm", "", "the signature algorithm `ALG`; default HS256 with --secret, else from the key type")
	fs.DurationVar(&o.ttl, "ttl", time.Hour, "lifetime `DURATION`: sets exp; 0: no exp")
	fs.Var(&o.claims, "claim", "an extra string claim `k=v`")
}

// minHMACKeyBytes is RFC 7518 §3.2's shortest key for an HS algorithm: the hash's output
// size. ok is false for other algorithms.
func minHMACKeyBytes(alg string) (n int, ok bool) {
	switch alg {
	case "HS256":
		return 32, true
	case "HS384":
		return 48, true
	case "HS512":
		return 64, true
	}
	return 0, false
}

// cmdToken prints a signed JWT whose key claim names a jwt-auth binding.
func cmdToken(args []string, stdout, stderr io.Writer) error {
	var o tokenOptions
	if _, err := parseFlags("token", o.define, args, stdout, stderr, 0); err != nil {
		return err
	}
	switch {
	case o.key == "":
		return usageError("token", stderr, "missing --key")
	case (o.secret == "") == (o.privateKey == ""):
		return usageError("token", stderr, "give one of --secret and --private-key")
	case o.ttl < 0:
		return usageError("token", stderr, "--ttl must not be negative")
	}
	var signKey any
	alg := o.algorithm
	if o.secret != "" {
		signKey = []byte(o.secret)
		if alg == "" {
			alg = "HS256"
		}
		// A short secret still signs (the binding may hold one), but can be brute-forced.
		if n, ok := minHMACKeyBytes(alg); ok && len(o.secret) < n {
			fmt.Fprintf(stderr, "warning: the --secret is %d bytes; RFC 7518 §3.2 wants at least %d for %s\n", len(o.secret), n, alg)
		}
	} else {
		pemBytes, err := os.ReadFile(o.privateKey)
		if err != nil {
			return fmt.Errorf("reading private key: %w", err)
		}
		k, err := jwk.ParseKey(pemBytes, jwk.WithPEM(true))
		if err != nil {
			return fmt.Errorf("parsing private key: %w", err)
		}
		if private, err := jwk.IsPrivateKey(k); err != nil || !private {
			return errors.New("parsing private key: the PEM file holds no private key")
		}
		if alg == "" {
			if alg, err = defaultAlgorithm(k); err != nil {
				return err
			}
		}
		signKey = k
	}

	tok := jwt.New()
	now := time.Now()
	set := func(name string, v any) error {
		if err := tok.Set(name, v); err != nil {
			return fmt.Errorf("setting claim %q: %w", name, err)
		}
		return nil
	}
	errs := []error{set(o.keyClaim, o.key), set(jwt.IssuedAtKey, now)}
	if o.ttl > 0 {
		errs = append(errs, set(jwt.ExpirationKey, now.Add(o.ttl)))
	}
	for _, kv := range o.claims {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			errs = append(errs, fmt.Errorf("parsing --claim %q: want k=v", kv))
			continue
		}
		errs = append(errs, set(name, value))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(alg), signKey))
	if err != nil {
		return fmt.Errorf("signing token with %s: %w", alg, err)
	}
	fmt.Fprintln(stdout, string(signed))
	return nil
}

// defaultAlgorithm picks the usual algorithm for a private key's type.
func defaultAlgorithm(k jwk.Key) (string, error) {
	switch kk := k.(type) {
	case jwk.RSAPrivateKey:
		return "RS256", nil
	case jwk.ECDSAPrivateKey:
		switch kk.Crv() {
		case jwa.P256:
			return "ES256", nil
		case jwa.P384:
			return "ES384", nil
		case jwa.P521:
			return "ES512", nil
		}
	case jwk.OKPPrivateKey:
		if kk.Crv() == jwa.Ed25519 {
			return "EdDSA", nil
		}
	}
	return "", fmt.Errorf("no default algorithm for a %s key: pass --algorithm", k.KeyType())
}

// cmdHashPassword reads a password (the first line of stdin) and prints its bcrypt hash, for the
// password of a basic-auth binding.
func cmdHashPassword(stdin io.Reader, stdout io.Writer) error {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading password: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	if password == "" {
		return errors.New("reading password: stdin holds no password")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("hashing password: %w", err)
	}
	fmt.Fprintln(stdout, string(hash))
	return nil
}
