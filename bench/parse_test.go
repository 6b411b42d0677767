package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want wrkResult
	}{
		{"clean", `Running 10s test @ http://127.0.0.1:8080/bench
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  312.11us  12.01ms   91.23%
    Req/Sec    63.12k     2.01k   66.00k    80.00%
  628001 requests in 10.00s, 744.99MB read
Requests/sec:  62797.53
Transfer/sec:     74.49MB
`, wrkResult{requests: 628001, rps: 62797.53}},
		{"errors", `  1 threads and 64 connections
  120 requests in 1.00s, 100.00KB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 7
Requests/sec:    119.50
`, wrkResult{requests: 120, rps: 119.5, non2xx: 7, socketErrors: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if err != nil {
				t.Fatalf("parseWrk: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("garbage", func(t *testing.T) {
		if _, err := parseWrk("Usage: wrk <options> <url>"); err == nil {
			t.Error("got no error for output without a request count")
		}
	})
}

func TestWrkDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{10 * time.Second, "10s"},
		{1500 * time.Millisecond, "2s"},
		{300 * time.Millisecond, "1s"},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			if got := wrkDuration(tt.in); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name holds a space and a parenthesis, as a process may name itself.
	line := "4242 (nginx: work) r) S 4241 4241 4241 0 -1 4194624 100 0 0 0 1234 567 0 0 20 0 1 0 100 0 0\n"
	got, err := parseProcStat(line)
	if err != nil {
		t.Fatalf("parseProcStat: %v", err)
	}
	want := procStat{ppid: 4241, utime: 1234, stime: 567}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseProcStat("4242 no parenthesis"); err == nil {
		t.Error("got no error for a line without the command name")
	}
}

func TestParseTimeWaits(t *testing.T) {
	// 127.0.0.1:8080 (1F90) ↔ 127.0.0.1:40000 in TIME_WAIT, one ESTABLISHED socket on the same
	// port, and a TIME_WAIT socket of another server (127.0.0.2:9000).
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 0100007F:9C40 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   1: 0100007F:1F90 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000
   2: 0200007F:2328 0100007F:9C42 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`
	server := netip.MustParseAddrPort("127.0.0.1:8080")
	got, err := parseTimeWaits(table, []netip.AddrPort{server})
	if err != nil {
		t.Fatalf("parseTimeWaits: %v", err)
	}
	want := conn{server, netip.MustParseAddrPort("127.0.0.1:40000")}
	if _, ok := got[want]; len(got) != 1 || !ok {
		t.Errorf("got %v, want only %v", got, want)
	}
	if n := newSince(got, got); n != 0 {
		t.Errorf("newSince(same, same) = %d, want 0", n)
	}
	if n := newSince(map[conn]struct{}{}, got); n != 1 {
		t.Errorf("newSince(empty, one) = %d, want 1", n)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.50, 500 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{0.999, 999 * time.Microsecond},
		{1, 1000 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := percentile(lat, tt.q); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median even = %v, want 2.5", got)
	}
}

func TestParseReloadLog(t *testing.T) {
	log := `{"time":"2026-01-02T10:00:00.000Z","level":"INFO","msg":"serving"}
{"time":"2026-01-02T10:00:01.000Z","level":"INFO","msg":"policy changed on disk: reloading"}
{"time":"2026-01-02T10:00:01.250Z","level":"INFO","msg":"policy reloaded","consumers":100001}
{"time":"2026-01-02T10:00:03.000Z","level":"INFO","msg":"SIGHUP: reloading policy"}
{"time":"2026-01-02T10:00:03.200Z","level":"INFO","msg":"policy reloaded","consumers":100001}
`
	file, hup, err := parseReloadLog(strings.NewReader(log))
	if err != nil {
		t.Fatalf("parseReloadLog: %v", err)
	}
	if file != 250*time.Millisecond || hup != 200*time.Millisecond {
		t.Errorf("got file %v hup %v, want 250ms and 200ms", file, hup)
	}
	if _, _, err := parseReloadLog(strings.NewReader(`{"msg":"serving"}`)); err == nil {
		t.Error("got no error for a log without reloads")
	}
}

func TestAttack(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Apikey") != benchKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("drop") != "" {
			c, _, err := w.(http.Hijacker).Hijack() // no response at all: a transport error
			if err == nil {
				c.Close()
			}
			return
		}
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close") // the generator must reconnect
		}
		w.Write(make([]byte, 1024))
	}))
	defer srv.Close()
	tests := []struct {
		name       string
		path       string
		header     http.Header
		ok, failed int64
	}{
		{"keep-alive", "/bench", http.Header{"Apikey": {benchKey}}, 100, 0},
		{"server closes", "/bench?close=1", http.Header{"Apikey": {benchKey}}, 100, 0},
		{"refused", "/bench", nil, 0, 100},
		{"connection dropped", "/bench?drop=1", http.Header{"Apikey": {benchKey}}, 0, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attack(context.Background(), 200, 500*time.Millisecond, srv.URL+tt.path, tt.header, 4)
			if err != nil {
				t.Fatalf("attack: %v", err)
			}
			if got.ok != tt.ok || got.failed != tt.failed {
				t.Errorf("got %d ok, %d failed (%v), want %d ok, %d failed", got.ok, got.failed, got.codes, tt.ok, tt.failed)
			}
		})
	}
}

func TestPairedRatio(t *testing.T) {
	tests := []struct {
		name string
		a, b summary
		want float64
	}{
		// Round 1 ran on a slow machine: both halved. The ratio within each round is 0.5.
		{"drift cancels", summary{roundRPS: map[int]float64{0: 100, 1: 50, 2: 100}, rps: 100},
			summary{roundRPS: map[int]float64{0: 200, 1: 100, 2: 200}, rps: 200}, 0.5},
		{"only shared rounds", summary{roundRPS: map[int]float64{0: 90, 2: 30}, rps: 60},
			summary{roundRPS: map[int]float64{0: 100, 1: 10}, rps: 55}, 0.9},
		{"no shared round", summary{roundRPS: map[int]float64{0: 90}, rps: 90},
			summary{roundRPS: map[int]float64{1: 100}, rps: 100}, 0.9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pairedRatio(tt.a, tt.b); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in   string
		want []int
	}{
		{"1", []int{1}},
		{"0,2", []int{0, 2}},
		{"1-3", []int{1, 2, 3}},
	}
	for _, tt := range tests {
		got, err := parseCPUList(tt.in)
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("parseCPUList(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
			continue
		}
		for _, c := range tt.want {
			if !got[c] {
				t.Errorf("parseCPUList(%q) = %v, want %v", tt.in, got, tt.want)
			}
		}
	}
	for _, bad := range []string{"", "a", "3-1", "-1"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q): no error", bad)
		}
	}
}

func TestParseCPUBusy(t *testing.T) {
	stat := `cpu  300 0 60 1000 10 5 5 7 0 0
cpu0 100 0 20 500 5 2 2 3 0 0
cpu1 200 1 40 500 5 3 3 4 0 0
intr 1 2 3
`
	// cpu1: user 200 + nice 1 + system 40 + steal 4; idle, iowait, irq and softirq left out.
	if got, err := parseCPUBusy(stat, map[int]bool{1: true}); err != nil || got != 245 {
		t.Errorf("cpu1: got %d, %v, want 245", got, err)
	}
	if got, err := parseCPUBusy(stat, map[int]bool{0: true, 1: true}); err != nil || got != 368 {
		t.Errorf("cpu0,1: got %d, %v, want 368", got, err)
	}
	if _, err := parseCPUBusy(stat, map[int]bool{2: true}); err == nil {
		t.Error("cpu2: no error for a missing CPU")
	}
}
