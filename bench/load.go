package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	requests     int64   // completed requests
	rps          float64 // Requests/sec
	non2xx       int64   // "Non-2xx or 3xx responses"
	socketErrors int64   // connect + read + write + timeout
}

// runWrk runs wrk against url on the caller's CPU (the harness is pinned to the load core and
// wrk inherits it).
func runWrk(ctx context.Context, threads, connections int, d time.Duration, url string, header http.Header) (wrkResult, error) {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(connections),
		"-d", wrkDuration(d), "--timeout", "5s"}
	for k, vs := range header {
		for _, v := range vs {
			args = append(args, "-H", k+": "+v)
		}
	}
	args = append(args, url)
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("running wrk: %w: %s", err, out)
	}
	return parseWrk(string(out))
}

// wrkDuration renders d for wrk, which knows whole seconds, minutes and hours only.
func wrkDuration(d time.Duration) string {
	return fmt.Sprintf("%ds", max(1, int((d+time.Second-1)/time.Second)))
}

var (
	wrkTotal  = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s*([0-9.]+)`)
	wrkNon2xx = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s*(\d+)`)
	wrkSocket = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkTotal.FindStringSubmatch(out)
	n := wrkRPS.FindStringSubmatch(out)
	if m == nil || n == nil {
		return r, fmt.Errorf("parsing wrk output: no request count: %q", out)
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.rps, _ = strconv.ParseFloat(n[1], 64)
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			v, _ := strconv.ParseInt(s, 10, 64)
			r.socketErrors += v
		}
	}
	return r, nil
}

// rateResult is one fixed-rate leg.
type rateResult struct {
	target   float64 // requested req/s
	achieved float64 // sent req/s; below target when the generator could not keep up
	p50      time.Duration
	p99      time.Duration
	p999     time.Duration
	pmax     time.Duration
	ok       int64 // 2xx
	failed   int64 // other statuses and transport errors
	codes    map[uint16]int64
}

// attack sends GET url at a fixed rate for d over conns persistent connections, wrk2-style:
// connection k owns requests k, k+conns, k+2·conns, …, each due at start + i/rate, and a
// request's latency runs from its due time, so a server (or generator) that stalls is charged for
// every request it delayed (no coordinated omission). A connection that falls behind sends back
// to back until it has caught up. A request sent late because the generator's own timer woke late
// (Go's timers are only millisecond-precise in epoll) runs from its actual send: that delay is
// the generator's, not the server's. The requests are written and the responses read on raw
// connections: net/http's client (and so vegeta) costs several times more CPU per request, and
// the generator shares its core with the upstream.
func attack(ctx context.Context, rate float64, d time.Duration, rawURL string, header http.Header, conns int) (rateResult, error) {
	if rate < 1 {
		return rateResult{}, fmt.Errorf("attack rate %.1f req/s is too low", rate)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return rateResult{}, fmt.Errorf("parsing %s: %w", rawURL, err)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: portcullis-bench\r\n", u.RequestURI(), u.Host)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	reqBytes := []byte(req.String())

	total := int(rate * d.Seconds())
	conns = max(1, min(conns, total))
	interval := float64(time.Second) / rate
	type connResult struct {
		lat      []time.Duration
		codes    map[uint16]int64
		lastSent time.Time
	}
	out := make([]connResult, conns)
	dialed := make([]net.Conn, conns)
	defer func() {
		for _, c := range dialed {
			if c != nil {
				c.Close()
			}
		}
	}()
	dialer := net.Dialer{Timeout: 5 * time.Second}
	for k := range dialed {
		if dialed[k], err = dialer.DialContext(ctx, "tcp", u.Host); err != nil {
			return rateResult{}, fmt.Errorf("connecting to %s: %w", u.Host, err)
		}
	}
	start := time.Now().Add(time.Millisecond)
	var wg sync.WaitGroup
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &out[k]
			r.lat = make([]time.Duration, 0, total/conns+1)
			r.codes = map[uint16]int64{}
			c := dialed[k]
			br := bufio.NewReaderSize(c, 16<<10)
			var prevDone time.Time
			for i := k; i < total && ctx.Err() == nil; i += conns {
				due := start.Add(time.Duration(float64(i) * interval))
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				if c == nil {
					nc, err := dialer.DialContext(ctx, "tcp", u.Host)
					if err != nil {
						r.codes[0]++
						r.lat = append(r.lat, time.Since(due))
						continue
					}
					c = nc
					dialed[k] = c
					br.Reset(c)
				}
				sent := time.Now()
				from := sent
				if prevDone.After(due) {
					from = due // busy with a late response: the server's delay
				}
				r.lastSent = sent
				code, keep := roundTrip(c, br, reqBytes)
				prevDone = time.Now()
				r.lat = append(r.lat, prevDone.Sub(from))
				r.codes[code]++
				if !keep {
					c.Close()
					c, dialed[k] = nil, nil
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rateResult{}, err
	}

	res := rateResult{target: rate, codes: map[uint16]int64{}}
	lat := make([]time.Duration, 0, total)
	var last time.Time
	for _, r := range out {
		lat = append(lat, r.lat...)
		for code, n := range r.codes {
			res.codes[code] += n
			if code >= 200 && code < 300 {
				res.ok += n
			} else {
				res.failed += n
			}
		}
		if r.lastSent.After(last) {
			last = r.lastSent
		}
	}
	if len(lat) < 2 || !last.After(start) {
		return res, errors.New("attack: fewer than two responses")
	}
	// The span of the sends: when the generator could not keep up, the last send is late and the
	// rate sent falls below the target.
	res.achieved = float64(len(lat)-1) / last.Sub(start).Seconds()
	slices.Sort(lat)
	res.p50, res.p99, res.p999 = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999)
	res.pmax = lat[len(lat)-1]
	return res, nil
}

// roundTrip writes one request and reads its response. code 0 is a transport error; keep is
// false when the connection cannot carry another request.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (code uint16, keep bool) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, false
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false
	}
	return uint16(resp.StatusCode), !resp.Close
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// codesString lists non-2xx status codes as "401×12, 0×3" (0 is a transport error).
func codesString(codes map[uint16]int64) string {
	var parts []string
	keys := make([]int, 0, len(codes))
	for c := range codes {
		keys = append(keys, int(c))
	}
	slices.Sort(keys)
	for _, c := range keys {
		if c >= 200 && c < 300 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%d×%d", c, codes[uint16(c)]))
	}
	return strings.Join(parts, ", ")
}
