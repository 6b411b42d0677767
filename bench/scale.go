package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scaleKey is consumer i's API key: 32 characters, like a real generated key.
func scaleKey(i int) string { return fmt.Sprintf("bench-key-%022d", i) }

// writeScalePolicy writes a policy with n key-auth consumers in one consumer group (with a
// limit-count) and one route, streaming: a million consumers need no big structure in memory.
// extra adds that many consumers past n (a reload's change).
func writeScalePolicy(path string, n, extra int, listen, admin, upstream string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, `{
  "listen": %q,
  "admin_listen": %q,
  "idps": [ { "name": "keys", "type": "key-auth", "header": "apikey" } ],
  "consumer_groups": [ { "name": "standard", "plugins": { "limit-count": { "count": %d, "time_window": 60 } } } ],
  "consumers": [
`, listen, admin, limitCount)
	for i := range n + extra {
		sep := ","
		if i == n+extra-1 {
			sep = ""
		}
		fmt.Fprintf(w, `    { "username": "user-%d", "group": "standard", "idps": [ { "idp": "keys", "key": %q } ] }%s`+"\n", i, scaleKey(i), sep)
	}
	fmt.Fprintf(w, `  ],
  "routes": [ { "name": "bench", "paths": [%q], "upstream": { "targets": [ { "url": %q } ] } } ]
}
`, benchPath, upstream)
	return errors.Join(w.Flush(), f.Close())
}

// startResult is one start-up measurement.
type startResult struct {
	consumers int
	fileMB    float64
	ready     time.Duration
	rssMB     float64
	peakMB    float64
}

// scaleGateway is one Portcullis started for a scale measurement.
type scaleGateway struct {
	proc    *proc
	url     string
	admin   string
	policy  string
	started time.Time
	ready   time.Duration
}

// startScaleGateway writes an n-consumer policy and starts Portcullis on it (watching it), pinned
// like a load contestant; ready is process start → /readyz 200.
func startScaleGateway(ctx context.Context, l *lab, name string, n int) (*scaleGateway, error) {
	listen, url, _, err := l.listenOn()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	dir := filepath.Join(l.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	policy := filepath.Join(dir, "policy.json")
	if err := writeScalePolicy(policy, n, 0, listen, admin, l.upstreamURL()); err != nil {
		return nil, err
	}
	g := &scaleGateway{url: url, admin: "http://" + admin, policy: policy, started: time.Now()}
	g.proc, err = l.procs.start(name, l.cfg.contestantCPU, []string{"GOMAXPROCS=1"}, l.cfg.portcullis, "run", "-c", policy, "-access-log=false")
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, g.proc, 5*time.Minute, httpOK(l.client, g.admin+"/readyz", http.StatusOK)); err != nil {
		return nil, err
	}
	g.ready = time.Since(g.started)
	return g, nil
}

func runScale(ctx context.Context, cfg config, log *slog.Logger) error {
	l, cleanup, err := newLab(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	var b strings.Builder
	for _, h := range machineHeader(cfg, "Portcullis scale runs") {
		b.WriteString(h + "\n")
	}
	b.WriteString("- Portcullis pinned like a load contestant: one CPU, GOMAXPROCS=1\n")

	b.WriteString("\n### Start-up with many consumers\n\n")
	b.WriteString("Key-auth consumers in one consumer group with a limit-count, one route. Ready: process start → `/readyz` 200. RSS: VmRSS when ready; peak: VmHWM.\n\n")
	b.WriteString("| consumers | policy file MB | start → ready s | RSS MB | peak RSS MB |\n|---:|---:|---:|---:|---:|\n")
	var starts []startResult
	for _, n := range cfg.scaleSizes {
		log.Info("start-up run", "consumers", n)
		name := fmt.Sprintf("scale-%d", n)
		g, err := startScaleGateway(ctx, l, name, n)
		if err != nil {
			return fmt.Errorf("starting with %d consumers: %w", n, err)
		}
		sr := startResult{consumers: n, ready: g.ready}
		if fi, err := os.Stat(g.policy); err == nil {
			sr.fileMB = float64(fi.Size()) / 1e6
		}
		rss, peak, err := rssKB(g.proc.pid())
		if err != nil {
			return err
		}
		sr.rssMB, sr.peakMB = float64(rss)/1024, float64(peak)/1024
		// Serving: the last consumer's key is accepted.
		if err := requestOK(l.client, g.url, http.Header{"Apikey": {scaleKey(n - 1)}}, http.StatusOK)(); err != nil {
			return fmt.Errorf("with %d consumers: %w", n, err)
		}
		g.proc.stop()
		_ = os.RemoveAll(filepath.Dir(g.policy))
		log.Info("start-up measured", "consumers", n, "ready", sr.ready.Round(time.Millisecond), "rss_mb", int(sr.rssMB))
		starts = append(starts, sr)
		fmt.Fprintf(&b, "| %d | %.1f | %.2f | %.0f | %.0f |\n", sr.consumers, sr.fileMB, sr.ready.Seconds(), sr.rssMB, sr.peakMB)
	}

	rr, err := reloadUnderLoad(ctx, l, log)
	if err != nil {
		return fmt.Errorf("hot reload under load: %w", err)
	}
	b.WriteString(rr.markdown(cfg))

	b.WriteString("\n### Targets (issue 6)\n\n")
	for _, sr := range starts {
		if sr.consumers == 1_000_000 {
			check(&b, "1M consumers ready in < 5 s", sr.ready < 5*time.Second, fmt.Sprintf("%.2f s", sr.ready.Seconds()))
			check(&b, "1M consumers in < 1.5 GB RSS", sr.peakMB < 1536, fmt.Sprintf("%.0f MB at ready, %.0f MB peak", sr.rssMB, sr.peakMB))
		}
	}
	check(&b, fmt.Sprintf("%d-consumer reload < 1 s", cfg.reloadConsumers), rr.fileLoad < time.Second && rr.hupLoad < time.Second,
		fmt.Sprintf("load+compile+swap %d ms (file change), %d ms (SIGHUP)", rr.fileLoad.Milliseconds(), rr.hupLoad.Milliseconds()))
	check(&b, "zero failed requests during reloads", rr.failed == 0, fmt.Sprintf("%d failed of %d", rr.failed, rr.total))
	return writeReport(cfg.out, time.Now().Format("2006-01-02")+"-scale.md", b.String())
}

func check(b *strings.Builder, label string, ok bool, detail string) {
	mark := "✅"
	if !ok {
		mark = "❌"
	}
	fmt.Fprintf(b, "- %s %s: %s\n", mark, label, detail)
}

// reloadResult is the hot-reload run.
type reloadResult struct {
	consumers      int
	rate           float64
	sent           float64
	total, failed  int64
	limited        int64 // 429 (none expected: the limit is far above the rate)
	codes          map[uint16]int64
	p50, p99, pmax time.Duration
	// Load+compile+swap from the gateway's log; write/signal → /status shows the reload.
	fileLoad, fileSeen time.Duration
	hupLoad, hupSeen   time.Duration
}

// reloadUnderLoad serves a policy with cfg.reloadConsumers consumers at a fixed rate, rewrites
// the policy file a quarter into the run (the watcher reloads it) and sends SIGHUP at two
// thirds, and counts every response that is neither 2xx nor 429.
func reloadUnderLoad(ctx context.Context, l *lab, log *slog.Logger) (reloadResult, error) {
	n := l.cfg.reloadConsumers
	rr := reloadResult{consumers: n, rate: float64(l.cfg.reloadRate)}
	log.Info("hot-reload run", "consumers", n, "rate", l.cfg.reloadRate)
	g, err := startScaleGateway(ctx, l, "reload", n)
	if err != nil {
		return rr, err
	}
	defer g.proc.stop()

	type attackOut struct {
		res rateResult
		err error
	}
	done := make(chan attackOut, 1)
	begin := time.Now()
	go func() {
		res, err := attack(ctx, rr.rate, l.cfg.reloadDuration, g.url, http.Header{"Apikey": {scaleKey(n / 2)}}, l.cfg.connections)
		done <- attackOut{res: res, err: err}
	}()

	time.Sleep(l.cfg.reloadDuration / 4) // pacing the run, not synchronising: the attack runs regardless
	dir := filepath.Dir(g.policy)
	tmp := filepath.Join(dir, ".policy.json.next")
	listen := strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), benchPath)
	admin := strings.TrimPrefix(g.admin, "http://")
	if err := writeScalePolicy(tmp, n, 1, listen, admin, l.upstreamURL()); err != nil {
		return rr, err
	}
	wrote := time.Now()
	if err := os.Rename(tmp, g.policy); err != nil {
		return rr, fmt.Errorf("replacing the policy: %w", err)
	}
	if rr.fileSeen, err = waitReloads(ctx, l.client, g.admin, 1, wrote); err != nil {
		return rr, err
	}

	time.Sleep(time.Until(begin.Add(2 * l.cfg.reloadDuration / 3))) // pacing; negative sleeps return at once
	signalled := time.Now()
	if err := g.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return rr, fmt.Errorf("sending SIGHUP: %w", err)
	}
	if rr.hupSeen, err = waitReloads(ctx, l.client, g.admin, 2, signalled); err != nil {
		return rr, err
	}
	out := <-done
	if out.err != nil {
		return rr, out.err
	}
	res := out.res
	rr.sent, rr.codes = res.achieved, res.codes
	rr.p50, rr.p99 = res.p50, res.p99
	rr.pmax = res.pmax
	for code, c := range res.codes {
		rr.total += c
		switch {
		case code >= 200 && code < 300:
		case code == http.StatusTooManyRequests:
			rr.limited += c
		default:
			rr.failed += c
		}
	}
	rr.fileLoad, rr.hupLoad, err = reloadDurations(g.proc.log)
	if err != nil {
		return rr, err
	}
	return rr, nil
}

// waitReloads polls /status until it counts want reloads, and returns the time since from. A
// failed reload is an error.
func waitReloads(ctx context.Context, client *http.Client, admin string, want int, from time.Time) (time.Duration, error) {
	deadline := from.Add(30 * time.Second)
	for {
		var st struct {
			Reloads         int    `json:"reloads"`
			LastReloadError string `json:"last_reload_error"`
		}
		resp, err := client.Get(admin + "/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && st.Reloads >= want {
			if st.LastReloadError != "" {
				return 0, fmt.Errorf("reload failed: %s", st.LastReloadError)
			}
			return time.Since(from), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no reload %d within 30 s (last poll: %v)", want, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond): // status poll interval
		}
	}
}

// reloadDurations reads the gateway's JSON log: from "policy changed on disk" (or "SIGHUP") to
// the next "policy reloaded" is one reload's load, compile and swap.
func reloadDurations(logPath string) (file, hup time.Duration, err error) {
	f, err := os.Open(logPath)
	if err != nil {
		return 0, 0, fmt.Errorf("reading gateway log: %w", err)
	}
	defer f.Close()
	return parseReloadLog(f)
}

func parseReloadLog(r io.Reader) (file, hup time.Duration, err error) {
	var trigger time.Time
	var kind string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var line struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line.Msg, "policy changed on disk"):
			trigger, kind = line.Time, "file"
		case strings.HasPrefix(line.Msg, "SIGHUP"):
			trigger, kind = line.Time, "hup"
		case line.Msg == "policy reloaded" && !trigger.IsZero():
			switch kind {
			case "file":
				file = line.Time.Sub(trigger)
			case "hup":
				hup = line.Time.Sub(trigger)
			}
			trigger = time.Time{}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("reading gateway log: %w", err)
	}
	if file == 0 || hup == 0 {
		return file, hup, errors.New("the gateway log lacks a reload (file change and SIGHUP)")
	}
	return file, hup, nil
}

func (rr reloadResult) markdown(cfg config) string {
	var b strings.Builder
	b.WriteString("\n### Hot reload under load\n\n")
	fmt.Fprintf(&b, "%d consumers; a fixed %d req/s for %s (one consumer's key); a quarter into the run the policy file is replaced (one consumer added; the watcher reloads it), later SIGHUP reloads it again. "+
		"Load: the gateway log's trigger → \"policy reloaded\" (read, validate, compile, swap). Seen: file rename or signal → `/status` counts the reload (includes the watcher's 150 ms debounce for the file).\n\n",
		rr.consumers, cfg.reloadRate, cfg.reloadDuration)
	b.WriteString("| requests | sent req/s | failed (not 2xx/429) | 429 | p50 µs | p99 µs | max µs | file reload: load ms / seen ms | SIGHUP reload: load ms / seen ms |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %d | %.0f | %d | %d | %s | %s | %s | %d / %d | %d / %d |\n",
		rr.total, rr.sent, rr.failed, rr.limited, us(rr.p50), us(rr.p99), us(rr.pmax),
		rr.fileLoad.Milliseconds(), rr.fileSeen.Milliseconds(), rr.hupLoad.Milliseconds(), rr.hupSeen.Milliseconds())
	if rr.failed > 0 {
		fmt.Fprintf(&b, "\nStatus codes other than 2xx: %s\n", codesString(rr.codes))
	}
	return b.String()
}
