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
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
// connection k owns requests k, k+conns, k+2·conns, …, each due at start + i/rate. A request is
// written when it is due if its connection is idle, and otherwise as soon as the connection's
// earlier responses are in; its latency then runs from its due time, so a server that stalls is
// charged for every request it delayed (no coordinated omission).
//
// A pacer on a thread (and a P) of its own sleeps with nanosleep, which the kernel's
// high-resolution timers end within microseconds, and writes each request itself; one reader per
// connection reads the responses. Go's own timers end a sleep only when the runtime next polls,
// up to a millisecond late when it is idle: paced by them, the requests of each millisecond leave
// together, and a one-core contestant is measured queueing bursts that a fixed-rate client never
// sends. A request the pacer itself sent late (it shares its core with the upstream) runs from
// its actual send: that delay is the generator's.
//
// The requests are written and the responses read on raw connections: net/http's client (and so
// vegeta) costs several times more CPU per request, and the generator shares its core with the
// upstream.
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

	total := int(rate * d.Seconds())
	conns = max(1, min(conns, total))
	interval := float64(time.Second) / rate
	var outstanding, readers sync.WaitGroup
	lines := make([]*line, conns)
	defer func() {
		for _, l := range lines {
			if l != nil {
				l.stop()
			}
		}
		readers.Wait()
	}()
	for k := range lines {
		l := &line{host: u.Host, req: []byte(req.String()), outstanding: &outstanding,
			lat: make([]time.Duration, 0, total/conns+1), codes: map[uint16]int64{}}
		if l.c, err = l.dial(ctx); err != nil {
			return rateResult{}, fmt.Errorf("connecting to %s: %w", u.Host, err)
		}
		l.br = bufio.NewReaderSize(l.c, 16<<10)
		lines[k] = l
		readers.Add(1)
		go func() {
			defer readers.Done()
			l.read(ctx)
		}()
	}
	start := time.Now().Add(time.Millisecond)
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		pace(ctx, start, interval, total, lines)
	}()
	<-paced
	outstanding.Wait() // every response is in, or its read timed out
	if err := ctx.Err(); err != nil {
		return rateResult{}, err
	}

	res := rateResult{target: rate, codes: map[uint16]int64{}}
	lat := make([]time.Duration, 0, total)
	var last time.Time
	for _, l := range lines {
		l.mu.Lock()
		lat = append(lat, l.lat...)
		for code, n := range l.codes {
			res.codes[code] += n
			if code >= 200 && code < 300 {
				res.ok += n
			} else {
				res.failed += n
			}
		}
		if l.lastSent.After(last) {
			last = l.lastSent
		}
		l.mu.Unlock()
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

// pace offers request i to its line, lines[i % len(lines)], at start + i·interval. It sleeps
// with a raw nanosleep on a locked thread, so it keeps its P (the harness runs with two) and
// wakes on time instead of waiting for the runtime's next poll; each sleep is at most a
// millisecond, so a stop-the-world waits no longer than that for it.
func pace(ctx context.Context, start time.Time, interval float64, total int, lines []*line) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := range total {
		due := start.Add(time.Duration(float64(i) * interval))
		for {
			wait := time.Until(due)
			if wait <= 0 || ctx.Err() != nil {
				break
			}
			ts := syscall.NsecToTimespec(int64(min(wait, time.Millisecond)))
			syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		if ctx.Err() != nil {
			return
		}
		lines[i%len(lines)].offer(due)
	}
}

// lineTimeout bounds one request's wait for its response.
const lineTimeout = 5 * time.Second

// line is one persistent connection of attack. The pacer writes a request on it when it is idle
// and queues the due time when it is busy; its reader reads every response, records it, and
// writes the next queued request itself.
type line struct {
	host        string
	req         []byte
	outstanding *sync.WaitGroup // one per request offered and not yet recorded
	br          *bufio.Reader   // the reader's only

	mu       sync.Mutex
	c        net.Conn // nil once the line is dead: a redial failed
	busy     bool     // a request is written and its response not yet read
	due      time.Time
	from     time.Time // where the outstanding request's latency runs from
	backlog  []time.Time
	stopped  bool
	lat      []time.Duration
	codes    map[uint16]int64
	lastSent time.Time
}

func (l *line) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: lineTimeout}
	return d.DialContext(ctx, "tcp", l.host)
}

// offer sends a request due now, or queues it behind the outstanding one.
func (l *line) offer(due time.Time) {
	l.outstanding.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.c == nil:
		l.record(0, due)
	case l.busy:
		l.backlog = append(l.backlog, due)
	default:
		now := time.Now()
		l.send(due, now, now)
	}
}

// send writes a request due at due (l.mu held). A failed write closes the connection, which
// fails the reader's read and so records the request.
func (l *line) send(due, from, now time.Time) {
	l.busy, l.due, l.from, l.lastSent = true, due, from, now
	_ = l.c.SetDeadline(now.Add(lineTimeout))
	if _, err := l.c.Write(l.req); err != nil {
		_ = l.c.Close()
	}
}

// record counts one response (code 0: a transport error) of a request whose latency runs from
// from (l.mu held).
func (l *line) record(code uint16, from time.Time) {
	l.lat = append(l.lat, time.Since(from))
	l.codes[code]++
	l.outstanding.Done()
}

// read reads the responses until the line is stopped.
func (l *line) read(ctx context.Context) {
	for {
		code, keep, err := readResponse(l.br)
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && l.br.Buffered() == 0 && (!l.busy || time.Since(l.lastSent) < lineTimeout) {
			// The deadline of an earlier request passed while the line was idle (a low rate),
			// perhaps just before the pacer wrote the next one: nothing was read, read on.
			_ = l.c.SetDeadline(time.Now().Add(lineTimeout))
			l.mu.Unlock()
			continue
		}
		if l.busy {
			l.record(code, l.from)
			l.busy = false
		}
		if code == 0 || !keep {
			// The connection is done (closed by the server, a failed write or read): the
			// queued requests go out on a new one.
			_ = l.c.Close()
			c, err := l.dial(ctx)
			if err != nil {
				l.c = nil
				for _, due := range l.backlog {
					l.record(0, due)
				}
				l.backlog = nil
				l.mu.Unlock()
				return
			}
			l.c = c
			l.br.Reset(c)
		}
		if len(l.backlog) > 0 {
			due := l.backlog[0]
			l.backlog = l.backlog[1:]
			l.send(due, due, time.Now()) // waited for the connection: the server's delay
		}
		l.mu.Unlock()
	}
}

// stop ends the reader: it closes the connection the reader waits on.
func (l *line) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.c != nil {
		_ = l.c.Close()
	}
}

// readResponse reads one response. code 0 is a transport error (err); keep is false when the
// connection cannot carry another request.
func readResponse(br *bufio.Reader) (code uint16, keep bool, err error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	return uint16(resp.StatusCode), !resp.Close, nil
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
