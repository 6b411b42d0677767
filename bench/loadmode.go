package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// runLoad starts every contestant, measures them round-robin (one run of each per round, so
// that a noisy minute hits every contestant alike), and reports the medians.
func runLoad(ctx context.Context, cfg config, log *slog.Logger) error {
	l, cleanup, err := newLab(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	header := machineHeader(cfg, "Portcullis side-by-side load benchmark")
	header = append(header, fmt.Sprintf("- %d runs per contestant: wrk -t%d -c%d %s (after a %s warm-up), then fixed-rate legs of %s at %v %% of that run's maximum, each followed by the upstream directly at the same rate",
		cfg.runs, cfg.threads, cfg.connections, cfg.duration, cfg.warmup, cfg.latDuration, cfg.levels))

	contestants, skipped, err := startContestants(ctx, l)
	if err != nil {
		return err
	}
	results := make([][]runResult, len(contestants))
	var errs []error
	for round := range cfg.runs {
		for i, c := range contestants {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Info("measuring", "round", round+1, "of", cfg.runs, "contestant", c.name)
			r, err := measure(ctx, l, c, contestants[0], round == 0)
			if err != nil {
				errs = append(errs, fmt.Errorf("measuring %s: %w", c.name, err))
				continue
			}
			log.Info("measured", "contestant", c.name, "req/s", int(r.rps), "cpu_us_per_req", fmt.Sprintf("%.1f", r.cpuUS), "errors", r.errors)
			r.round = round
			results[i] = append(results[i], r)
		}
	}
	var sums []summary
	for i, c := range contestants {
		if len(results[i]) > 0 {
			sums = append(sums, summarize(c, results[i], cfg.levels))
		}
	}
	text := markdown(reportInput{header: header, summaries: sums, skipped: skipped, mainLevel: cfg.mainLevel, levels: cfg.levels})
	if err := writeReport(cfg.out, time.Now().Format("2006-01-02")+cfg.reportSuffix+".md", text); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// startContestants starts the selected contestants; the direct upstream is first. An optional
// contestant that cannot start is skipped with the reason; any other failure ends the run.
func startContestants(ctx context.Context, l *lab) (run, skipped []*contestant, err error) {
	run = []*contestant{l.direct()}
	// nginx-fwd-map, nginx's own key check in the forward-auth comparison, is nginx-key-limit.
	want := func(name string) bool {
		return l.cfg.only == nil || l.cfg.only[name] || name == "nginx-key-limit" && l.cfg.only["nginx-fwd-map"]
	}
	add := func(c *contestant, err error) error {
		switch {
		case c != nil && c.skip != "":
			skipped = append(skipped, c)
		case err != nil && c != nil && c.optional:
			c.skip = err.Error()
			l.log.Warn("skipping contestant", "contestant", c.name, "reason", err)
			for _, p := range append([]*proc{c.proc}, c.also...) {
				if p != nil {
					p.stop()
				}
			}
			skipped = append(skipped, c)
		case err != nil:
			name := "contestant"
			if c != nil {
				name = c.name
			}
			return fmt.Errorf("starting %s: %w", name, err)
		default:
			run = append(run, c)
		}
		return nil
	}
	type starter struct {
		name  string
		start func(context.Context) (*contestant, error)
	}
	for _, s := range []starter{{"nginx-proxy", l.nginxProxy}, {"nginx-key-limit", l.nginxKeyLimit}, {"caddy-key", l.caddyKey},
		{"nginx-fwd-pc", l.nginxFwdPC}, {"nginx-fwd-oauth2-proxy", l.nginxFwdOAuth2Proxy}, {"oauth2-proxy-session", l.oauth2ProxySession}} {
		if want(s.name) {
			if err := add(s.start(ctx)); err != nil {
				return nil, nil, err
			}
		}
	}
	specs, err := l.portcullisSpecs()
	if err != nil {
		return nil, nil, err
	}
	for _, s := range specs {
		if want(s.name) {
			if err := add(l.portcullis(ctx, s)); err != nil {
				return nil, nil, err
			}
		}
	}
	return run, skipped, nil
}

// measure runs one round of one contestant: wrk for throughput and CPU, then the fixed-rate
// legs, each paired with the upstream directly at the same rate.
func measure(ctx context.Context, l *lab, c, direct *contestant, first bool) (runResult, error) {
	var r runResult
	for _, p := range append([]*proc{c.proc}, c.also...) {
		if !p.alive() {
			return r, fmt.Errorf("%s is not running: %s", p.name, p.tail(5))
		}
	}
	twBefore, err := timeWaits(c.endpoints...)
	if err != nil {
		return r, err
	}
	if first && l.cfg.warmup > 0 {
		if _, err := runWrk(ctx, l.cfg.threads, l.cfg.connections, l.cfg.warmup, c.url, c.header); err != nil {
			return r, fmt.Errorf("warming up: %w", err)
		}
	}
	ticks := clockTicks()
	cpus, err := parseCPUList(l.cfg.contestantCPU)
	if err != nil {
		return r, err
	}
	busy0, err := cpuBusy(cpus)
	if err != nil {
		return r, err
	}
	cpu0, also0, err := contestantTicks(c)
	if err != nil {
		return r, err
	}
	aux0 := auxTicks(c)
	start := time.Now()
	w, err := runWrk(ctx, l.cfg.threads, l.cfg.connections, l.cfg.duration, c.url, c.header)
	if err != nil {
		return r, err
	}
	wall := time.Since(start)
	cpu1, also1, err := contestantTicks(c)
	if err != nil {
		return r, err
	}
	busy1, err := cpuBusy(cpus)
	if err != nil {
		return r, err
	}
	aux1 := auxTicks(c)
	if w.requests == 0 {
		return r, errors.New("wrk completed no request")
	}
	r.rps, r.requests = w.rps, w.requests
	used := cpu1.minus(cpu0)
	if c != direct { // the upstream runs on the load CPU
		// What the contestant's CPUs did besides the contestant: other processes, and steal.
		r.foreignPct = max(0, float64(busy1-busy0-used.total())) / (wall.Seconds() * float64(ticks) * float64(len(cpus))) * 100
	}
	r.cpuUS = float64(used.total()) * 1e6 / float64(ticks) / float64(w.requests)
	r.sysUS = float64(used.sys) * 1e6 / float64(ticks) / float64(w.requests)
	r.auxUS = float64(aux1-aux0) * 1e6 / float64(ticks) / float64(w.requests)
	r.alsoUS = float64(also1.minus(also0).total()) * 1e6 / float64(ticks) / float64(w.requests)
	r.errors = w.non2xx + w.socketErrors
	if r.errors > 0 {
		r.errNote = fmt.Sprintf("wrk: %d non-2xx, %d socket errors", w.non2xx, w.socketErrors)
	}

	for _, pct := range l.cfg.levels {
		rate := w.rps * float64(pct) / 100
		own, err := attack(ctx, rate, l.cfg.latDuration, c.url, c.header, l.cfg.connections)
		if err != nil {
			return r, fmt.Errorf("fixed rate %d %%: %w", pct, err)
		}
		lr := levelRun{pct: pct, own: own}
		if own.failed > 0 {
			r.errors += own.failed
			r.errNote += fmt.Sprintf(" fixed rate %d %%: %s;", pct, codesString(own.codes))
		}
		if c != direct {
			base, err := attack(ctx, rate, l.cfg.latDuration, direct.url, c.header, l.cfg.connections)
			if err != nil {
				return r, fmt.Errorf("direct baseline at %d %%: %w", pct, err)
			}
			lr.baseline = &base
		}
		r.levels = append(r.levels, lr)
	}

	twAfter, err := timeWaits(c.endpoints...)
	if err != nil {
		return r, err
	}
	r.timeWait = newSince(twBefore, twAfter)
	for _, p := range append([]*proc{c.proc}, c.also...) {
		if !p.alive() {
			return r, fmt.Errorf("%s exited during the run: %s", p.name, p.tail(5))
		}
	}
	return r, nil
}

// contestantTicks sums the CPU ticks of the contestant's process tree and of the auth server
// behind it, if any (also: the auth server's part).
func contestantTicks(c *contestant) (sum, also cpuTicks, err error) {
	for i, p := range append([]*proc{c.proc}, c.also...) {
		t, err := treeTicks(p.pid())
		if err != nil {
			return cpuTicks{}, cpuTicks{}, err
		}
		sum.user += t.user
		sum.sys += t.sys
		if i > 0 {
			also.user += t.user
			also.sys += t.sys
		}
	}
	return sum, also, nil
}

// auxTicks sums the CPU ticks of a contestant's helpers; a helper that cannot be read counts 0.
func auxTicks(c *contestant) int64 {
	var n int64
	for _, p := range c.aux {
		if t, err := treeTicks(p.pid()); err == nil {
			n += t.total()
		}
	}
	return n
}
