package policies

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// RSA public keys of 512 and 1024 bits (openssl genrsa), which Go can no longer generate.
const (
	rsa512PEM = `-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKwaaxTwMP/vrznoLuUbvvkk5xJjbmaq
rzpGNxiFfCL0vaFAB6fvuWjALxq0DlAEexkMAfAgjhaE9uG6a9KOduUCAwEAAQ==
-----END PUBLIC KEY-----
`
	rsa1024PEM = `-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDierz4TQnz7GIlA8KtUvhkuyR5
01vlpoH1ERuP/F4R23W9ozwoFvV2rBvEHoOHp8zkQcpTNgz2t6xo5U0WuIMdJHU5
5mLVNHVtoYl+q+HwNmmXL4H8zq65upOfBG7eeEY1/6MQMbyPLcNxf0SZ+G/hNY4p
J3ERi0JOOHWy/l6t9wIDAQAB
-----END PUBLIC KEY-----
`
)

// TestJWTRSAKeySize: an RSA key that cannot verify any token (under 1024 bits) is a positioned
// policy error; a weak one (under 2048 bits) loads with a positioned warning.
func TestJWTRSAKeySize(t *testing.T) {
	policy := func(pem string) string {
		k, _ := json.Marshal(pem)
		return fmt.Sprintf(`{
  "idps": [ { "name": "jwt", "type": "jwt-auth" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "jwt", "key": "a", "algorithm": "RS256", "public_key": %s } ] } ],
  "routes": [ { "name": "r", "paths": ["/"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`, k)
	}
	t.Run("512 bits is refused", func(t *testing.T) {
		path := filepath.Join(writeFiles(t, map[string]string{"p.json": policy(rsa512PEM)}), "p.json")
		errs := Errors(Validate(path, Options{}))
		if len(errs) != 1 {
			t.Fatalf("got %v, want one error", errs)
		}
		e := errs[0]
		if e.Line != 3 || e.Path != "$.consumers[0].idps[0]" || !strings.Contains(e.Msg, "512-bit RSA key") {
			t.Errorf("got %v (line %d, path %s), want line 3 at $.consumers[0].idps[0] naming the 512-bit key", e, e.Line, e.Path)
		}
	})
	t.Run("1024 bits loads with a warning", func(t *testing.T) {
		path := filepath.Join(writeFiles(t, map[string]string{"p.json": policy(rsa1024PEM)}), "p.json")
		warns, err := Check(path, Options{})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if len(warns) != 1 || warns[0].Line != 3 || warns[0].Path != "$.consumers[0].idps[0]" || !strings.Contains(warns[0].Msg, "1024-bit RSA key") {
			t.Fatalf("got warnings %v, want one at line 3, $.consumers[0].idps[0], naming the 1024-bit key", warns)
		}
		snap, err := Load(path, Options{})
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		defer snap.Close()
		if len(snap.Warnings) != 1 {
			t.Errorf("Snapshot.Warnings: got %v, want 1", snap.Warnings)
		}
	})
}
