package gateway

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddrs(t *testing.T) {
	trusted := clientAddrs{trusted: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("2001:db8::/32"),
	}}
	tests := []struct {
		name  string
		addrs clientAddrs
		peer  string
		xff   []string // X-Forwarded-For lines
		want  string
	}{
		{name: "no trusted proxies: the peer, whatever the header says", addrs: clientAddrs{}, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7"}, want: "10.1.1.1"},
		{name: "untrusted peer: its header is not believed", addrs: trusted, peer: "198.51.100.9:5000", xff: []string{"203.0.113.7"}, want: "198.51.100.9"},
		{name: "trusted peer: the address it forwards for", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "trusted peer without a header", addrs: trusted, peer: "10.1.1.1:5000", want: "10.1.1.1"},
		{name: "a chain of trusted proxies is walked from the right", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7, 192.0.2.1, 10.2.2.2"}, want: "203.0.113.7"},
		{name: "what the client wrote left of the first untrusted hop is ignored", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"1.1.1.1, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "several header lines are one list", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7", "10.2.2.2"}, want: "203.0.113.7"},
		{name: "a malformed hop ends the walk at the last trusted one", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7, garbage, 10.2.2.2"}, want: "10.2.2.2"},
		{name: "a hop with a port", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7:4711"}, want: "203.0.113.7"},
		{name: "IPv6", addrs: trusted, peer: "[2001:db8::1]:5000", xff: []string{"2001:db9::5, 2001:db8::2"}, want: "2001:db9::5"},
		{name: "IPv6 out of the trusted prefix", addrs: trusted, peer: "[2001:db9::1]:5000", xff: []string{"203.0.113.7"}, want: "2001:db9::1"},
		{name: "IPv4-mapped IPv6 peer", addrs: trusted, peer: "[::ffff:10.1.1.1]:5000", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "empty entries are skipped", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7, , "}, want: "203.0.113.7"},
		{name: "all hops trusted: the leftmost", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"10.3.3.3, 10.2.2.2"}, want: "10.3.3.3"},
		{name: "at most 32 hops are read", addrs: trusted, peer: "10.1.1.1:5000", xff: []string{"203.0.113.7, " + strings.Repeat("10.2.2.2, ", 40) + "10.2.2.3"}, want: "10.2.2.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tt.addrs.ip(r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzClientAddrs: whatever a trusted proxy forwards, the client is the peer or one of the
// addresses in the header, and the walk never panics.
func FuzzClientAddrs(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "203.0.113.7, 10.2.2.2", " , ,", "garbage, 10.0.0.1", "[::1]:80, ::ffff:10.0.0.1", strings.Repeat("10.0.0.1,", 50)} {
		f.Add(s)
	}
	c := clientAddrs{trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.1.1.1:5000"
		r.Header.Set("X-Forwarded-For", xff)
		got := c.ip(r)
		if got == "10.1.1.1" {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("client %q is not an address", got)
		}
		found := false
		for _, e := range strings.Split(xff, ",") {
			if h, ok := parseHop(strings.TrimSpace(e)); ok && h == a {
				found = true
			}
		}
		if !found {
			t.Fatalf("client %q is neither the peer nor an entry of %q", got, xff)
		}
	})
}
