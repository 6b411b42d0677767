// Command bench is Portcullis's side-by-side load benchmark: the upstream directly, nginx,
// Caddy and Portcullis with each provider, measured the same way on the same machine in the
// same run, reported as ratios (see README.md).
//
// Modes: load (throughput, CPU per request, latency at fixed rates, TIME_WAIT), scale (start-up
// time and RSS with many consumers, hot reload under load) and profile (a CPU profile of
// key-auth + limit-count under load).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// caddyVersion and oauth2ProxyVersion are the releases the Makefile installs.
const (
	caddyVersion       = "v2.11.9"
	oauth2ProxyVersion = "v7.15.6"
)

// cacheDir holds tools installed for the benchmark, outside the repository.
func cacheDir() string {
	if d := os.Getenv("PORTCULLIS_BENCH_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "portcullis-bench")
	}
	return filepath.Join(os.TempDir(), "portcullis-bench")
}

type config struct {
	mode        string
	portcullis  string
	profileGW   string
	caddy       string
	oauth2Proxy string
	out         string
	only        map[string]bool
	runs        int
	duration    time.Duration
	latDuration time.Duration
	warmup      time.Duration
	threads     int
	connections int
	levels      []int
	mainLevel   int
	// reportSuffix goes between the date and ".md" of the load report's name.
	reportSuffix string

	contestantCPU string
	loadCPU       string
	// pcEnv is extra environment for the Portcullis processes (experiments such as GOGC=400).
	pcEnv []string
	// profileName is the Portcullis contestant that mode profile profiles.
	profileName string

	scaleSizes      []int
	reloadConsumers int
	reloadRate      int
	reloadDuration  time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg config
	var only, levels, sizes, pcEnv string
	flag.StringVar(&cfg.mode, "mode", "load", "load, scale or profile")
	flag.StringVar(&cfg.portcullis, "portcullis", "../bin/portcullis", "the portcullis binary")
	flag.StringVar(&cfg.profileGW, "profile-gateway", "../bin/bench-profgateway", "the in-process gateway with pprof (mode profile)")
	flag.StringVar(&cfg.caddy, "caddy", "", "the caddy binary (default: "+cacheDir()+"/bin/caddy, else PATH; none: skipped)")
	flag.StringVar(&cfg.oauth2Proxy, "oauth2-proxy", "", "the oauth2-proxy binary (default: "+cacheDir()+"/bin/oauth2-proxy, else PATH; none: skipped)")
	flag.StringVar(&cfg.out, "out", "results", "folder of the reports")
	flag.StringVar(&cfg.reportSuffix, "report-suffix", "", "added to the load report's name: results/<date><suffix>.md")
	flag.StringVar(&only, "only", "", "comma-separated contestants to measure (default all; direct is always measured)")
	flag.IntVar(&cfg.runs, "runs", 3, "runs per contestant; the report shows the median")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "wrk duration per run")
	flag.DurationVar(&cfg.latDuration, "lat-duration", 3*time.Second, "duration of each fixed-rate leg")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "wrk warm-up before each contestant's first run")
	flag.IntVar(&cfg.threads, "threads", 1, "wrk threads (they share the load core)")
	flag.IntVar(&cfg.connections, "connections", 64, "wrk connections")
	flag.StringVar(&levels, "levels", "25,50,80", "fixed-rate levels, % of each run's measured maximum")
	flag.IntVar(&cfg.mainLevel, "main-level", 50, "the level whose added latency the main table shows")
	flag.StringVar(&cfg.contestantCPU, "contestant-cpu", "1", "taskset CPU list of the contestant")
	flag.StringVar(&cfg.loadCPU, "load-cpu", "0", "taskset CPU list of the load generator, upstream and helpers")
	flag.StringVar(&pcEnv, "pc-env", "", "space-separated NAME=value pairs added to the Portcullis processes' environment")
	flag.StringVar(&cfg.profileName, "profile-contestant", "pc-key", "the Portcullis contestant to profile (mode profile)")
	flag.StringVar(&sizes, "scale", "10000,100000,1000000", "consumer counts of the start-up runs (mode scale)")
	flag.IntVar(&cfg.reloadConsumers, "reload-consumers", 100000, "consumers of the hot-reload run (mode scale)")
	flag.IntVar(&cfg.reloadRate, "reload-rate", 5000, "req/s during the hot-reload run (mode scale)")
	flag.DurationVar(&cfg.reloadDuration, "reload-duration", 8*time.Second, "length of the hot-reload run (mode scale)")
	flag.Parse()

	var errs []error
	var err error
	if cfg.levels, err = parseInts(levels); err != nil {
		errs = append(errs, fmt.Errorf("parsing -levels: %w", err))
	}
	if cfg.scaleSizes, err = parseInts(sizes); err != nil {
		errs = append(errs, fmt.Errorf("parsing -scale: %w", err))
	}
	if cfg.runs < 1 {
		errs = append(errs, errors.New("-runs must be at least 1"))
	}
	for _, kv := range strings.Fields(pcEnv) {
		if !strings.Contains(kv, "=") {
			errs = append(errs, fmt.Errorf("parsing -pc-env: %q is not NAME=value", kv))
		}
		cfg.pcEnv = append(cfg.pcEnv, kv)
	}
	if only != "" {
		cfg.only = map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(n)] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.caddy == "" {
		if p := filepath.Join(cacheDir(), "bin", "caddy"); isExecutable(p) {
			cfg.caddy = p
		} else if p, err := exec.LookPath("caddy"); err == nil {
			cfg.caddy = p
		}
	}
	if cfg.oauth2Proxy == "" {
		if p := filepath.Join(cacheDir(), "bin", "oauth2-proxy"); isExecutable(p) {
			cfg.oauth2Proxy = p
		} else if p, err := exec.LookPath("oauth2-proxy"); err == nil {
			cfg.oauth2Proxy = p
		}
	}
	if err := checkTools(cfg); err != nil {
		return err
	}
	if err := pinSelf(cfg.loadCPU); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	switch cfg.mode {
	case "load":
		return runLoad(ctx, cfg, log)
	case "scale":
		return runScale(ctx, cfg, log)
	case "profile":
		return runProfile(ctx, cfg, log)
	}
	return fmt.Errorf("unknown -mode %q (load, scale, profile)", cfg.mode)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// checkTools names every missing tool with the command that installs it.
func checkTools(cfg config) error {
	var missing []string
	pkgs := map[string]string{"wrk": "wrk", "nginx": "nginx", "taskset": "util-linux", "getconf": "libc-bin", "redis-server": "redis-server"}
	for _, tool := range []string{"wrk", "nginx", "taskset", "getconf", "redis-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, pkgs[tool])
		}
	}
	var errs []error
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing tools; install them with: apt-get install -y %s", strings.Join(missing, " ")))
	}
	if !isExecutable(cfg.portcullis) {
		errs = append(errs, fmt.Errorf("no portcullis binary at %s (make build)", cfg.portcullis))
	}
	if runtime.NumCPU() < 2 {
		errs = append(errs, errors.New("the benchmark needs two CPUs: one for the contestant, one for the load"))
	}
	return errors.Join(errs...)
}

// pinSelf moves the harness (and so wrk, the fixed-rate generator, the upstream and Redis, which
// inherit it) onto the load CPU, leaving the contestant's CPU to the contestant.
func pinSelf(cpu string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpu, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pinning the harness to CPU %s: %w: %s", cpu, err, out)
	}
	// The Go runtime sized itself for the CPUs it had at start. Two Ps on the one CPU: the
	// fixed-rate generator's pacer sleeps in a syscall on a thread of its own (attack), and the
	// connections must keep a P while it does.
	runtime.GOMAXPROCS(2)
	return nil
}

// newLab prepares the work folder, the upstream and the OIDC issuer.
func newLab(ctx context.Context, cfg config, log *slog.Logger) (*lab, func(), error) {
	dir, err := os.MkdirTemp("", "portcullis-bench-")
	if err != nil {
		return nil, nil, fmt.Errorf("creating work folder: %w", err)
	}
	_ = os.Chmod(dir, 0o755) // nginx workers (not root) read nothing here, but must traverse it
	l := &lab{cfg: cfg, log: log, dir: dir, procs: &procs{dir: dir},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	cleanup := func() {
		_ = l.procs.Close()
		if l.oidc != nil {
			_ = l.oidc.Close()
		}
		if l.otlp != nil {
			_ = l.otlp.Close()
		}
		if os.Getenv("BENCH_KEEP") == "" {
			_ = os.RemoveAll(dir)
		} else {
			log.Info("work folder kept", "dir", dir)
		}
	}
	if err := l.startUpstream(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	if l.oidc, err = newOIDCIssuer(); err != nil {
		cleanup()
		return nil, nil, err
	}
	if l.otlp, err = newOTLPSink(); err != nil {
		cleanup()
		return nil, nil, err
	}
	return l, cleanup, nil
}

// machineHeader describes the machine and the tools, for the report.
func machineHeader(cfg config, title string) []string {
	cpuModel := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	nginxV, _ := exec.Command("nginx", "-v").CombinedOutput()
	wrkV, _ := exec.Command("wrk", "-v").CombinedOutput()
	pcV, _ := exec.Command(cfg.portcullis, "version").CombinedOutput()
	caddyV := "not installed"
	if cfg.caddy != "" {
		caddyV = "(version unknown)"
		if b, err := exec.Command(cfg.caddy, "version").Output(); err == nil && strings.HasPrefix(firstField(string(b)), "v") {
			caddyV = firstField(string(b))
		} else if strings.HasPrefix(cfg.caddy, cacheDir()) {
			caddyV = caddyVersion + " (go install)" // built without module stamp: `caddy version` says unknown
		}
	}
	o2pV := "not installed"
	if cfg.oauth2Proxy != "" {
		o2pV = "(version unknown)"
		b, err := exec.Command(cfg.oauth2Proxy, "--version").Output()
		if v := firstField(strings.TrimPrefix(string(b), "oauth2-proxy ")); err == nil && strings.HasPrefix(v, "v") {
			o2pV = v
		} else if strings.HasPrefix(cfg.oauth2Proxy, cacheDir()) {
			o2pV = oauth2ProxyVersion + " (go install)" // built without a version stamp: it says "undefined"
		}
	}
	return []string{
		"# " + title,
		"",
		fmt.Sprintf("- date: %s", time.Now().Format("2006-01-02 15:04 MST")),
		fmt.Sprintf("- machine: %s, %d CPUs, Linux %s", cpuModel, runtime.NumCPU(), strings.TrimSpace(string(kernel))),
		fmt.Sprintf("- contestant on CPU %s (GOMAXPROCS=1, nginx worker_processes 1); wrk, the fixed-rate generator, the upstream and redis-server on CPU %s",
			cfg.contestantCPU, cfg.loadCPU),
		fmt.Sprintf("- tools: %s, %s, caddy %s, oauth2-proxy %s, portcullis %s, %s",
			strings.TrimSpace(string(nginxV)), firstLine(string(wrkV)), caddyV, o2pV, strings.TrimSpace(firstLine(string(pcV))), runtime.Version()),
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// writeReport writes text to out/name and prints it.
func writeReport(out, name, text string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	path := filepath.Join(out, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	fmt.Println(text)
	fmt.Fprintln(os.Stderr, "report written to", path)
	return nil
}
