package server

// Who is the client? The rate limiter keys on the answer, so it must not be
// something a client can choose. The TCP peer is the client unless the peer
// is one of our own reverse proxies (TRUSTED_PROXIES); only then are
// X-Forwarded-For / X-Real-IP read, and only the part our proxies wrote.

import (
	"net/http"
	"net/netip"
	"strings"
)

type proxyTrust struct {
	prefixes []netip.Prefix
}

func (t proxyTrust) trusts(a netip.Addr) bool {
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr returns the request's client address, or the zero Addr when the
// peer address cannot be parsed (such requests share one bucket).
//
// X-Forwarded-For is read from the right: each trusted proxy appends the
// address it saw, so walking leftwards past our own proxies, the first
// address that is not ours is the client. Everything left of it was written
// by the client and is ignored. A malformed entry where a trusted proxy
// should have written an address means the chain cannot be read, so the
// nearest trusted hop stands in for the client instead of guessing.
func (t proxyTrust) clientAddr(r *http.Request) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || len(t.prefixes) == 0 || !t.trusts(peer) {
		return peer
	}
	if hops := forwardedFor(r.Header); len(hops) > 0 {
		nearest := peer
		for i := len(hops) - 1; i >= 0; i-- {
			a := parseHostAddr(hops[i])
			if !a.IsValid() {
				return nearest
			}
			if !t.trusts(a) {
				return a
			}
			nearest = a
		}
		return nearest // the whole chain is ours: the left-most hop is the origin
	}
	if real := strings.TrimSpace(r.Header.Get("X-Real-IP")); real != "" {
		if a := parseHostAddr(real); a.IsValid() {
			return a
		}
	}
	return peer
}

// forwardedFor joins every X-Forwarded-For line (a proxy may add its own line
// instead of extending the last one) into one list of hops, left to right.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("X-Forwarded-For") {
		for _, hop := range strings.Split(line, ",") {
			if hop = strings.TrimSpace(hop); hop != "" {
				hops = append(hops, hop)
			}
		}
	}
	return hops
}

// parseHostAddr reads "ip", "ip:port" or "[ipv6]:port", dropping any zone
// and unmapping IPv4-in-IPv6 so one client has one form.
func parseHostAddr(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// rateKey is the bucket a client draws from. IPv6 clients are grouped by
// /64, the block one subscriber usually holds, so a single host cannot mint
// fresh buckets by rotating through its own addresses.
func rateKey(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is6():
		p, _ := a.Prefix(64)
		return p.String()
	default:
		return a.String()
	}
}
