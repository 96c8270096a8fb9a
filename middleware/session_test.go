package middleware

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func newTestSessions(t *testing.T, gen *uint64, guest *bool, clock *fakeClock) *Sessions {
	t.Helper()
	return NewSessions(SessionOptions{
		Codec:        NewSessionCodec([]byte("0123456789abcdef0123456789abcdef")),
		Lifetime:     24 * time.Hour,
		Generation:   func() uint64 { return *gen },
		GuestEnabled: func() bool { return *guest },
		MaxRevoked:   3,
		Now:          clock.Now,
	})
}

// issue returns the cookie Issue sets.
func issue(t *testing.T, s *Sessions, gen uint64, guest bool) *http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Issue(rec, httptest.NewRequest("POST", "/login", nil), gen, guest)
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("Issue set %d cookies", len(cookies))
	}
	return cookies[0]
}

func withCookie(value string) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: value})
	return r
}

func TestSessionCookieFlags(t *testing.T) {
	gen, guest := uint64(1), false
	s := newTestSessions(t, &gen, &guest, &fakeClock{time.Unix(1_700_000_000, 0)})
	c := issue(t, s, 1, false)
	if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Fatalf("cookie flags: %+v", c)
	}
	if want := time.Unix(1_700_000_000, 0).Add(24 * time.Hour); !c.Expires.Equal(want) {
		t.Errorf("expires %s, want %s", c.Expires, want)
	}

	tlsReq := httptest.NewRequest("POST", "https://gw/login", nil)
	proxied := httptest.NewRequest("POST", "/login", nil)
	proxied.Header.Set("X-Forwarded-Proto", "https")
	proxied.RemoteAddr = "10.0.0.2:5555"
	public := httptest.NewRequest("POST", "/login", nil)
	public.Header.Set("X-Forwarded-Proto", "https")
	public.RemoteAddr = "203.0.113.9:5555"
	for name, tc := range map[string]struct {
		r    *http.Request
		want bool
	}{"direct TLS": {tlsReq, true}, "private peer says https": {proxied, false}, "public peer says https": {public, false}} {
		rec := httptest.NewRecorder()
		s.Issue(rec, tc.r, 1, false)
		if got := rec.Result().Cookies()[0].Secure; got != tc.want {
			t.Errorf("%s: Secure = %v, want %v", name, got, tc.want)
		}
	}
}

func TestSessionIsRefusedWhenTamperedExpiredForeignRotatedOrRevoked(t *testing.T) {
	gen, guest := uint64(7), true
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	s := newTestSessions(t, &gen, &guest, clock)
	good := issue(t, s, 7, false).Value
	guestCookie := issue(t, s, 7, true).Value
	foreign := NewSessionCodec([]byte("another key, another gateway....")).Encode(NewSession(clock.now, time.Hour, 7, false))
	flipped := []byte(good)
	flipped[3] ^= 1

	tests := []struct {
		name   string
		value  string
		before func()
		method Method
		ok     bool
	}{
		{"valid", good, nil, MethodSession, true},
		{"valid guest", guestCookie, nil, MethodGuest, true},
		{"guest mode turned off", guestCookie, func() { guest = false }, MethodNone, false},
		{"tampered payload", string(flipped), nil, MethodNone, false},
		{"mac cut", good[:len(good)-2], nil, MethodNone, false},
		{"foreign key", foreign, nil, MethodNone, false},
		{"garbage", "not-a-cookie", nil, MethodNone, false},
		{"huge", strings.Repeat("A", 10000), nil, MethodNone, false},
		{"hash rotated", good, func() { gen = 8 }, MethodNone, false},
		{"no credential loaded", good, func() { gen = 0 }, MethodNone, false},
		{"expired", good, func() { clock.now = clock.now.Add(25 * time.Hour) }, MethodNone, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gen, guest, clock.now = 7, true, time.Unix(1_700_000_000, 0)
			if tc.before != nil {
				tc.before()
			}
			m, ok := s.Authenticate(withCookie(tc.value))
			if m != tc.method || ok != tc.ok {
				t.Fatalf("Authenticate = %s, %v; want %s, %v", m, ok, tc.method, tc.ok)
			}
		})
	}
}

func TestLogoutRevokesTheCookieValue(t *testing.T) {
	gen, guest := uint64(1), false
	s := newTestSessions(t, &gen, &guest, &fakeClock{time.Unix(1_700_000_000, 0)})
	c := issue(t, s, 1, false)
	other := issue(t, s, 1, false)
	rec := httptest.NewRecorder()
	s.End(rec, withCookie(c.Value))
	if cl := rec.Result().Cookies(); len(cl) != 1 || cl[0].MaxAge >= 0 || cl[0].Value != "" {
		t.Fatalf("logout did not clear the cookie: %+v", cl)
	}
	if _, ok := s.Authenticate(withCookie(c.Value)); ok {
		t.Fatal("the cookie value replayed after logout is still accepted")
	}
	if _, ok := s.Authenticate(withCookie(other.Value)); !ok {
		t.Fatal("another browser's session ended too")
	}
}

func TestFullRevocationListEndsOlderSessionsInsteadOfForgetting(t *testing.T) {
	gen, guest := uint64(1), false
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	s := newTestSessions(t, &gen, &guest, clock) // MaxRevoked 3
	var ended []string
	for range 4 {
		c := issue(t, s, 1, false)
		s.End(httptest.NewRecorder(), withCookie(c.Value))
		ended = append(ended, c.Value)
	}
	for i, v := range ended {
		if _, ok := s.Authenticate(withCookie(v)); ok {
			t.Errorf("revoked session %d came back after the list overflowed", i)
		}
	}
	if len(s.revoked) > 3 {
		t.Errorf("revocation list holds %d entries, bound is 3", len(s.revoked))
	}
	clock.now = clock.now.Add(time.Second)
	fresh := issue(t, s, 1, false)
	if _, ok := s.Authenticate(withCookie(fresh.Value)); !ok {
		t.Error("a session issued after the overflow is refused")
	}
}

func TestSessionCodecRoundTrip(t *testing.T) {
	c := NewSessionCodec([]byte("k"))
	in := NewSession(time.Unix(1_700_000_000, 0), time.Hour, 42, true)
	out, err := c.Decode(c.Encode(in))
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

// FuzzDecodeSession checks that no input makes Decode panic, and that
// whatever it accepts re-encodes to the same cookie (one encoding per
// session, so nothing can be smuggled in a second form).
func FuzzDecodeSession(f *testing.F) {
	c := NewSessionCodec([]byte("fuzz key"))
	f.Add(c.Encode(NewSession(time.Unix(1_700_000_000, 0), time.Hour, 1, false)))
	f.Add(c.Encode(NewSession(time.Unix(1_700_000_000, 0), time.Hour, 1, true)))
	f.Add("")
	f.Add(".")
	f.Add("AQ.AQ")
	f.Fuzz(func(t *testing.T, v string) {
		s, err := c.Decode(v)
		if err != nil {
			return
		}
		if again := c.Encode(s); again != v {
			t.Fatalf("accepted %q, which re-encodes as %q", v, again)
		}
	})
}
