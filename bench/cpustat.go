package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The machine is shared: other processes (and the hypervisor, as steal) may take the
// contestant's CPU during a run. cpuBusy measures it, so that the report can say so.

// parseCPUList parses a taskset CPU list: "1", "0,2", "2-3".
func parseCPUList(s string) (map[int]bool, error) {
	out := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if isRange && err == nil {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a {
			return nil, fmt.Errorf("parsing CPU list %q", s)
		}
		for c := a; c <= b; c++ {
			out[c] = true
		}
	}
	return out, nil
}

// parseCPUBusy sums the busy ticks (user, nice, system, steal) of the given CPUs' lines of
// /proc/stat. irq and softirq are left out: the loopback TCP stack runs there on the
// contestant's behalf without being charged to it.
func parseCPUBusy(stat string, cpus map[int]bool) (int64, error) {
	var busy int64
	found := 0
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil || !cpus[n] {
			continue
		}
		found++
		for _, i := range []int{1, 2, 3, 8} { // user nice system (idle iowait irq softirq) steal
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing /proc/stat %s: %w", f[0], err)
			}
			busy += v
		}
	}
	if found != len(cpus) {
		return 0, errors.New("parsing /proc/stat: a CPU of the list is missing")
	}
	return busy, nil
}

// cpuBusy reads the busy ticks of the CPUs in list.
func cpuBusy(cpus map[int]bool) (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/stat: %w", err)
	}
	return parseCPUBusy(string(b), cpus)
}
