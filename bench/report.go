package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// levelRun is one fixed-rate level of one run: the contestant and, at the same rate, the
// upstream directly (the baseline the added latency is measured against).
type levelRun struct {
	pct      int
	own      rateResult
	baseline *rateResult // nil for the direct contestant itself
}

// runResult is one run of one contestant.
type runResult struct {
	round    int // contestants are measured in turn, once per round
	rps      float64
	requests int64
	cpuUS    float64 // contestant CPU per request
	sysUS    float64 // the part of cpuUS spent in the kernel
	auxUS    float64 // helpers' CPU per request (redis-server)
	alsoUS   float64 // the part of cpuUS the auth server behind nginx used
	// foreignPct is the share of the contestant's CPUs that other processes and steal took
	// during the wrk run.
	foreignPct float64
	errors     int64 // wrk non-2xx and socket errors, fixed-rate failures
	errNote    string
	timeWait   int
	levels     []levelRun
}

// summary is the median over runs of one contestant.
type summary struct {
	c      *contestant
	runs   int
	rps    float64
	cpuUS  float64
	sysUS  float64
	auxUS  float64
	alsoUS float64
	// foreignPct is the median of the runs' foreignPct.
	foreignPct float64
	errors     int64 // summed over runs
	notes      []string
	tw         float64
	levels     []levelSummary
	// roundRPS is req/s by round, for ratios between contestants of the same round.
	roundRPS map[int]float64
}

type levelSummary struct {
	pct                  int
	target, achieved     float64
	p50, p99, p999       time.Duration // contestant
	b50, b99, b999       time.Duration // baseline (direct at the same rate)
	add50, add99, add999 time.Duration
	generatorLimited     bool // the generator sent < 95 % of the target rate
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(xs []time.Duration) time.Duration {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}

// summarize takes the median of each metric over the runs (each metric on its own).
func summarize(c *contestant, runs []runResult, levels []int) summary {
	s := summary{c: c, runs: len(runs), roundRPS: map[int]float64{}}
	var rps, cpu, sys, aux, also, foreign, tw []float64
	for _, r := range runs {
		s.roundRPS[r.round] = r.rps
		rps = append(rps, r.rps)
		cpu = append(cpu, r.cpuUS)
		sys = append(sys, r.sysUS)
		aux = append(aux, r.auxUS)
		also = append(also, r.alsoUS)
		foreign = append(foreign, r.foreignPct)
		tw = append(tw, float64(r.timeWait))
		s.errors += r.errors
		if r.errNote != "" {
			s.notes = append(s.notes, r.errNote)
		}
	}
	s.rps, s.cpuUS, s.sysUS, s.auxUS, s.alsoUS, s.tw = median(rps), median(cpu), median(sys), median(aux), median(also), median(tw)
	s.foreignPct = median(foreign)
	for i, pct := range levels {
		ls := levelSummary{pct: pct}
		var target, achieved []float64
		var p50, p99, p999, b50, b99, b999, a50, a99, a999 []time.Duration
		for _, r := range runs {
			if i >= len(r.levels) {
				continue
			}
			l := r.levels[i]
			target = append(target, l.own.target)
			achieved = append(achieved, l.own.achieved)
			p50, p99, p999 = append(p50, l.own.p50), append(p99, l.own.p99), append(p999, l.own.p999)
			if l.baseline != nil {
				b := l.baseline
				b50, b99, b999 = append(b50, b.p50), append(b99, b.p99), append(b999, b.p999)
				a50, a99, a999 = append(a50, l.own.p50-b.p50), append(a99, l.own.p99-b.p99), append(a999, l.own.p999-b.p999)
			}
		}
		if len(target) == 0 {
			continue
		}
		ls.target, ls.achieved = median(target), median(achieved)
		ls.generatorLimited = ls.achieved < 0.95*ls.target
		ls.p50, ls.p99, ls.p999 = medianDur(p50), medianDur(p99), medianDur(p999)
		if len(b50) > 0 {
			ls.b50, ls.b99, ls.b999 = medianDur(b50), medianDur(b99), medianDur(b999)
			ls.add50, ls.add99, ls.add999 = medianDur(a50), medianDur(a99), medianDur(a999)
		}
		s.levels = append(s.levels, ls)
	}
	return s
}

func (s summary) level(pct int) (levelSummary, bool) {
	for _, l := range s.levels {
		if l.pct == pct {
			return l, true
		}
	}
	return levelSummary{}, false
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond))
}

// pairedRatio is a's throughput over b's: the median over the rounds both were measured in of
// the ratio within the round, so that the machine's drift from one round to the next (it is a
// shared VM) cancels out; the ratio of the medians when they share no round.
func pairedRatio(a, b summary) float64 {
	var rs []float64
	for round, ra := range a.roundRPS {
		if rb, ok := b.roundRPS[round]; ok && rb > 0 {
			rs = append(rs, ra/rb)
		}
	}
	if len(rs) == 0 {
		if b.rps == 0 {
			return math.NaN()
		}
		return a.rps / b.rps
	}
	return median(rs)
}

func ratio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f", r)
}

// reportInput is everything a report shows.
type reportInput struct {
	header    []string // machine, versions, settings
	summaries []summary
	skipped   []*contestant
	mainLevel int
	levels    []int
}

// markdown renders the load report.
func markdown(in reportInput) string {
	var b strings.Builder
	for _, h := range in.header {
		b.WriteString(h + "\n")
	}
	by := map[string]summary{}
	for _, s := range in.summaries {
		by[s.c.name] = s
	}
	ratioTo := func(s summary, name string) string {
		if ref, ok := by[name]; ok {
			return ratio(pairedRatio(s, ref))
		}
		return "–"
	}

	fmt.Fprintf(&b, "\n| contestant | req/s | CPU µs/req | of which kernel | added p50 µs | added p99 µs | added p99.9 µs | × nginx proxy | × nginx key+limit | × direct | TIME_WAIT + | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range in.summaries {
		a50, a99, a999 := "–", "–", "–"
		if l, ok := s.level(in.mainLevel); ok && s.c.name != "direct" {
			mark := ""
			if l.generatorLimited {
				mark = " †"
			}
			a50, a99, a999 = us(l.add50)+mark, us(l.add99)+mark, us(l.add999)+mark
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %.0f | %d |\n",
			s.c.title, s.rps, s.cpuUS, s.sysUS, a50, a99, a999, ratioTo(s, "nginx-proxy"), ratioTo(s, "nginx-key-limit"), ratioTo(s, "direct"), s.tw, s.errors)
	}
	fmt.Fprintf(&b, "\nreq/s: wrk, median of runs. × columns: the median over rounds of the ratio within a round (every contestant is measured once per round, in turn). CPU µs/req: the contestant's utime+stime (nginx: master and worker; nginx-fwd-*: and the auth server behind it) over the wrk run / requests; of which kernel: the stime part (system calls and the loopback TCP stack they run, wake-ups of the other CPU included). "+
		"Added latency: at %d %% of the contestant's own maximum, the contestant's percentile minus the upstream's own percentile at the same rate in the same run (fixed-rate generator, median of runs). "+
		"TIME_WAIT +: new TIME_WAIT sockets on the contestant's listener and upstream side during one run (median). "+
		"† the generator sent < 95 %% of the requested rate (it shares its core with the upstream), so the latency there is the generator's as much as the contestant's.\n", in.mainLevel)

	b.WriteString("\n### Latency at fixed rates\n\n")
	b.WriteString("| contestant | load | target req/s | sent req/s | p50 µs | p99 µs | p99.9 µs | direct p50/p99/p99.9 µs | added p50/p99/p99.9 µs |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range in.summaries {
		for _, l := range s.levels {
			mark := ""
			if l.generatorLimited {
				mark = " †"
			}
			direct, added := "–", "–"
			if s.c.name != "direct" {
				direct = us(l.b50) + " / " + us(l.b99) + " / " + us(l.b999)
				added = us(l.add50) + " / " + us(l.add99) + " / " + us(l.add999)
			}
			fmt.Fprintf(&b, "| %s | %d %% | %.0f | %.0f%s | %s | %s | %s | %s | %s |\n",
				s.c.name, l.pct, l.target, l.achieved, mark, us(l.p50), us(l.p99), us(l.p999), direct, added)
		}
	}

	b.WriteString("\n### Targets (issue 6)\n\n")
	for _, t := range targets(by, in.mainLevel) {
		b.WriteString("- " + t + "\n")
	}

	if fwd := forwardAuthTargets(by); len(fwd) > 0 {
		b.WriteString("\n### Forward auth (issue 14)\n\n")
		for _, t := range fwd {
			b.WriteString("- " + t + "\n")
		}
	}

	if sess := sessionTargets(by); len(sess) > 0 {
		b.WriteString("\n### Browser sessions (issue 13)\n\n")
		for _, t := range sess {
			b.WriteString("- " + t + "\n")
		}
	}

	var notes []string
	for _, c := range in.skipped {
		notes = append(notes, fmt.Sprintf("**%s skipped**: %s", c.title, strings.Join(strings.Fields(c.skip), " ")))
	}
	for _, s := range in.summaries {
		if len(s.c.also) > 0 {
			names := make([]string, len(s.c.also))
			for i, p := range s.c.also {
				names[i] = p.name
			}
			notes = append(notes, fmt.Sprintf("%s: its CPU µs/req includes the auth server behind nginx, on the same CPU: %s used %.1f of the %.1f µs/req.",
				s.c.name, strings.Join(names, ", "), s.alsoUS, s.cpuUS))
		}
		if s.c.note != "" {
			notes = append(notes, s.c.name+": "+s.c.note)
		}
		if s.c.notef != nil {
			notes = append(notes, s.c.name+": "+s.c.notef())
		}
		if s.foreignPct >= 5 {
			notes = append(notes, fmt.Sprintf("%s: other processes and steal took %.0f %% of the contestant's CPU during its wrk runs (median).",
				s.c.name, s.foreignPct))
		}
		if len(s.c.aux) > 0 {
			notes = append(notes, fmt.Sprintf("%s: redis-server (on the load core, not counted above) used %.1f CPU µs/req.", s.c.name, s.auxUS))
		}
		for _, n := range s.notes {
			notes = append(notes, s.c.name+": "+n)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n### Notes\n\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

// targets checks the targets on the summaries that exist.
func targets(by map[string]summary, mainLevel int) []string {
	var out []string
	check := func(label string, ok bool, detail string) {
		mark := "✅"
		if !ok {
			mark = "❌"
		}
		out = append(out, fmt.Sprintf("%s %s: %s", mark, label, detail))
	}
	rel := func(a, b string, want float64) {
		sa, okA := by[a]
		sb, okB := by[b]
		if !okA || !okB {
			out = append(out, fmt.Sprintf("– %s ≥ %g × %s: not measured", a, want, b))
			return
		}
		got := pairedRatio(sa, sb)
		check(fmt.Sprintf("%s ≥ %g × %s", a, want, b), got >= want, fmt.Sprintf("%.2f ×", got))
	}
	rel("pc-key", "caddy-key", 1.5)
	rel("pc-key", "nginx-key-limit", 0.6)
	rel("pc-jwt-rs256", "pc-key", 0.9)
	rel("pc-oidc", "pc-key", 0.9)
	rel("pc-basic", "pc-key", 0.9)
	rel("pc-redis", "pc-key", 0.7)
	rel("pc-redis-sync", "pc-key", 0.9)
	rel("pc-key-shadow", "pc-key", 0.85) // issue 18: a shadow policy costs ≤ 15 % of throughput
	rel("pc-key-tracing", "pc-key", 0.8) // issue 17: tracing every request costs ≤ 20 % of throughput
	// The latency target's yardstick: nginx measured the same way, at its own 50 %.
	for _, name := range []string{"nginx-proxy", "nginx-key-limit"} {
		if s, ok := by[name]; ok {
			if l, ok := s.level(mainLevel); ok {
				out = append(out, fmt.Sprintf("– for reference, %s added p99 at %d %%: +%s µs, p99.9 +%s µs", name, mainLevel, us(l.add99), us(l.add999)))
			}
		}
	}
	for _, name := range []string{"pc-key", "pc-jwt-hs256", "pc-jwt-rs256", "pc-basic", "pc-oidc", "pc-session", "pc-redis", "pc-redis-sync"} {
		s, ok := by[name]
		if !ok {
			continue
		}
		l, ok := s.level(mainLevel)
		if !ok {
			continue
		}
		limited := ""
		if l.generatorLimited {
			limited = " (generator-limited)"
		}
		check(fmt.Sprintf("%s added p99 ≤ 200 µs and p99.9 ≤ 1 ms at %d %%, zero errors", name, mainLevel),
			l.add99 <= 200*time.Microsecond && l.add999 <= time.Millisecond && s.errors == 0,
			fmt.Sprintf("p99 +%s µs, p99.9 +%s µs, %d errors%s", us(l.add99), us(l.add999), s.errors, limited))
	}
	return out
}

// forwardAuthTargets compares nginx asking Portcullis with nginx asking oauth2-proxy, and with
// nginx checking the key itself (nginx-key-limit, the forward-auth table's nginx-fwd-map); none
// when no forward-auth contestant was measured.
func forwardAuthTargets(by map[string]summary) []string {
	pc, ok := by["nginx-fwd-pc"]
	o2p, okO2P := by["nginx-fwd-oauth2-proxy"]
	if !ok && !okO2P {
		return nil
	}
	var out []string
	line := func(s summary) string {
		l := fmt.Sprintf("%s: %.0f req/s, %.1f CPU µs/req", s.c.name, s.rps, s.cpuUS)
		if len(s.c.also) > 0 {
			l += fmt.Sprintf(" (nginx %.1f, the auth server %.1f)", s.cpuUS-s.alsoUS, s.alsoUS)
		}
		return l
	}
	for _, name := range []string{"nginx-fwd-pc", "nginx-fwd-oauth2-proxy", "nginx-key-limit", "pc-key"} {
		if s, ok := by[name]; ok {
			out = append(out, "– "+line(s))
		}
	}
	if ok && okO2P {
		got := pairedRatio(pc, o2p)
		mark := "✅"
		if got < 1.5 {
			mark = "❌"
		}
		out = append(out, fmt.Sprintf("%s nginx-fwd-pc ≥ 1.5 × nginx-fwd-oauth2-proxy: %.2f ×%s", mark, got, byRound(pc, o2p)))
	} else {
		out = append(out, "– nginx-fwd-pc ≥ 1.5 × nginx-fwd-oauth2-proxy: not measured")
	}
	if ok {
		// CPU per request moves less than req/s when other processes take the CPU for a while.
		for _, name := range []string{"nginx-fwd-oauth2-proxy", "nginx-key-limit", "pc-key"} {
			if s, found := by[name]; found && pc.cpuUS > 0 {
				out = append(out, fmt.Sprintf("– by CPU per request, %s µs / nginx-fwd-pc µs: %.2f × (requests per CPU second, Portcullis over it)", name, s.cpuUS/pc.cpuUS))
			}
		}
		for _, ref := range []struct{ name, what string }{
			{"nginx-key-limit", "nginx's own `map` key check + `limit_req` (nginx-fwd-map)"},
			{"pc-key", "Portcullis proxying itself, same key and limit"},
		} {
			if s, found := by[ref.name]; found {
				out = append(out, fmt.Sprintf("– nginx-fwd-pc / %s, %s: %.2f ×%s", ref.name, ref.what, pairedRatio(pc, s), byRound(pc, s)))
			}
		}
	}
	return out
}

// byRound lists a's throughput over b's in each round both were measured in, when there are
// several: " (by round: 1.52, 1.71, 1.60)".
func byRound(a, b summary) string {
	var rounds []int
	for round := range a.roundRPS {
		if rb, ok := b.roundRPS[round]; ok && rb > 0 {
			rounds = append(rounds, round)
		}
	}
	if len(rounds) < 2 {
		return ""
	}
	slices.Sort(rounds)
	parts := make([]string, len(rounds))
	for i, round := range rounds {
		parts[i] = ratio(a.roundRPS[round] / b.roundRPS[round])
	}
	return " (by round: " + strings.Join(parts, ", ") + ")"
}
