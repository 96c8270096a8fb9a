package middleware

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// SessionCookie is the gateway's browser session cookie. The proxy strips it
// before ComfyUI sees a request.
const SessionCookie = "comfyui_auth_session"

// sessionVersion is the first payload byte. A new layout gets a new version,
// so an old cookie is refused instead of misread.
const sessionVersion = 1

// payload layout: version(1) flags(1) id(16) issued(8) expires(8) generation(8).
const sessionPayloadLen = 1 + 1 + 16 + 8 + 8 + 8

const flagGuest = 1

// maxCookieLen bounds the work done on a cookie before its MAC is checked.
const maxCookieLen = 256

// Session is what a session cookie carries. It holds no secret: the
// cookie is signed, not encrypted, and the payload says only who issued it
// when, for how long, and for which credential generation.
type Session struct {
	// ID is random; logout revokes it until Expires.
	ID      [16]byte
	Issued  time.Time
	Expires time.Time
	// Generation is the credential generation the password was checked
	// against; rotating the hash file moves the store on and ends the session.
	Generation uint64
	// Guest marks a guest-mode session, which the guest policy restricts.
	Guest bool
}

// SessionCodec signs and checks session cookies with HMAC-SHA256.
type SessionCodec struct {
	key  []byte
	macs sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key
}

// NewSessionCodec derives the MAC key from secret, so a secret shared with
// something else (SECRET_KEY is a common name) never keys our MAC directly.
func NewSessionCodec(secret []byte) *SessionCodec {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("comfyui-auth session cookie v1"))
	return &SessionCodec{key: m.Sum(nil)}
}

// NewSession returns a session with a fresh random ID.
func NewSession(now time.Time, lifetime time.Duration, gen uint64, guest bool) Session {
	var s Session
	if _, err := rand.Read(s.ID[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	s.Issued = now.Truncate(time.Second)
	s.Expires = now.Add(lifetime).Truncate(time.Second)
	s.Generation = gen
	s.Guest = guest
	return s
}

// Encode returns the cookie value: base64url(payload) "." base64url(mac).
func (c *SessionCodec) Encode(s Session) string {
	p := make([]byte, sessionPayloadLen)
	p[0] = sessionVersion
	if s.Guest {
		p[1] = flagGuest
	}
	copy(p[2:18], s.ID[:])
	binary.BigEndian.PutUint64(p[18:26], uint64(s.Issued.Unix()))
	binary.BigEndian.PutUint64(p[26:34], uint64(s.Expires.Unix()))
	binary.BigEndian.PutUint64(p[34:42], s.Generation)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(p) + "." + enc.EncodeToString(c.mac(nil, p))
}

// mac appends the MAC of p to dst. Every request with a cookie is checked
// here; a keyed HMAC from the pool saves setting one up each time.
func (c *SessionCodec) mac(dst, p []byte) []byte {
	m, _ := c.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, c.key)
	}
	m.Reset()
	m.Write(p)
	dst = m.Sum(dst)
	c.macs.Put(m)
	return dst
}

// ErrBadSession is returned for every cookie that is not one of ours:
// malformed, tampered with, or signed with another key. Callers treat it as
// no cookie, so the reasons are not told apart.
var ErrBadSession = errors.New("not a valid session cookie")

// Decode checks the MAC in constant time, then the layout. It does not check
// expiry or generation; Sessions does, against the clock and the store.
func (c *SessionCodec) Decode(v string) (Session, error) {
	var s Session
	if len(v) > maxCookieLen {
		return s, ErrBadSession
	}
	for i := 0; i < len(v); i++ {
		// base64's decoder skips \r and \n; refusing every byte outside the
		// alphabet keeps one cookie form per session.
		if c := v[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return s, ErrBadSession
		}
	}
	pb, mb, ok := strings.Cut(v, ".")
	if !ok {
		return s, ErrBadSession
	}
	// Strict: padding bits must be zero, so each session has exactly one
	// cookie form and a flipped last character is not a second valid copy.
	enc := base64.RawURLEncoding.Strict()
	p, err1 := enc.DecodeString(pb)
	m, err2 := enc.DecodeString(mb)
	if err1 != nil || err2 != nil || len(m) != sha256.Size {
		return s, ErrBadSession
	}
	var want [sha256.Size]byte
	if !hmac.Equal(m, c.mac(want[:0], p)) {
		return s, ErrBadSession
	}
	if len(p) != sessionPayloadLen || p[0] != sessionVersion || p[1]&^flagGuest != 0 {
		return s, ErrBadSession
	}
	s.Guest = p[1]&flagGuest != 0
	copy(s.ID[:], p[2:18])
	s.Issued = time.Unix(int64(binary.BigEndian.Uint64(p[18:26])), 0)
	s.Expires = time.Unix(int64(binary.BigEndian.Uint64(p[26:34])), 0)
	s.Generation = binary.BigEndian.Uint64(p[34:42])
	return s, nil
}

// SessionOptions configures Sessions.
type SessionOptions struct {
	Codec    *SessionCodec
	Lifetime time.Duration
	// Generation returns the credential generation in force, 0 when none is
	// loaded (then no session is valid: fail closed).
	Generation func() uint64
	// GuestEnabled reports whether guest mode is on now; guest sessions stop
	// working as soon as it is turned off.
	GuestEnabled func() bool
	// SecureOrigin reports whether the public origin is https, so cookies
	// get the Secure flag even when TLS ends at a proxy in front.
	SecureOrigin bool
	// IsHTTPS, when set, also marks a request as HTTPS (the proxies listed
	// in --trusted-proxies saying so in X-Forwarded-Proto, wherever they
	// are), so its cookies get the Secure flag. No one else's
	// X-Forwarded-Proto is believed, whatever their address.
	IsHTTPS func(*http.Request) bool
	// MaxRevoked bounds the revocation list; 0 means 10000.
	MaxRevoked int
	Logger     zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sessions issues, recognises and revokes browser sessions. It implements
// SessionAuthenticator.
type Sessions struct {
	opts SessionOptions

	mu      sync.Mutex
	revoked map[[16]byte]time.Time // session ID -> its expiry
	// notBefore ends every session issued before it; set when the
	// revocation list overflows, so the list stays bounded without ever
	// bringing a revoked session back to life.
	notBefore time.Time
}

var _ SessionAuthenticator = (*Sessions)(nil)

// NewSessions returns a Sessions.
func NewSessions(opts SessionOptions) *Sessions {
	if opts.MaxRevoked <= 0 {
		opts.MaxRevoked = 10000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.GuestEnabled == nil {
		opts.GuestEnabled = func() bool { return false }
	}
	return &Sessions{opts: opts, revoked: map[[16]byte]time.Time{}}
}

// Current returns the request's valid session. Tampered, foreign, expired,
// revoked and other-generation cookies all count as no session.
func (s *Sessions) Current(r *http.Request) (Session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return Session{}, false
	}
	sess, err := s.opts.Codec.Decode(c.Value)
	if err != nil {
		return Session{}, false
	}
	now := s.opts.Now()
	if !now.Before(sess.Expires) || sess.Issued.After(now.Add(time.Minute)) {
		return Session{}, false
	}
	if gen := s.opts.Generation(); gen == 0 || gen != sess.Generation {
		return Session{}, false
	}
	if sess.Guest && !s.opts.GuestEnabled() {
		return Session{}, false
	}
	s.mu.Lock()
	_, revoked := s.revoked[sess.ID]
	stale := sess.Issued.Before(s.notBefore)
	s.mu.Unlock()
	if revoked || stale {
		return Session{}, false
	}
	return sess, true
}

// Authenticate implements SessionAuthenticator.
func (s *Sessions) Authenticate(r *http.Request) (Method, bool) {
	sess, ok := s.Current(r)
	if !ok {
		return MethodNone, false
	}
	if sess.Guest {
		return MethodGuest, true
	}
	return MethodSession, true
}

// Issue starts a session for the credential generation gen and sets its
// cookie on w.
func (s *Sessions) Issue(w http.ResponseWriter, r *http.Request, gen uint64, guest bool) Session {
	sess := NewSession(s.opts.Now(), s.opts.Lifetime, gen, guest)
	http.SetCookie(w, s.cookie(r, s.opts.Codec.Encode(sess), sess.Expires))
	return sess
}

// End revokes the request's session, if any, until its own expiry (a copied
// cookie must not outlive logout), and clears the cookie on w.
func (s *Sessions) End(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		if sess, err := s.opts.Codec.Decode(c.Value); err == nil {
			s.revoke(sess)
		}
	}
	ck := s.cookie(r, "", time.Unix(0, 0))
	ck.MaxAge = -1
	http.SetCookie(w, ck)
}

func (s *Sessions) revoke(sess Session) {
	now := s.opts.Now()
	if !now.Before(sess.Expires) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.revoked) >= s.opts.MaxRevoked {
		for id, exp := range s.revoked {
			if !now.Before(exp) {
				delete(s.revoked, id)
			}
		}
	}
	if len(s.revoked) >= s.opts.MaxRevoked {
		// Still full of live entries: end every session issued so far
		// rather than forget a revocation.
		s.notBefore = now.Truncate(time.Second).Add(time.Second)
		clear(s.revoked)
		s.opts.Logger.Warn().Int("revoked", s.opts.MaxRevoked).
			Msg("session revocation list is full: every browser session issued until now is ended; users log in again")
		return
	}
	s.revoked[sess.ID] = sess.Expires
}

func (s *Sessions) cookie(r *http.Request, value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name:     SessionCookie,
		Value:    value,
		Path:     "/",
		Expires:  expires,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   s.opts.SecureOrigin || r.TLS != nil || s.opts.IsHTTPS != nil && s.opts.IsHTTPS(r),
	}
}
