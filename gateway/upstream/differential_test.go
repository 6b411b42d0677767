package upstream

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/gateway/upstream/upstreamtest"
)

// seen is what the upstream received: the parsed request and its body.
type seen struct {
	method, uri, host string
	header            http.Header
	body              string
}

// FuzzPoolMatchesTransport is a differential test of the pool against http.Transport: for any
// request the pipeline may forward (a method token, a path, a header, a body of known length),
// the upstream receives the same request from both (modulo header order), and both read the
// same response from it. A request Transport refuses is not one the pipeline forwards (net/http's
// server refused it first) and is skipped, but the pool must refuse a header Transport refuses
// for a line break or NUL.
func FuzzPoolMatchesTransport(f *testing.F) {
	f.Add("GET", "/a/b?c=d", "X-Test", "v", "", 200, "X-Up", "u", "hello")
	f.Add("POST", "/", "Content-Type", "application/json", `{"a":1}`, 201, "Set-Cookie", "a=b", "")
	f.Add("POST", "/empty", "Accept", "*/*", "", 204, "X-Up", "", "")
	f.Add("PUT", "/%2F/x", "X-Forwarded-For", "1.2.3.4, 5.6.7.8", "body", 404, "Content-Type", "text/plain", "no")
	f.Add("DELETE", "/d", "X-Inject", "a\r\nX-Evil: 1", "", 200, "X-Up", "u", "")
	f.Add("HEAD", "/h", "Connection", "keep-alive", "", 200, "X-Up", "u", "")
	f.Add("OPTIONS", "*", "X-A", "1", "", 200, "Allow", "GET", "")
	f.Add("PATCH", "/p;x=1", "X-B", "\x00", "zz", 500, "X-Up", "long"+strings.Repeat("v", 300), strings.Repeat("b", 5000))

	// The upstream may see a request twice (http.Transport retries on a reused connection the
	// upstream closed): each send drains what came before it and reads the newest.
	got := make(chan seen, 64)
	drain := func() {
		for len(got) > 0 {
			<-got
		}
	}
	var answer string
	up := upstreamtest.New(f, func(_ int, r *http.Request) []byte {
		b, _ := io.ReadAll(r.Body)
		got <- seen{method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header, body: string(b)}
		return []byte(answer)
	})
	// One received request, or a failure instead of a hang if the upstream never saw it.
	received := func(t *testing.T) seen {
		select {
		case s := <-got:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("the client has a response, the upstream saw no request")
			return seen{}
		}
	}

	f.Fuzz(func(t *testing.T, method, target, hName, hValue, body string, status int, rName, rValue, rBody string) {
		if !IsToken(method) || method == http.MethodConnect || len(target) == 0 || len(target) > 1<<12 || len(body) > 1<<16 || len(rBody) > 1<<16 {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || (u.Path == "" && target != "*") || u.Host != "" || u.Scheme != "" {
			return
		}
		u.Scheme, u.Host = "http", up.URL().Host
		if status < 200 || status > 999 || !IsToken(rName) || !validHeaderValue(rValue) || strings.ContainsAny(rValue, "\t") ||
			http.CanonicalHeaderKey(rName) == "Content-Length" || http.CanonicalHeaderKey(rName) == "Transfer-Encoding" {
			return
		}
		if method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
			rBody = "" // a response to HEAD, a 204 or a 304 has no body: one would answer the next request
		}
		answer = fmt.Sprintf("HTTP/1.1 %d Status\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s", status, rName, strings.TrimSpace(rValue), len(rBody), rBody)
		build := func() *http.Request {
			r := &http.Request{Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"User-Agent": {""}}, ContentLength: int64(len(body))}
			r.Header.Add(hName, hValue)
			if len(body) > 0 {
				r.Body = io.NopCloser(strings.NewReader(body))
			}
			return r
		}
		if !Eligible(build()) {
			return
		}
		// Fresh connections for each case: what one case leaves on a connection is not the next
		// case's question.
		pool := NewPool(up.URL().Host, Counters{})
		tr := NewTransport()
		tr.ResponseHeaderTimeout = 5 * time.Second // a hang is a failure
		defer func() { _ = pool.Close(); tr.CloseIdleConnections() }()
		drain()
		tResp, tErr := tr.RoundTrip(build())
		var tSeen seen
		if tErr == nil {
			tSeen = received(t)
		}
		drain()
		pResp, pErr := pool.RoundTrip(build(), u.Host, 5*time.Second, time.Second)
		var pSeen seen
		if pErr == nil {
			pSeen = received(t)
		}
		if tErr != nil && IsTimeout(tErr) {
			t.Fatalf("transport: %v", tErr)
		}
		if tErr != nil {
			if pErr == nil {
				_ = pResp.Body.Close()
				if strings.ContainsAny(hValue, "\r\n\x00") || !IsToken(hName) {
					t.Fatalf("transport refused (%v) a header the pool sent: %q: %q", tErr, hName, hValue)
				}
			}
			return // not a request the pipeline forwards
		}
		defer tResp.Body.Close()
		if pErr != nil {
			t.Fatalf("transport sent the request, the pool refused it: %v", pErr)
		}
		defer pResp.Body.Close()
		if tSeen.method != pSeen.method || tSeen.uri != pSeen.uri || tSeen.host != pSeen.host || tSeen.body != pSeen.body {
			t.Fatalf("upstream got %q %q host %q body %q from the pool, want %q %q host %q body %q (transport)",
				pSeen.method, pSeen.uri, pSeen.host, pSeen.body, tSeen.method, tSeen.uri, tSeen.host, tSeen.body)
		}
		if !maps.EqualFunc(tSeen.header, pSeen.header, slices.Equal) {
			t.Fatalf("upstream got header %q from the pool, want %q (transport)", pSeen.header, tSeen.header)
		}
		tb, tErr := io.ReadAll(tResp.Body)
		pb, pErr := io.ReadAll(pResp.Body)
		if tErr != nil || pErr != nil {
			t.Fatalf("reading the bodies: transport %v, pool %v", tErr, pErr)
		}
		if tResp.StatusCode != pResp.StatusCode || !bytes.Equal(tb, pb) || !maps.EqualFunc(tResp.Header, pResp.Header, slices.Equal) {
			t.Fatalf("pool read %d %q %q, transport %d %q %q", pResp.StatusCode, pResp.Header, pb, tResp.StatusCode, tResp.Header, tb)
		}
	})
}
