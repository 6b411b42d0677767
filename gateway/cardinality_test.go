package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// TestConsumerCardinality: however many consumers make requests, the request counter has one
// series per route and status while the policy tracks no consumer, and one per consumer when
// it tracks all of them. By default 2000 consumers; PORTCULLIS_CARDINALITY_CONSUMERS=1000000
// measures the memory of a million (make bench-cardinality; bench/results/*-cardinality.md).
func TestConsumerCardinality(t *testing.T) {
	n := 2000
	if v := os.Getenv("PORTCULLIS_CARDINALITY_CONSUMERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("PORTCULLIS_CARDINALITY_CONSUMERS=%q: want a positive number", v)
		}
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	path := filepath.Join(t.TempDir(), "policy.json")
	writeCardinalityPolicy(t, path, n, up.URL)

	base := heapInUse()
	start := time.Now()
	snap, err := policies.Load(path, policies.Options{})
	if err != nil {
		t.Fatalf("loading %d consumers: %v", n, err)
	}
	loadTime := time.Since(start)
	loaded := heapInUse()

	// everyone sends one request through g, each as a distinct consumer.
	everyone := func(g *Gateway) time.Duration {
		start := time.Now()
		for i := range n {
			req := httptest.NewRequest("GET", "/r", nil)
			req.Header.Set("apikey", cardinalityKey(i))
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("consumer %d: got %d %s, want 200", i, rec.Code, rec.Body)
			}
		}
		return time.Since(start)
	}
	gateway := func() *Gateway {
		reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
		t.Cleanup(func() { reg.Close() })
		g, err := New(snap, Options{Limiters: reg, Metrics: NewMetrics()})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	// Per-consumer series off (the policy has no metrics block).
	off := gateway()
	offBuilt := heapInUse()
	offTime := everyone(off)
	offHeap := heapInUse()
	offSeries := len(seriesOf(t, off.metrics, "portcullis_requests_total"))
	if offSeries != 1 {
		t.Errorf("portcullis_requests_total with no consumer tracked, after %d consumers' requests: got %d series, want 1 (consumer=\"other\")", n, offSeries)
	}
	offRSS := rssBytes()
	if p := os.Getenv("PORTCULLIS_CARDINALITY_HEAPPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	// Per-consumer series on, for the comparison: the same snapshot tracking every consumer, in a
	// gateway with its own registry (the first one's stays alive, so the difference is the new
	// series).
	snap.Policy.Metrics = &policies.Metrics{AllConsumers: true}
	on := gateway()
	onBuilt := heapInUse()
	onTime := everyone(on)
	onHeap := heapInUse()
	onSeries := len(seriesOf(t, on.metrics, "portcullis_requests_total"))
	if onSeries != n {
		t.Errorf("portcullis_requests_total with every consumer tracked: got %d series, want %d", onSeries, n)
	}
	onRSS := rssBytes()

	mb := func(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	t.Logf("consumers: %d; policy loaded in %v: heap %s; gateway built: heap %s more",
		n, loadTime.Round(time.Millisecond), mb(sub(loaded, base)), mb(sub(offBuilt, loaded)))
	t.Logf("series off: %d series of portcullis_requests_total after %d distinct consumers' requests (%v): heap grew %s; process RSS %s",
		offSeries, n, offTime.Round(time.Millisecond), mb(sub(offHeap, offBuilt)), mb(offRSS))
	t.Logf("series on:  %d series (a second gateway on the same snapshot: heap %s to build) after the same requests (%v): heap grew %s (%.0f bytes per consumer and status); process RSS %s",
		onSeries, mb(sub(onBuilt, offHeap)), onTime.Round(time.Millisecond), mb(sub(onHeap, onBuilt)), float64(sub(onHeap, onBuilt))/float64(n), mb(onRSS))
	runtime.KeepAlive(off)
	runtime.KeepAlive(on)
}

func cardinalityKey(i int) string { return fmt.Sprintf("card-key-%023d", i) }

// writeCardinalityPolicy writes n key-auth consumers and one route without limits, so that
// what grows with the requests is the metrics.
func writeCardinalityPolicy(t *testing.T, path string, n int, upstream string) {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	fmt.Fprint(w, `{"idps": [ { "name": "keys", "type": "key-auth" } ], "consumers": [`+"\n")
	for i := range n {
		sep := ","
		if i == n-1 {
			sep = ""
		}
		fmt.Fprintf(w, `{ "username": "user-%d", "idps": [ { "idp": "keys", "key": %q } ] }%s`+"\n", i, cardinalityKey(i), sep)
	}
	fmt.Fprintf(w, `], "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": %q } ] } } ]}`, upstream)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// rssBytes is the process's resident set (Linux), 0 elsewhere.
func rssBytes() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseUint(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
