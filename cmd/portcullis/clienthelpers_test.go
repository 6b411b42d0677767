package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
)

// headerLines parses "Name: value" lines into a header.
func headerLines(t *testing.T, out string) http.Header {
	t.Helper()
	h := http.Header{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("got line %q, want \"Name: value\"", line)
		}
		h.Add(name, value)
	}
	return h
}

func TestCmdSignVerifies(t *testing.T) {
	const date = "Fri, 06 Sep 2024 06:41:29 GMT"
	at, err := http.ParseTime(date)
	if err != nil {
		t.Fatal(err)
	}
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	body := []byte(`{"name": "world"}`)
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		method     string
		target     string
		extra      http.Header
		body       []byte
		validate   bool
		wantDigest bool
	}{
		{name: "defaults", args: []string{"GET", "/petstore/pets?limit=1"}, method: "GET", target: "/petstore/pets?limit=1"},
		{name: "lowercase method", args: []string{"get", "/x"}, method: "GET", target: "/x"},
		{name: "sha512 and custom header", args: []string{"--algorithm", "hmac-sha512", "--headers", "@request-target date x-nonce", "--header", "X-Nonce: 42", "GET", "/x"},
			method: "GET", target: "/x", extra: http.Header{"X-Nonce": {"42"}}},
		{name: "absolute url", args: []string{"--headers", "@request-target host date", "DELETE", "http://api.example:9080/x?y=1"},
			method: "DELETE", target: "http://api.example:9080/x?y=1"},
		{name: "body", args: []string{"--body", bodyFile, "POST", "/post"}, method: "POST", target: "/post", body: body, validate: true, wantDigest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--key-id", "john-key", "--secret", "john-secret-key", "--date", date}, tt.args...)
			if err := cmdSign(args, &stdout, &stderr); err != nil {
				t.Fatalf("got %v (stderr %q), want success", err, stderr.String())
			}
			h := headerLines(t, stdout.String())
			if got := h.Get("Date"); got != date {
				t.Errorf("got Date %q, want %q", got, date)
			}
			if got := h.Get("Digest") != ""; got != tt.wantDigest {
				t.Errorf("got Digest present %v, want %v", got, tt.wantDigest)
			}

			p, err := local.NewHMACAuth(local.HMACAuthConfig{Name: "hmac", ValidateRequestBody: tt.validate, Now: func() time.Time { return at }}, nil)
			if err != nil {
				t.Fatal(err)
			}
			bd, err := p.Compile(idp.BindingSpec{KeyID: "john-key", Secret: "john-secret-key"})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(tt.method, tt.target, bytes.NewReader(tt.body))
			for k, v := range h {
				r.Header[k] = v
			}
			for k, v := range tt.extra {
				r.Header[k] = v
			}
			cred, err := p.Extract(context.Background(), r)
			if err != nil || cred == nil {
				t.Fatalf("extract: got %v, %v, want a credential", cred, err)
			}
			if err := p.Verify(context.Background(), r, cred, bd); err != nil {
				t.Fatalf("verify: got %v, want granted", err)
			}
		})
	}
}

func TestCmdSignUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "no arguments", args: nil},
		{name: "no secret", args: []string{"--key-id", "k", "GET", "/"}},
		{name: "unknown flag", args: []string{"--nope"}},
		{name: "bad algorithm", args: []string{"--key-id", "k", "--secret", "s", "--algorithm", "md5", "GET", "/"}},
		{name: "bad date", args: []string{"--key-id", "k", "--secret", "s", "--date", "yesterday", "GET", "/"}},
		{name: "missing body file", args: []string{"--key-id", "k", "--secret", "s", "--body", "/nonexistent/body", "GET", "/"}},
		{name: "listed header not given", args: []string{"--key-id", "k", "--secret", "s", "--headers", "@request-target x-nonce", "GET", "/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := cmdSign(tt.args, &stdout, &stderr); err == nil {
				t.Fatalf("got success (stdout %q), want an error", stdout.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("got stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func writePrivatePEM(t *testing.T, k crypto.Signer) (privFile, pubPEM string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	privFile = filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return privFile, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

func TestCmdTokenVerifies(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaFile, rsaPub := writePrivatePEM(t, rsaKey)
	ecFile, ecPub := writePrivatePEM(t, ecKey)
	edFile, edPub := writePrivatePEM(t, edKey)

	tests := []struct {
		name string
		args []string
		spec idp.BindingSpec
		cfg  local.JWTAuthConfig
	}{
		{name: "hs256", args: []string{"--secret", "s3cret"}, spec: idp.BindingSpec{Secret: "s3cret"}},
		{name: "hs512", args: []string{"--secret", "s3cret", "--algorithm", "HS512"}, spec: idp.BindingSpec{Secret: "s3cret", Algorithm: "HS512"}},
		{name: "rs256 default", args: []string{"--private-key", rsaFile}, spec: idp.BindingSpec{PublicKey: rsaPub, Algorithm: "RS256"}},
		{name: "ps384", args: []string{"--private-key", rsaFile, "--algorithm", "PS384"}, spec: idp.BindingSpec{PublicKey: rsaPub, Algorithm: "PS384"}},
		{name: "es384 default", args: []string{"--private-key", ecFile}, spec: idp.BindingSpec{PublicKey: ecPub, Algorithm: "ES384"}},
		{name: "eddsa default", args: []string{"--private-key", edFile}, spec: idp.BindingSpec{PublicKey: edPub, Algorithm: "EdDSA"}},
		{name: "custom key claim and claims", args: []string{"--secret", "s3cret", "--key-claim", "client", "--claim", "role=admin", "--ttl", "0"},
			spec: idp.BindingSpec{Secret: "s3cret"}, cfg: local.JWTAuthConfig{KeyClaim: "client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := cmdToken(append([]string{"--key", "user-key"}, tt.args...), &stdout, &stderr); err != nil {
				t.Fatalf("got %v (stderr %q), want success", err, stderr.String())
			}
			cfg := tt.cfg
			cfg.Name = "jwt"
			p, err := local.NewJWTAuth(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			spec := tt.spec
			spec.Key = "user-key"
			bd, err := p.Compile(spec)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(stdout.String()))
			cred, err := p.Extract(context.Background(), r)
			if err != nil || cred == nil {
				t.Fatalf("extract: got %v, %v, want a credential", cred, err)
			}
			if cred.Lookup != "user-key" {
				t.Fatalf("got lookup %q, want %q", cred.Lookup, "user-key")
			}
			if err := p.Verify(context.Background(), r, cred, bd); err != nil {
				t.Fatalf("verify: got %v, want granted", err)
			}
		})
	}
}

func TestCmdTokenUsage(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, rsaPub := writePrivatePEM(t, rsaKey)
	pubFile := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(pubFile, []byte(rsaPub), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{name: "no key", args: []string{"--secret", "s"}},
		{name: "neither secret nor private key", args: []string{"--key", "k"}},
		{name: "both secret and private key", args: []string{"--key", "k", "--secret", "s", "--private-key", pubFile}},
		{name: "public key file", args: []string{"--key", "k", "--private-key", pubFile}},
		{name: "algorithm mismatch", args: []string{"--key", "k", "--secret", "s", "--algorithm", "RS256"}},
		{name: "bad claim", args: []string{"--key", "k", "--secret", "s", "--claim", "novalue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := cmdToken(tt.args, &stdout, &stderr); err == nil {
				t.Fatalf("got success (stdout %q), want an error", stdout.String())
			}
		})
	}
}

func TestCmdHashPassword(t *testing.T) {
	tests := []struct {
		name    string
		stdin   string
		want    string
		wantErr bool
	}{
		{name: "line", stdin: "hunter2\nignored\n", want: "hunter2"},
		{name: "crlf", stdin: "hunter2\r\n", want: "hunter2"},
		{name: "no newline", stdin: "hunter2", want: "hunter2"},
		{name: "empty", stdin: "", wantErr: true},
		{name: "empty line", stdin: "\n", wantErr: true},
		{name: "too long for bcrypt", stdin: strings.Repeat("x", 73), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := cmdHashPassword(strings.NewReader(tt.stdin), &stdout)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got hash %q, want an error", stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hash := strings.TrimSpace(stdout.String())
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(tt.want)); err != nil {
				t.Fatalf("got hash %q that does not match %q: %v", hash, tt.want, err)
			}
			p := local.NewBasicAuth(local.BasicAuthConfig{Name: "basic"}, nil)
			if _, err := p.Compile(idp.BindingSpec{Username: "u", Password: hash}); err != nil {
				t.Fatalf("basic-auth rejects the hash: %v", err)
			}
		})
	}
}

// errIsExit reports whether err is the usage exit status.
func errIsExit(err error) bool {
	var ee exitError
	return errors.As(err, &ee)
}

func TestCmdUsageExitStatus(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := cmdSign(nil, &stdout, &stderr); !errIsExit(err) {
		t.Errorf("sign: got %v, want an exit status", err)
	}
	if !strings.Contains(stderr.String(), "usage: portcullis sign") {
		t.Errorf("sign: got stderr %q, want the usage", stderr.String())
	}
	stderr.Reset()
	if err := cmdToken(nil, &stdout, &stderr); !errIsExit(err) {
		t.Errorf("token: got %v, want an exit status", err)
	}
	if !strings.Contains(stderr.String(), "usage: portcullis token") {
		t.Errorf("token: got stderr %q, want the usage", stderr.String())
	}
}
