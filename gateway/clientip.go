package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddrs resolves a request's client address: its TCP peer, or, when the peer is one of
// the trusted proxies, the nearest address in X-Forwarded-For, read from the right, that is not
// a trusted proxy (nginx's set_real_ip_from with real_ip_recursive on). Without trusted proxies
// X-Forwarded-For is never believed: any client can write it.
type clientAddrs struct {
	trusted []netip.Prefix
}

// maxForwardedHops bounds the X-Forwarded-For entries read per request.
const maxForwardedHops = 32

// ip returns the client address of r.
func (c clientAddrs) ip(r *http.Request) string { return c.ipFrom(r, peerIP(r)) }

// ipFrom is ip for a request whose TCP peer is already known.
func (c clientAddrs) ipFrom(r *http.Request, peer string) string {
	if len(c.trusted) == 0 {
		return peer
	}
	if a, err := netip.ParseAddr(peer); err != nil || !c.isTrusted(a) {
		return peer
	}
	// Each trusted hop vouches for the address left of it; the first hop that is not trusted
	// is the client. A hop that is not an address ends the walk: nothing left of it can be
	// believed, and the last trusted hop is the best known client.
	client, hops := peer, 0
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		for v := xff[i]; v != ""; {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			if entry = strings.TrimSpace(entry); entry == "" {
				continue
			}
			if hops++; hops > maxForwardedHops {
				return client
			}
			a, ok := parseHop(entry)
			if !ok {
				return client
			}
			client = a.String()
			if !c.isTrusted(a) {
				return client
			}
		}
	}
	return client
}

// peerTrusted reports whether r's TCP peer (never X-Forwarded-For) is one of the trusted.
func (c clientAddrs) peerTrusted(r *http.Request) bool {
	a, err := netip.ParseAddr(peerIP(r))
	return err == nil && c.isTrusted(a)
}

func (c clientAddrs) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with a port (some
// proxies add it).
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// peerIP is the address of the TCP peer.
func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
