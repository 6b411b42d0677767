package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testcert"
)

func writePair(t *testing.T, certFile, keyFile, cn string) {
	testcert.Write(t, certFile, keyFile, cn, time.Hour)
}

// later moves the files' modification time a minute past the newest it has seen.
func later(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		m := fi.ModTime().Add(time.Minute)
		if err := os.Chtimes(f, m, m); err != nil {
			t.Fatal(err)
		}
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func commonName(t *testing.T, s *Source) string {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, cert, key, "a.test")
	other := filepath.Join(dir, "other.key")
	writePair(t, filepath.Join(dir, "other.crt"), other, "b.test")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, want string
	}{
		{"missing certificate", filepath.Join(dir, "nope.crt"), key, "no such file"},
		{"missing key", cert, filepath.Join(dir, "nope.key"), "no such file"},
		{"not PEM", garbage, key, "failed to find any PEM data"},
		{"key of another certificate", cert, other, "private key does not match public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.cert, tt.key, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// A renewed pair is served once CheckEvery has passed; a half-written one is not, and the
// previous certificate stays.
func TestRenewal(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, cert, key, "first.test")
	clk := &clock{t: time.Unix(1_000_000, 0)}
	s, err := Load(cert, key, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got := commonName(t, s); got != "first.test" {
		t.Fatalf("loaded: got %q", got)
	}

	writePair(t, cert, key, "second.test")
	later(t, cert, key) // a file system with coarse timestamps must still tell the versions apart
	if got := commonName(t, s); got != "first.test" {
		t.Fatalf("renewed within CheckEvery: got %q, want the first still", got)
	}
	clk.Add(CheckEvery)
	if got := commonName(t, s); got != "second.test" {
		t.Fatalf("renewed, CheckEvery later: got %q, want second.test", got)
	}

	if err := os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\ntruncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	later(t, key)
	clk.Add(CheckEvery)
	if got := commonName(t, s); got != "second.test" {
		t.Fatalf("half-written renewal: got %q, want second.test kept", got)
	}
}
