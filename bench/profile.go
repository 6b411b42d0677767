package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// runProfile takes a CPU profile of one Portcullis contestant (-profile-contestant, key-auth +
// limit-count unless said) under wrk load, with the contestant
// pinned as in the load mode, from cmd/profgateway (the gateway's packages, wired as `portcullis
// run` wires them, plus pprof).
func runProfile(ctx context.Context, cfg config, log *slog.Logger) error {
	if !isExecutable(cfg.profileGW) {
		return fmt.Errorf("no profiling gateway at %s (make bench-profile builds it)", cfg.profileGW)
	}
	l, cleanup, err := newLab(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	specs, err := l.portcullisSpecs()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(specs, func(s pcSpec) bool { return s.name == cfg.profileName })
	if i < 0 {
		return fmt.Errorf("no Portcullis contestant named %q to profile", cfg.profileName)
	}
	spec := specs[i]
	if spec.redis {
		return fmt.Errorf("profiling %s needs redis-server, which mode profile does not start", spec.name)
	}
	listen, url, _, err := l.listenOn()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	pprofPort, err := freePort()
	if err != nil {
		return err
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	pprofAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pprofPort))
	policy, err := l.portcullisPolicy(spec, listen, admin)
	if err != nil {
		return err
	}
	path := filepath.Join(l.dir, "profile.json")
	if err := os.WriteFile(path, policy, 0o600); err != nil {
		return fmt.Errorf("writing policy: %w", err)
	}
	p, err := l.procs.start("profgateway", cfg.contestantCPU, append([]string{"GOMAXPROCS=1"}, cfg.pcEnv...), cfg.profileGW, "-c", path, "-pprof", pprofAddr)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, 30*time.Second, httpOK(l.client, "http://"+admin+"/readyz", http.StatusOK)); err != nil {
		return err
	}
	if spec.login {
		// pc-session: sign in once, as the load mode does, and profile requests with the cookie.
		c := &contestant{url: url}
		if err := l.portcullisSignIn(ctx, c, spec.idp["name"].(string)); err != nil {
			return fmt.Errorf("signing in to the profiling gateway: %w", err)
		}
		spec.header = c.header
	}
	if _, err := runWrk(ctx, cfg.threads, cfg.connections, cfg.warmup, url, spec.header); err != nil {
		return err
	}

	type wrkOut struct {
		r   wrkResult
		err error
	}
	done := make(chan wrkOut, 1)
	go func() {
		r, err := runWrk(ctx, cfg.threads, cfg.connections, cfg.duration+2*time.Second, url, spec.header)
		done <- wrkOut{r, err}
	}()
	// The profile covers the middle of the wrk run: a second after its start to a second before
	// its end.
	time.Sleep(time.Second)
	profClient := &http.Client{Timeout: cfg.duration + 30*time.Second}
	resp, err := profClient.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(cfg.duration.Seconds())))
	if err != nil {
		return fmt.Errorf("taking the CPU profile: %w", err)
	}
	prof, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("taking the CPU profile: status %d: %v", resp.StatusCode, err)
	}
	w := <-done
	if w.err != nil {
		return w.err
	}
	profPath := filepath.Join(filepath.Dir(cfg.profileGW), "bench-"+spec.name+".cpu.pprof")
	if err := os.WriteFile(profPath, prof, 0o644); err != nil {
		return fmt.Errorf("saving the profile: %w", err)
	}

	var b strings.Builder
	for _, h := range machineHeader(cfg, "Portcullis CPU profile: "+spec.title+" under load") {
		b.WriteString(h + "\n")
	}
	fmt.Fprintf(&b, "- wrk -t%d -c%d for %s: %.0f req/s (%d non-2xx, %d socket errors) while profiling %s; profile saved to %s\n",
		cfg.threads, cfg.connections, cfg.duration+2*time.Second, w.r.rps, w.r.non2xx, w.r.socketErrors, cfg.duration, profPath)
	b.WriteString("- profiled binary: bench/cmd/profgateway (the gateway packages wired as `portcullis run -access-log=false -watch=false` wires them, plus net/http/pprof on another port)\n")
	for _, view := range []struct{ title, flag string }{{"top 15 by flat CPU", "-top"}, {"top 15 by cumulative CPU", "-top -cum"}} {
		args := append([]string{"tool", "pprof"}, strings.Fields(view.flag)...)
		args = append(args, "-nodecount=15", cfg.profileGW, profPath)
		out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("running go tool pprof: %w: %s", err, out)
		}
		fmt.Fprintf(&b, "\n### %s\n\n```\n%s```\n", view.title, out)
	}
	return writeReport(cfg.out, time.Now().Format("2006-01-02")+"-profile-"+spec.name+".md", b.String())
}
