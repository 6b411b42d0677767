package integration

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testcert"
)

// TestTLSListener: with tls the gateway serves HTTPS, HTTP/2 included, through the whole
// pipeline; a renewed certificate is served after a reload.
func TestTLSListener(t *testing.T) {
	up := newUpstream(t, nil)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := testcert.Write(t, certFile, keyFile, "127.0.0.1", 24*time.Hour)
	gw := startGatewayArgs(t, policyJSON(t, map[string]any{
		"tls":       map[string]any{"cert_file": certFile, "key_file": keyFile},
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "c00", "idps": keyAuth("c00")}},
		"routes":    []any{route("api", up.URL, nil)},
	}), []string{"-watch=false"})
	url := strings.Replace(gw.URL, "http://", "https://", 1) + "/api"

	client := func(trust *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(trust)
		return &http.Client{Timeout: hangLimit, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
		}}
	}
	get := func(c *http.Client, header map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp
	}

	c := client(first)
	resp := get(c, map[string]string{"apikey": "c00-key"})
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("with a key: got %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	if got := up.last().Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("upstream X-Forwarded-Proto: got %q, want https", got)
	}
	if got := get(c, nil).StatusCode; got != 401 {
		t.Errorf("without a key: got %d, want 401", got)
	}
	expiry := func() float64 { return gw.metric("portcullis_tls_certificate_expiry_timestamp_seconds") }
	if got, want := expiry(), float64(first.NotAfter.Unix()); got != want {
		t.Errorf("certificate expiry metric: got %v, want %v", got, want)
	}

	// Renewal: new files in place, then a reload (the files are also read again on their own
	// within tlscert.CheckEvery of a change).
	second := testcert.Write(t, certFile, keyFile, "127.0.0.1", 90*24*time.Hour)
	before := gw.status()["reloads"].(float64)
	gw.reloadSignal()
	gw.waitStatus("the reload", func(st map[string]any) bool { return st["reloads"].(float64) > before })
	resp = get(client(second), map[string]string{"apikey": "c00-key"})
	if resp.StatusCode != 200 {
		t.Fatalf("after renewal: got %d, want 200", resp.StatusCode)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after renewal: served serial %v, want the renewed %v", got, second.SerialNumber)
	}
	if got, want := expiry(), float64(second.NotAfter.Unix()); got != want {
		t.Errorf("certificate expiry metric after renewal: got %v, want %v", got, want)
	}
}

// TestPrivateCAUpstream: an https upstream with a certificate of a private CA is refused by
// default (502) and reached when SSL_CERT_FILE names the CA, as the README says.
func TestPrivateCAUpstream(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "up.crt"), filepath.Join(dir, "up.key")
	testcert.Write(t, certFile, keyFile, "127.0.0.1", time.Hour)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "private") }))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	up.StartTLS()
	t.Cleanup(up.Close)
	policy := policyJSON(t, map[string]any{
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "c00", "idps": keyAuth("c00")}},
		"routes":    []any{route("api", up.URL, nil)},
	})
	key := map[string]string{"apikey": "c00-key"}

	if r := do(t, "GET", startGateway(t, policy).URL+"/api", key); r.Status != 502 {
		t.Errorf("without the CA: got %d, want 502", r.Status)
	}
	r := do(t, "GET", startGateway(t, policy, "SSL_CERT_FILE="+certFile).URL+"/api", key)
	if r.Status != 200 || r.Body != "private" {
		t.Errorf("with SSL_CERT_FILE: got %d %q, want 200 \"private\"", r.Status, r.Body)
	}
}
