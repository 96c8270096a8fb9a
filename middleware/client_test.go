package middleware

import (
	"crypto/tls"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddrBelievesOnlyTrustedProxies(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 172.17.0.1 ::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		trusted TrustedProxies
		peer    string
		xff     []string
		want    string
	}{
		{"no proxies trusted: the peer, whatever XFF says", nil, "203.0.113.7:5000", []string{"1.1.1.1"}, "203.0.113.7"},
		{"untrusted peer's XFF ignored", trusted, "203.0.113.7:5000", []string{"1.1.1.1"}, "203.0.113.7"},
		{"trusted peer: its client", trusted, "10.1.2.3:5000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"client-written entries left of the real one are ignored", trusted, "10.1.2.3:5000", []string{"1.1.1.1, 2.2.2.2, 198.51.100.9"}, "198.51.100.9"},
		{"chain of trusted proxies is walked", trusted, "10.1.2.3:5000", []string{"198.51.100.9, 172.17.0.1, 10.9.9.9"}, "198.51.100.9"},
		{"repeated headers are one list", trusted, "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.9, 10.0.0.2"}, "198.51.100.9"},
		{"all trusted: the left-most", trusted, "10.1.2.3:5000", []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5"},
		{"garbage stops at the hop that forwarded it", trusted, "10.1.2.3:5000", []string{"198.51.100.9, junk"}, "10.1.2.3"},
		{"no XFF from a trusted peer: the peer", trusted, "10.1.2.3:5000", nil, "10.1.2.3"},
		{"XFF entry with a port", trusted, "10.1.2.3:5000", []string{"198.51.100.9:4444"}, "198.51.100.9"},
		{"bracketed IPv6 entry", trusted, "10.1.2.3:5000", []string{"[2001:db8::1]:4444"}, "2001:db8::1"},
		{"IPv6 peer", trusted, "[::1]:5000", []string{"2001:db8::2"}, "2001:db8::2"},
		{"IPv4-mapped peer is unmapped", nil, "[::ffff:192.0.2.1]:5000", nil, "192.0.2.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.trusted.ClientAddr(r); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("ClientAddr = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseTrustedProxiesSaysWhatIsWrong(t *testing.T) {
	_, err := ParseTrustedProxies("10.0.0.0/8,not-an-ip")
	if err == nil || !strings.Contains(err.Error(), "not-an-ip") || !strings.Contains(err.Error(), "CIDR") {
		t.Fatalf("err = %v", err)
	}
	tp, err := ParseTrustedProxies("")
	if err != nil || len(tp) != 0 {
		t.Fatalf("empty list: %v %v", tp, err)
	}
}

func TestIsHTTPSTrustsForwardedProtoOnlyFromTrustedProxies(t *testing.T) {
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	tests := []struct {
		name  string
		peer  string
		tls   bool
		proto string
		want  bool
	}{
		{"direct TLS", "203.0.113.7:1", true, "", true},
		{"plain, no header", "203.0.113.7:1", false, "", false},
		{"untrusted peer claims https", "203.0.113.7:1", false, "https", false},
		{"trusted proxy says https", "10.0.0.2:1", false, "https", true},
		{"trusted proxy says http", "10.0.0.2:1", false, "http", false},
		{"last hop decides", "10.0.0.2:1", false, "https, http", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tc.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			if got := trusted.IsHTTPS(r); got != tc.want {
				t.Fatalf("IsHTTPS = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzClientAddr feeds arbitrary peer addresses and X-Forwarded-For values.
// It must never panic, never return an address from a header when the peer
// is untrusted, and always return either the peer or an address that
// appears in the header.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.1.2.3:5000", "198.51.100.9, 10.0.0.2")
	f.Add("203.0.113.7:1", "1.1.1.1")
	f.Add("[::1]:80", "[2001:db8::1]:4444, junk")
	f.Add("garbage", ",,,")
	f.Add("10.0.0.1:1", "::ffff:10.0.0.1")
	trusted, _ := ParseTrustedProxies("10.0.0.0/8, ::1")
	f.Fuzz(func(t *testing.T, peer, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", xff)
		got := trusted.ClientAddr(r)
		p := parseHostAddr(peer)
		if got == p {
			return
		}
		if !p.IsValid() || !trusted.Contains(p) {
			t.Fatalf("untrusted peer %q attributed to %v from its own header", peer, got)
		}
		for _, h := range forwardedFor(r.Header) {
			if parseHostAddr(h) == got {
				return
			}
		}
		t.Fatalf("ClientAddr %v is neither the peer nor a header entry", got)
	})
}

// TestResolveAnswersEverythingFromOneReading: the address, the budget, the
// pool's client name, HTTPS and the ignored-header warning come from one
// Resolve, so they cannot disagree: a trusted proxy's last
// X-Forwarded-Proto hop decides, and only an untrusted peer's https is
// "ignored".
func TestResolveAnswersEverythingFromOneReading(t *testing.T) {
	cr := ClientResolver{Trusted: TrustedProxies{netip.MustParsePrefix("10.0.0.0/8")}}
	tests := []struct {
		name, peer, xff, proto, site string
		addr, pool                   string
		https, ignored               bool
	}{
		{"direct", "203.0.113.7:1", "", "", "", "203.0.113.7", "203.0.113.7", false, false},
		{"untrusted https", "203.0.113.7:1", "1.1.1.1", "https", "", "203.0.113.7", "203.0.113.7", false, true},
		{"trusted https", "10.0.0.2:1", "198.51.100.9", "https", "", "198.51.100.9", "198.51.100.9", true, false},
		{"trusted, last hop http", "10.0.0.2:1", "198.51.100.9", "https, http", "", "198.51.100.9", "198.51.100.9", false, false},
		{"cross-site IPv6", "[2001:db8:1:2::5]:1", "", "", "cross-site", "2001:db8:1:2::5", "cross-site 2001:db8:1:2::", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for k, v := range map[string]string{"X-Forwarded-For": tc.xff, "X-Forwarded-Proto": tc.proto, "Sec-Fetch-Site": tc.site} {
				if v != "" {
					r.Header.Set(k, v)
				}
			}
			c := cr.Resolve(r)
			if c.Addr.String() != tc.addr || c.Key().String() != tc.pool || c.HTTPS != tc.https || c.ProtoIgnored != tc.ignored {
				t.Fatalf("Resolve = addr %v pool %q https %v ignored %v; want %s %q %v %v",
					c.Addr, c.Key().String(), c.HTTPS, c.ProtoIgnored, tc.addr, tc.pool, tc.https, tc.ignored)
			}
			if c.SameSiteKey().CrossSite {
				t.Fatal("SameSiteKey is cross-site")
			}
		})
	}
}
