package policies

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// writeScalePolicy writes a key-auth policy with n consumers, each with one binding and a
// limit-count, the shape of the scale runs of issue 6.
func writeScalePolicy(tb testing.TB, path string, n int) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(`{"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "idps": [{"name": "keys", "type": "key-auth"}], "consumers": [`)
	var num []byte
	for i := 0; i < n; i++ {
		if i > 0 {
			w.WriteString(", ")
		}
		num = strconv.AppendInt(num[:0], int64(i), 10)
		w.WriteString(`{"username": "c`)
		w.Write(num)
		w.WriteString(`", "idps": [{"idp": "keys", "key": "key-`)
		w.Write(num)
		w.WriteString(`-abcdefgh"}], "plugins": {"limit-count": {"count": 100, "time_window": 60}}}`)
	}
	w.WriteString(`], "routes": [{"name": "r", "paths": ["/{rest:.*}"], "upstream": {"targets": [{"url": "http://127.0.0.1:1"}]}}]}`)
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func benchmarkLoad(b *testing.B, path string, want int) {
	b.Helper()
	if fi, err := os.Stat(path); err == nil {
		b.SetBytes(fi.Size())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		snap, err := Load(path, Options{})
		if err != nil {
			b.Fatalf("Load: %v", err)
		}
		if want >= 0 && snap.Consumers.Len() != want {
			b.Fatalf("got %d consumers, want %d", snap.Consumers.Len(), want)
		}
		snap.Close()
	}
}

func BenchmarkLoad100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "p.json")
	writeScalePolicy(b, path, 100_000)
	benchmarkLoad(b, path, 100_000)
}

func BenchmarkLoad1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "p.json")
	writeScalePolicy(b, path, 1_000_000)
	benchmarkLoad(b, path, 1_000_000)
}

// BenchmarkLoadFile loads the policy named by PORTCULLIS_BENCH_POLICY, for measuring the
// peak RSS of one load of a given file (go test -c, then /usr/bin/time -v).
func BenchmarkLoadFile(b *testing.B) {
	path := os.Getenv("PORTCULLIS_BENCH_POLICY")
	if path == "" {
		b.Skip("PORTCULLIS_BENCH_POLICY is not set")
	}
	benchmarkLoad(b, path, -1)
}
