package middleware

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	chimw "github.com/go-chi/chi/v5/middleware"
)

// ClientAddr is kept rather than chi's ClientIPFromXFF (see its doc
// comment); this holds it to chi's answer wherever chi gives one, so the
// two cannot drift apart on the cases that decide who a client is. Where
// chi gives none (no header, an all-trusted chain, garbage), ClientAddr
// must answer with a trusted hop, never with a client-written entry.
func TestClientAddrAgreesWithChiClientIPFromXFF(t *testing.T) {
	const cidrs = "10.0.0.0/8, 172.17.0.1, ::1"
	trusted, err := ParseTrustedProxies(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	for _, p := range trusted {
		prefixes = append(prefixes, p.String())
	}
	chiSays := func(r *http.Request) netip.Addr {
		var got netip.Addr
		chimw.ClientIPFromXFF(prefixes...)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got = chimw.GetClientIPAddr(r.Context())
		})).ServeHTTP(httptest.NewRecorder(), r)
		return got
	}
	tests := []struct {
		peer string
		xff  []string
		// chiXFF, when set, is what chi is shown instead: the same hops
		// without ports, which chi does not read (IIS and Azure's gateway
		// append "address:port").
		chiXFF []string
	}{
		{"203.0.113.7:5000", []string{"1.1.1.1"}, nil},
		{"10.1.2.3:5000", []string{"198.51.100.9"}, nil},
		{"10.1.2.3:5000", []string{"1.1.1.1, 2.2.2.2, 198.51.100.9"}, nil},
		{"10.1.2.3:5000", []string{"198.51.100.9, 172.17.0.1, 10.9.9.9"}, nil},
		{"10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.9, 10.0.0.2"}, nil},
		{"10.1.2.3:5000", []string{"10.0.0.5, 10.0.0.6"}, nil},
		{"10.1.2.3:5000", []string{"198.51.100.9, junk"}, nil},
		{"10.1.2.3:5000", []string{"junk, 198.51.100.9"}, nil},
		{"10.1.2.3:5000", nil, nil},
		{"10.1.2.3:5000", []string{"198.51.100.9:4444"}, []string{"198.51.100.9"}},
		{"10.1.2.3:5000", []string{"1.1.1.1, [2001:db8::1]:4444, 10.0.0.2:80"}, []string{"1.1.1.1, 2001:db8::1, 10.0.0.2"}},
		{"10.1.2.3:5000", []string{"::ffff:10.0.0.9, ::ffff:198.51.100.9"}, nil},
		{"10.1.2.3:5000", []string{"fe80::1%eth0"}, nil},
		{"[::1]:5000", []string{"2001:db8::2"}, nil},
		{"[::ffff:10.1.2.3]:5000", []string{"198.51.100.9"}, nil},
		{"[::ffff:192.0.2.1]:5000", []string{"198.51.100.9"}, nil},
		{"172.17.0.1:80", []string{" 198.51.100.9 ,, "}, nil},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		ours := trusted.ClientAddr(r)
		if tc.chiXFF != nil {
			r.Header.Del("X-Forwarded-For")
			for _, v := range tc.chiXFF {
				r.Header.Add("X-Forwarded-For", v)
			}
		}
		theirs := chiSays(r)
		switch {
		case theirs.IsValid() && ours != theirs:
			t.Errorf("peer %s XFF %q: ClientAddr %v, chi %v", tc.peer, tc.xff, ours, theirs)
		case !theirs.IsValid() && !trusted.Contains(ours):
			// chi fails closed with no address; ours must then fall
			// back to a trusted hop, never to a client-written entry.
			t.Errorf("peer %s XFF %q: chi finds no client, ClientAddr picked untrusted %v", tc.peer, tc.xff, ours)
		}
	}
}
