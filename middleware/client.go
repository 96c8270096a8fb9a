package middleware

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies is the set of networks whose X-Forwarded-For and
// X-Forwarded-Proto headers are believed (--trusted-proxies). Empty, the
// default, believes no one: a client could otherwise pick its own address
// and dodge the failure throttle, or lock out someone else's.
type TrustedProxies []netip.Prefix

// ParseTrustedProxies reads a comma- or space-separated list of CIDRs or
// bare IP addresses (a bare address is a /32 or /128).
func ParseTrustedProxies(s string) (TrustedProxies, error) {
	var tp TrustedProxies
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if p, err := netip.ParsePrefix(f); err == nil {
			tp = append(tp, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q is neither a CIDR (10.0.0.0/8) nor an IP address (172.17.0.1)", f)
		}
		a = a.Unmap()
		tp = append(tp, netip.PrefixFrom(a, a.BitLen()))
	}
	return tp, nil
}

// Contains reports whether a is inside one of the trusted networks.
func (tp TrustedProxies) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tp {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address a request is attributed to for throttling: the
// connection's peer or, when the peer is a trusted proxy, the right-most
// X-Forwarded-For entry that is not itself a trusted proxy. Entries to the
// left of that one were written by the client and are ignored, so a client
// cannot choose its address by sending its own X-Forwarded-For. If every
// entry is trusted, the left-most is used; if an entry is unreadable, the
// hop that forwarded it is used. The zero Addr means the peer address could
// not be read (never the case with net/http over TCP).
//
// It agrees with chi's middleware.ClientIPFromXFF wherever that gives an
// answer (TestClientAddrAgreesWithChiClientIPFromXFF), but chi's does not
// fit here: it reads hops without ports only, and IIS and Azure's gateway
// append "address:port", so behind them every client would become the
// proxy and one guesser would lock out all; it answers through the request
// context, where the throttle and the login form need the address from the
// request itself; and where it finds no client it leaves none, where the
// throttle needs a key.
func (tp TrustedProxies) ClientAddr(r *http.Request) netip.Addr {
	return tp.clientAddr(r, parseHostAddr(r.RemoteAddr))
}

// clientAddr is ClientAddr for the peer address already read from r.
func (tp TrustedProxies) clientAddr(r *http.Request, peer netip.Addr) netip.Addr {
	if !peer.IsValid() || len(tp) == 0 || !tp.Contains(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseHostAddr(hops[i])
		if !a.IsValid() {
			return client
		}
		client = a
		if !tp.Contains(a) {
			return a
		}
	}
	return client
}

// IsHTTPS reports whether the client reached us over TLS: directly, or
// through a trusted proxy that says so in the last value of
// X-Forwarded-Proto. It decides Client.HTTPS, which sets the session
// cookie's Secure flag and the X-Forwarded-Proto ComfyUI receives; an
// untrusted peer's header is ignored so it can change neither.
func (tp TrustedProxies) IsHTTPS(r *http.Request) bool {
	return tp.isHTTPS(r, parseHostAddr(r.RemoteAddr))
}

// isHTTPS is IsHTTPS for the peer address already read from r.
func (tp TrustedProxies) isHTTPS(r *http.Request, peer netip.Addr) bool {
	if r.TLS != nil {
		return true
	}
	if !peer.IsValid() || !tp.Contains(peer) {
		return false
	}
	return forwardedProtoIsHTTPS(r.Header)
}

// forwardedFor returns the X-Forwarded-For hops in order, across repeated
// headers.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, v := range h["X-Forwarded-For"] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				hops = append(hops, p)
			}
		}
	}
	return hops
}

// parseHostAddr reads "1.2.3.4", "1.2.3.4:5", "[::1]:5", "::1" or "[::1]",
// unmapping IPv4-in-IPv6 so one client has one key.
func parseHostAddr(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// throttleKey groups addresses that one client controls: an IPv6 client
// usually owns a whole /64, so counting single IPv6 addresses would give an
// attacker 2^64 fresh budgets.
func throttleKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
