package main

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// tcpTimeWait is the TIME_WAIT state's code in /proc/net/tcp.
const tcpTimeWait = "06"

// conn is one TCP connection's local and remote end.
type conn struct{ local, remote netip.AddrPort }

// timeWaits lists the IPv4 TIME_WAIT sockets that touch one of the given endpoints (as local or
// remote end). Counting per endpoint, and as a set, keeps the sockets of earlier contestants
// (which linger 60 s) out of a contestant's growth.
func timeWaits(endpoints ...netip.AddrPort) (map[conn]struct{}, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/net/tcp: %w", err)
	}
	return parseTimeWaits(string(b), endpoints)
}

func parseTimeWaits(table string, endpoints []netip.AddrPort) (map[conn]struct{}, error) {
	want := map[netip.AddrPort]bool{}
	for _, e := range endpoints {
		want[e] = true
	}
	out := map[conn]struct{}{}
	lines := strings.Split(table, "\n")
	for _, line := range lines[min(1, len(lines)):] { // the first line is the header
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != tcpTimeWait {
			continue
		}
		l, err := parseProcAddr(f[1])
		if err != nil {
			return nil, err
		}
		r, err := parseProcAddr(f[2])
		if err != nil {
			return nil, err
		}
		if want[l] || want[r] {
			out[conn{l, r}] = struct{}{}
		}
	}
	return out, nil
}

// parseProcAddr parses /proc/net/tcp's "0100007F:1F90": the IPv4 address as a little-endian
// 32-bit hex number, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return netip.AddrPort{}, fmt.Errorf("parsing /proc/net/tcp address %q", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parsing /proc/net/tcp address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parsing /proc/net/tcp port %q: %w", s, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]}), uint16(port)), nil
}

// newSince counts the members of after that were not in before.
func newSince(before, after map[conn]struct{}) int {
	n := 0
	for c := range after {
		if _, ok := before[c]; !ok {
			n++
		}
	}
	return n
}
