package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the harness started. Its PID is the program's own: taskset execs it.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string // file holding its stdout and stderr
	exited chan struct{}
}

// procs owns every process the harness starts, so that one Close stops them all by PID, also
// when a run is interrupted.
type procs struct {
	dir string // logs go here

	mu   sync.Mutex
	list []*proc
}

// start runs bin pinned to cpu (taskset -c cpu) with extra environment variables.
func (ps *procs) start(name, cpu string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log of %s: %w", name, err)
	}
	defer f.Close() // the child keeps its own descriptor
	cmd := exec.Command("taskset", append([]string{"-c", cpu, bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C on the harness must not reach it before the harness has
	// measured what it needs; Close stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM to the process (its workers follow their master), and SIGKILL after a grace
// period.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Close stops every process started, newest first (contestants before their upstream).
func (ps *procs) Close() error {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop()
	}
	return nil
}

// waitReady polls check until it succeeds, the process exits, or timeout passes.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("%s exited during start: %s", p.name, p.tail(5))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", p.name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond): // readiness poll interval
		}
	}
}

// httpOK is a readiness check: GET url answers want.
func httpOK(client *http.Client, url string, want int) func() error {
	return requestOK(client, url, nil, want)
}

// freePort asks the kernel for a free loopback port. Another process may take it before the
// contestant binds it; start-up then fails loudly rather than measuring the wrong server.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in /proc/PID/stat.
func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100 // USER_HZ on every mainstream Linux build
}

// procStat is the part of /proc/PID/stat the harness uses.
type procStat struct {
	ppid         int
	utime, stime int64 // clock ticks
}

// readProcStat parses /proc/PID/stat. The command name may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

func parseProcStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("parsing /proc stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// After the name: state(3) ppid(4) ... utime(14) stime(15); f[0] is field 3.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("parsing /proc stat: %d fields", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("parsing /proc stat: %w", err)
	}
	return procStat{ppid: ppid, utime: ut, stime: st}, nil
}

// cpuTicks is CPU time in clock ticks: in user space, and in the kernel on the process's behalf
// (system calls, and the loopback network stack they run).
type cpuTicks struct{ user, sys int64 }

func (t cpuTicks) total() int64 { return t.user + t.sys }

func (t cpuTicks) minus(u cpuTicks) cpuTicks { return cpuTicks{t.user - u.user, t.sys - u.sys} }

// treeTicks sums utime and stime of pid and its direct children (nginx's workers). Threads are
// already included in a process's own counters.
func treeTicks(pid int) (cpuTicks, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return cpuTicks{}, fmt.Errorf("reading CPU time of %d: %w", pid, err)
	}
	total := cpuTicks{st.utime, st.stime}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return cpuTicks{}, fmt.Errorf("listing /proc: %w", err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		cs, err := readProcStat(child)
		if err != nil || cs.ppid != pid {
			continue // gone, or not a child
		}
		total.user += cs.utime
		total.sys += cs.stime
	}
	return total, nil
}

// rssKB reads VmRSS and VmHWM (peak) of pid in KiB.
func rssKB(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading memory of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak, nil
}
