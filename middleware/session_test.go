package middleware

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

const testKey = "0123456789abcdef0123456789abcdef"

// testCreds is the credentials a test Sessions sees; tests change them.
type testCreds struct {
	gen    uint64
	hashes []string
	users  []string
}

func (c *testCreds) get() (uint64, []string, []string) { return c.gen, c.hashes, c.users }

// set installs hashes as a new generation, as a reload does.
func (c *testCreds) set(hashes ...string) { c.gen++; c.hashes = hashes }

func newTestSessions(t *testing.T, creds *testCreds, guest *bool, clock *fakeClock, tweak ...func(*SessionOptions)) *Sessions {
	t.Helper()
	o := SessionOptions{
		Codec:           NewSessionCodec([]byte(testKey)),
		Lifetime:        24 * time.Hour,
		Credentials:     creds.get,
		GuestEnabled:    func() bool { return *guest },
		MaxRevoked:      3,
		MaxGuestRevoked: 3,
		Now:             clock.Now,
	}
	for _, f := range tweak {
		f(&o)
	}
	return NewSessions(o)
}

// issue returns the cookie IssueUser (hash != "") or IssueGuest sets.
func issue(t *testing.T, s *Sessions, hash string) *http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/login", nil)
	if hash != "" {
		s.IssueUser(rec, r, hash)
	} else if _, ok := s.IssueGuest(rec, r); !ok {
		t.Fatal("IssueGuest refused")
	}
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

func end(t *testing.T, s *Sessions, value string) {
	t.Helper()
	if err := s.End(httptest.NewRecorder(), withCookie(value)); err != nil {
		t.Fatal(err)
	}
}

func valid(s *Sessions, value string) bool {
	_, ok, _ := s.Authenticate(nil, withCookie(value))
	return ok
}

func TestSessionCookieFlags(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, false
	s := newTestSessions(t, creds, &guest, &fakeClock{time.Unix(1_700_000_000, 0)})
	c := issue(t, s, "A")
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
		s.IssueUser(rec, tc.r, "A")
		if got := rec.Result().Cookies()[0].Secure; got != tc.want {
			t.Errorf("%s: Secure = %v, want %v", name, got, tc.want)
		}
	}
}

func TestSessionIsRefusedWhenTamperedExpiredForeignRotatedOrRevoked(t *testing.T) {
	creds, guest := &testCreds{}, true
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	reset := func() { creds.set("A", "B"); guest = true; clock.now = time.Unix(1_700_000_000, 0) }
	reset()
	s := newTestSessions(t, creds, &guest, clock)
	good := issue(t, s, "A").Value
	guestCookie := issue(t, s, "").Value
	foreign := NewSessionCodec([]byte("another key, another gateway....")).Encode(
		NewSession(clock.now, time.Hour, NewSessionCodec([]byte("another key, another gateway....")).BindLine("A"), 1, false))
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
		{"reloaded, its line still loaded", good, func() { creds.set("C", "A") }, MethodSession, true},
		{"guest mode turned off", guestCookie, func() { guest = false }, MethodNone, false},
		{"tampered payload", string(flipped), nil, MethodNone, false},
		{"mac cut", good[:len(good)-2], nil, MethodNone, false},
		{"foreign key", foreign, nil, MethodNone, false},
		{"garbage", "not-a-cookie", nil, MethodNone, false},
		{"huge", strings.Repeat("A", 10000), nil, MethodNone, false},
		{"its line removed", good, func() { creds.set("B") }, MethodNone, false},
		{"guest after any change of the lines", guestCookie, func() { creds.set("A") }, MethodNone, false},
		{"no credential loaded", good, func() { creds.set() }, MethodNone, false},
		{"expired", good, func() { clock.now = clock.now.Add(25 * time.Hour) }, MethodNone, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reset()
			if tc.before != nil {
				tc.before()
			}
			u, ok, _ := s.Authenticate(nil, withCookie(tc.value))
			m := u.Method
			if !ok {
				m = MethodNone
			}
			if m != tc.method || ok != tc.ok {
				t.Fatalf("Authenticate = %s, %v; want %s, %v", m, ok, tc.method, tc.ok)
			}
		})
	}
}

func TestLogoutRevokesTheCookieValue(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, false
	s := newTestSessions(t, creds, &guest, &fakeClock{time.Unix(1_700_000_000, 0)})
	c := issue(t, s, "A")
	other := issue(t, s, "A")
	rec := httptest.NewRecorder()
	if err := s.End(rec, withCookie(c.Value)); err != nil {
		t.Fatal(err)
	}
	if cl := rec.Result().Cookies(); len(cl) != 1 || cl[0].MaxAge >= 0 || cl[0].Value != "" {
		t.Fatalf("logout did not clear the cookie: %+v", cl)
	}
	if valid(s, c.Value) {
		t.Fatal("the cookie value replayed after logout is still accepted")
	}
	if !valid(s, other.Value) {
		t.Fatal("another browser's session ended too")
	}
}

// TestFullListsEndTheirOwnKindOnly: MaxRevoked and MaxGuestRevoked are 3.
// Guests churning past their bound end guest sessions only; users past
// theirs end user sessions only; no revoked session comes back either way,
// and both lists stay within their bounds.
func TestFullListsEndTheirOwnKindOnly(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, true
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	s := newTestSessions(t, creds, &guest, clock)
	user := issue(t, s, "A").Value
	standingGuest := issue(t, s, "").Value
	var ended []string
	for range 4 {
		c := issue(t, s, "").Value
		end(t, s, c)
		ended = append(ended, c)
	}
	if !valid(s, user) {
		t.Fatal("guests overflowing their list ended a user session")
	}
	if valid(s, standingGuest) {
		t.Error("a guest session issued before the guest list overflowed is still valid")
	}
	for i, v := range ended {
		if valid(s, v) {
			t.Errorf("revoked guest session %d came back after the list overflowed", i)
		}
	}
	if !valid(s, issue(t, s, "").Value) {
		t.Error("a guest session issued after the overflow is refused")
	}

	guestAfter := issue(t, s, "").Value
	ended = ended[:0]
	for range 4 {
		c := issue(t, s, "A").Value
		end(t, s, c)
		ended = append(ended, c)
	}
	if valid(s, user) {
		t.Error("a user session issued before the user list overflowed is still valid")
	}
	if !valid(s, guestAfter) {
		t.Error("users overflowing their list ended a guest session")
	}
	for i, v := range ended {
		if valid(s, v) {
			t.Errorf("revoked user session %d came back after the list overflowed", i)
		}
	}
	if len(s.users.Revoked) > 3 || len(s.guestsEnded) > 3 {
		t.Errorf("lists hold %d user and %d guest entries, bound is 3", len(s.users.Revoked), len(s.guestsEnded))
	}
	if !valid(s, issue(t, s, "A").Value) {
		t.Error("a user session issued after the overflow is refused")
	}
}

// TestOnlyValidSessionsAddRevocations: replaying a logout, or logging out
// a cookie that is already refused, adds nothing to either list.
func TestOnlyValidSessionsAddRevocations(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, true
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	var writes int
	s := newTestSessions(t, creds, &guest, clock, func(o *SessionOptions) {
		o.Persist = func(RevocationState) error { writes++; return nil }
	})
	c := issue(t, s, "A").Value
	for range 5 {
		end(t, s, c)
	}
	end(t, s, "garbage")
	end(t, s, NewSessionCodec([]byte("other key")).Encode(NewSession(clock.now, time.Hour, [16]byte{}, 0, false)))
	if len(s.users.Revoked) != 1 || writes != 1 {
		t.Fatalf("%d entries and %d writes after one logout replayed; want 1 and 1", len(s.users.Revoked), writes)
	}
	g := issue(t, s, "").Value
	end(t, s, g)
	if writes != 1 || len(s.guestsEnded) != 1 {
		t.Fatalf("a guest logout: %d writes (want none), %d guest entries", writes, len(s.guestsEnded))
	}
}

// TestUserRevocationsRestoredFromState plays a restart: the state Persist
// last received starts a new Sessions. User logouts hold and other user
// sessions live on; guest sessions from before end.
func TestUserRevocationsRestoredFromState(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, true
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	var kept RevocationState
	persist := func(o *SessionOptions) {
		o.Persist = func(st RevocationState) error { kept = st; return nil }
	}
	first := newTestSessions(t, creds, &guest, clock, persist)
	out, stays, g := issue(t, first, "A").Value, issue(t, first, "A").Value, issue(t, first, "").Value
	end(t, first, out)
	if _, ok := kept.Revoked[mustDecode(t, out).ID]; !ok || len(kept.Revoked) != 1 {
		t.Fatalf("Persist got %v, want the one logout", kept.Revoked)
	}
	clock.now = clock.now.Add(time.Hour)
	second := newTestSessions(t, &testCreds{gen: 1, hashes: []string{"A"}}, &guest, clock, persist,
		func(o *SessionOptions) { o.State = &kept })
	if valid(second, out) {
		t.Error("a logged-out session came back after the restart")
	}
	if !valid(second, stays) {
		t.Error("a session that was not logged out ended at the restart")
	}
	if valid(second, g) {
		t.Error("a guest session survived the restart")
	}
	fresh := newTestSessions(t, creds, &guest, clock) // no state: a new epoch
	if valid(fresh, stays) {
		t.Error("without kept state, a session from before the restart is still valid")
	}
}

func TestPersistFailureKeepsTheRevocationAndRetriesOnFlush(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, false
	fail := true
	var kept RevocationState
	s := newTestSessions(t, creds, &guest, &fakeClock{time.Unix(1_700_000_000, 0)}, func(o *SessionOptions) {
		o.Persist = func(st RevocationState) error {
			if fail {
				return errors.New("disk full")
			}
			kept = st
			return nil
		}
	})
	c := issue(t, s, "A").Value
	if err := s.End(httptest.NewRecorder(), withCookie(c)); err == nil {
		t.Fatal("End hid the failed write")
	}
	if valid(s, c) {
		t.Fatal("a logout whose write failed does not hold in memory")
	}
	fail = false
	if err := s.Flush(); err != nil || len(kept.Revoked) != 1 {
		t.Fatalf("Flush: %v, kept %d entries", err, len(kept.Revoked))
	}
}

func mustDecode(t *testing.T, v string) Session {
	t.Helper()
	s, err := NewSessionCodec([]byte(testKey)).Decode(v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOldLayoutCookieIsRefused: a version 1 cookie, correctly signed with
// the same key, is refused rather than misread.
func TestOldLayoutCookieIsRefused(t *testing.T) {
	c := NewSessionCodec([]byte(testKey))
	p := make([]byte, 1+1+16+8+8+8) // version 1: ... generation(8)
	p[0] = 1
	binary.BigEndian.PutUint64(p[18:26], uint64(time.Now().Unix()))
	binary.BigEndian.PutUint64(p[26:34], uint64(time.Now().Add(time.Hour).Unix()))
	binary.BigEndian.PutUint64(p[34:42], 1)
	enc := base64.RawURLEncoding
	v := enc.EncodeToString(p) + "." + enc.EncodeToString(c.mac(nil, p))
	if _, err := c.Decode(v); err != ErrBadSession {
		t.Fatalf("version 1 cookie: %v, want ErrBadSession", err)
	}
}

func TestSessionCodecRoundTrip(t *testing.T) {
	c := NewSessionCodec([]byte("k"))
	in := NewSession(time.Unix(1_700_000_000, 0), time.Hour, c.BindLine("A"), 42, true)
	out, err := c.Decode(c.Encode(in))
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	if c.BindLine("A") == c.BindSet([]string{"A"}) || c.BindSet([]string{"AB"}) == c.BindSet([]string{"A", "B"}) {
		t.Fatal("bindings of different credentials collide")
	}
	if NewSessionCodec([]byte("k2")).BindLine("A") == c.BindLine("A") {
		t.Fatal("the binding does not depend on the key")
	}
}

// FuzzDecodeSession checks that no input makes Decode panic, and that
// whatever it accepts re-encodes to the same cookie (one encoding per
// session, so nothing can be smuggled in a second form).
func FuzzDecodeSession(f *testing.F) {
	c := NewSessionCodec([]byte("fuzz key"))
	f.Add(c.Encode(NewSession(time.Unix(1_700_000_000, 0), time.Hour, c.BindLine("A"), 1, false)))
	f.Add(c.Encode(NewSession(time.Unix(1_700_000_000, 0), time.Hour, c.BindSet([]string{"A"}), 1, true)))
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

// TestConcurrentLogoutsAllReachPersist: logouts racing each other share
// writes, and each returns only once a write holding it has succeeded.
func TestConcurrentLogoutsAllReachPersist(t *testing.T) {
	creds, guest := &testCreds{gen: 1, hashes: []string{"A"}}, false
	var mu sync.Mutex
	var kept RevocationState
	writes := 0
	s := newTestSessions(t, creds, &guest, &fakeClock{time.Unix(1_700_000_000, 0)}, func(o *SessionOptions) {
		o.MaxRevoked = 100
		o.Persist = func(st RevocationState) error {
			mu.Lock()
			defer mu.Unlock()
			kept, writes = st, writes+1
			return nil
		}
	})
	const n = 50
	cookies := make([]string, n)
	for i := range cookies {
		cookies[i] = issue(t, s, "A").Value
	}
	var wg sync.WaitGroup
	for _, c := range cookies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.End(httptest.NewRecorder(), withCookie(c)); err != nil {
				t.Error(err)
			}
			// Returned: a write that holds this logout has happened.
			id := mustDecode(t, c).ID
			mu.Lock()
			_, ok := kept.Revoked[id]
			mu.Unlock()
			if !ok {
				t.Error("End returned before its revocation was persisted")
			}
		}()
	}
	wg.Wait()
	if len(kept.Revoked) != n || writes > n {
		t.Fatalf("persisted %d of %d revocations in %d writes", len(kept.Revoked), n, writes)
	}
}
