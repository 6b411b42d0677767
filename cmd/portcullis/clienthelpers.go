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

	"github.com/portcullis/portcullis/idp"
)

// repeated is a flag that may be given several times.
const signUsage = `usage: portcullis sign --key-id ID --secret S [--algorithm hmac-sha256]
       [--headers "@request-target date [digest]"] [--date "RFC 1123 date"] [--body FILE]
       [--header "Name: value"]... METHOD PATH
prints the Date, Digest (with --body) and Authorization headers of an hmac-auth request`

// cmdSign prints the headers a client sends for hmac-auth.
func cmdSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, signUsage); fs.PrintDefaults() }
	keyID := fs.String("key-id", "", "the binding's key_id")
	secret := fs.String("secret", "", "the binding's secret")
	algorithm := fs.String("algorithm", "hmac-sha256", "hmac-sha1, hmac-sha256 or hmac-sha512")
	headers := fs.String("headers", "", `space-separated header names to sign, in order (default "@request-target date", and digest with --body)`)
	date := fs.String("date", "", "the Date header (default: now)")
	bodyFile := fs.String("body", "", "file holding the request body, digested into a Digest header")
	var extra repeated
	fs.Var(&extra, "header", `another request header "Name: value" whose value is signed when listed in --headers`)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() != 2 || *keyID == "" || *secret == "" {
		fs.Usage()
		return exitError(2)
	}
	method, target := strings.ToUpper(fs.Arg(0)), fs.Arg(1)

	h := http.Header{}
	if u, err := url.Parse(target); err == nil && u.IsAbs() {
		target = u.RequestURI()
		h.Set("Host", u.Host)
	}
	for _, kv := range extra {
		name, value, err := cutHeader("--header", kv)
		if err != nil {
			return err
		}
		h.Add(name, value)
	}
	if *date == "" {
		*date = time.Now().UTC().Format(http.TimeFormat)
	} else if _, err := http.ParseTime(*date); err != nil {
		return fmt.Errorf("parsing --date: %w", err)
	}
	h.Set("Date", *date)

	in := idp.SignInput{KeyID: *keyID, Secret: *secret, Algorithm: *algorithm, Method: method, Target: target,
		Header: h}
	if *headers != "" {
		in.Headers = strings.Fields(*headers)
	}
	if *bodyFile != "" {
		body, err := os.ReadFile(*bodyFile)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		in.Body = body
	}
	out, err := idp.SignHMAC(in)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Date: %s\n", *date)
	if out.Digest != "" {
		fmt.Fprintf(stdout, "Digest: %s\n", out.Digest)
	}
	fmt.Fprintf(stdout, "Authorization: %s\n", out.Authorization)
	return nil
}

const tokenUsage = `usage: portcullis token --key K (--secret S | --private-key PEMFILE) [--algorithm A]
       [--ttl 1h] [--key-claim key] [--claim k=v]...
prints a signed JWT for jwt-auth`

// cmdToken prints a signed JWT whose key claim names a jwt-auth binding.
func cmdToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, tokenUsage); fs.PrintDefaults() }
	key := fs.String("key", "", "the binding's key (the value of the key claim)")
	keyClaim := fs.String("key-claim", "key", "the claim naming the binding")
	secret := fs.String("secret", "", "the HMAC secret (HS256/384/512)")
	privateKey := fs.String("private-key", "", "PEM file of the private key (RS*, PS*, ES*, EdDSA)")
	algorithm := fs.String("algorithm", "", "signature algorithm (default HS256 with --secret, else from the key type)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime: sets exp (0: no exp)")
	var claims repeated
	fs.Var(&claims, "claim", "an extra string claim k=v (repeatable)")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() != 0 || *key == "" || (*secret == "") == (*privateKey == "") || *ttl < 0 {
		fs.Usage()
		return exitError(2)
	}

	var signKey any
	alg := *algorithm
	if *secret != "" {
		signKey = []byte(*secret)
		if alg == "" {
			alg = "HS256"
		}
	} else {
		pemBytes, err := os.ReadFile(*privateKey)
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
	errs := []error{set(*keyClaim, *key), set(jwt.IssuedAtKey, now)}
	if *ttl > 0 {
		errs = append(errs, set(jwt.ExpirationKey, now.Add(*ttl)))
	}
	for _, kv := range claims {
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
