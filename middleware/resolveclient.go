package middleware

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Client is who sent a request, decided once per request by
// ClientResolver.Resolve and kept in Info.Client. Everything that asks
// "who is this" (the access log, the throttle, the bcrypt pool's fair
// queueing, the session cookie's Secure flag, the X-Forwarded-* headers
// ComfyUI receives, the login form) reads it from there, so no two of them
// can answer differently.
type Client struct {
	// Addr is the address the request is attributed to: the connection's
	// peer or, from a trusted proxy, the client it names (see
	// TrustedProxies.ClientAddr). The zero Addr only when the peer address
	// is unreadable, never with net/http over TCP.
	Addr netip.Addr
	// Peer is the connection's own peer address.
	Peer netip.Addr
	// HTTPS: the client reached the gateway over TLS, directly or through
	// a trusted proxy that says so in X-Forwarded-Proto (see
	// TrustedProxies.IsHTTPS).
	HTTPS bool
	// ProtoIgnored: a peer outside the trusted proxies sent an
	// X-Forwarded-Proto that would have meant https. It is ignored; the
	// server says so once in the log, since it is usually a TLS proxy
	// missing from --trusted-proxies.
	ProtoIgnored bool
	// CrossSite: the browser says another site made the request (see
	// IsCrossSite).
	CrossSite bool

	resolved bool
	// addrText is Addr as text, made once at resolution: the access log
	// and X-Forwarded-For both write it.
	addrText string
}

// AddrText is Addr as text ("" for the zero Addr).
func (c Client) AddrText() string {
	if c.addrText == "" && c.Addr.IsValid() {
		return c.Addr.String()
	}
	return c.addrText
}

// ClientKey is one failure budget of the throttle and one client of the
// bcrypt pool's fair queueing: an address (an IPv6 /64, which one client
// usually owns whole), same-site or cross-site.
type ClientKey struct {
	Addr      netip.Addr
	CrossSite bool
}

// Key is c's budget: its address grouped as the throttle counts it, and
// whether the request is cross-site.
func (c Client) Key() ClientKey {
	return ClientKey{Addr: throttleKey(c.Addr), CrossSite: c.CrossSite}
}

// SameSiteKey is c's same-site budget, whatever this request's site: the
// login page shows the lock of the address's own budget.
func (c Client) SameSiteKey() ClientKey {
	return ClientKey{Addr: throttleKey(c.Addr)}
}

// String names the key for the bcrypt pool, where cross-site requests are a
// client of their own so that a web page's wrong tokens do not push back
// its visitor's own.
func (k ClientKey) String() string {
	if k.CrossSite {
		return "cross-site " + k.Addr.String()
	}
	return k.Addr.String()
}

// ClientResolver resolves the Client of a request.
type ClientResolver struct {
	// Trusted are the proxies whose X-Forwarded-For and X-Forwarded-Proto
	// are believed (--trusted-proxies).
	Trusted TrustedProxies
	// PublicURL, when set, is the gateway's own origin (see IsCrossSite).
	PublicURL *url.URL
}

// Resolve computes r's Client. It reads only the connection and headers,
// so it is cheap and cannot fail.
func (cr ClientResolver) Resolve(r *http.Request) Client {
	peer := parseHostAddr(r.RemoteAddr)
	c := Client{
		Addr:      cr.Trusted.clientAddr(r, peer),
		Peer:      peer,
		HTTPS:     cr.Trusted.isHTTPS(r, peer),
		CrossSite: IsCrossSite(r, cr.PublicURL),
		resolved:  true,
	}
	// Not HTTPS although the header says so: the peer is not trusted.
	c.ProtoIgnored = !c.HTTPS && forwardedProtoIsHTTPS(r.Header)
	if c.Addr.IsValid() {
		// Usually the peer's own address, already text in RemoteAddr.
		var buf [48]byte
		text := c.Addr.AppendTo(buf[:0])
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil && host == string(text) {
			c.addrText = host
		} else {
			c.addrText = string(text)
		}
	}
	return c
}

// ResolveClient resolves each request's Client once, into Info.Client,
// before anything else reads it.
func ResolveClient(cr ClientResolver) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			InfoFrom(r).Client = cr.Resolve(r)
			next.ServeHTTP(w, r)
		})
	}
}

// ClientOf returns r's Client as ResolveClient recorded it, resolving it
// with cr when nothing did (a handler used on its own, as in tests).
func ClientOf(r *http.Request, cr ClientResolver) Client {
	info := InfoFrom(r)
	if !info.Client.resolved {
		info.Client = cr.Resolve(r)
	}
	return info.Client
}

// forwardedProtoIsHTTPS reads X-Forwarded-Proto as the gateway believes it
// from a trusted proxy: the last value, which the closest proxy appended or
// set.
func forwardedProtoIsHTTPS(h http.Header) bool {
	vals := h["X-Forwarded-Proto"]
	if len(vals) == 0 {
		return false
	}
	parts := strings.Split(vals[len(vals)-1], ",")
	return strings.EqualFold(strings.TrimSpace(parts[len(parts)-1]), "https")
}
