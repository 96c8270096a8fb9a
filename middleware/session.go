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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// SessionCookie is the gateway's browser session cookie. The proxy strips it
// before ComfyUI sees a request.
const SessionCookie = "comfyui_auth_session"

// sessionVersion is the first payload byte. A new layout gets a new version,
// so an old cookie is refused instead of misread. Version 1 was bound to a
// process-local counter; version 2 to the credential itself and an epoch.
const sessionVersion = 2

// payload layout: version(1) flags(1) id(16) issued(8) expires(8)
// binding(16) epoch(8).
const sessionPayloadLen = 1 + 1 + 16 + 8 + 8 + 16 + 8

const flagGuest = 1

// maxCookieLen bounds the work done on a cookie before its MAC is checked.
const maxCookieLen = 256

// Default bounds of the revocation lists; see SessionOptions.
const (
	DefaultMaxRevoked      = 10_000
	DefaultMaxGuestRevoked = 10_000
)

// Session is what a session cookie carries. It holds no secret: the
// cookie is signed, not encrypted, and the payload says only who issued it
// when, for how long, under which credential and in which epoch.
type Session struct {
	// ID is random; logout revokes it until Expires.
	ID      [16]byte
	Issued  time.Time
	Expires time.Time
	// Binding is a keyed digest of the credential the session was issued
	// under (SessionCodec.BindLine for a user, BindSet for a guest). The
	// session is valid only while that credential is loaded, so it survives
	// restarts and reloads that keep it, and never works for another
	// credential.
	Binding [16]byte
	// Epoch is the revocation epoch the session was issued in. Moving to a
	// new epoch ends every session of the old one at once: that is how a
	// full revocation list stays bounded without forgetting a logout, and
	// how a gateway that cannot keep its logouts across a restart ends the
	// sessions they concerned.
	Epoch uint64
	// Guest marks a guest-mode session, which the guest policy restricts.
	Guest bool
	// User is who the session is for, filled by Sessions.Current from the
	// credential line the binding names (not part of the cookie): the
	// line's user, UserDefault for a bare line, UserGuest for a guest.
	User string
}

// SessionCodec signs and checks session cookies with HMAC-SHA256.
type SessionCodec struct {
	key     []byte
	bindKey []byte
	macs    sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key
}

// NewSessionCodec derives the MAC key and the binding key from secret, so a
// secret shared with something else (SECRET_KEY is a common name) never
// keys our MAC directly, and the two uses never share a key.
func NewSessionCodec(secret []byte) *SessionCodec {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	return &SessionCodec{
		key:     derive("comfyui-auth session cookie v1"),
		bindKey: derive("comfyui-auth session credential binding v2"),
	}
}

// BindLine is the binding of a user session issued for the credential line
// hash (the bcrypt hash the password matched). It is keyed, so a cookie
// says nothing about the hash to whoever holds it.
func (c *SessionCodec) BindLine(hash string) [16]byte {
	return c.bind('L', []string{hash})
}

// BindSet is the binding of a guest session: all the hash lines loaded, so
// any change to the credentials ends guest sessions.
func (c *SessionCodec) BindSet(hashes []string) [16]byte {
	return c.bind('S', hashes)
}

// bind hashes a domain byte and length-prefixed parts, so no two inputs
// share a digest.
func (c *SessionCodec) bind(domain byte, parts []string) [16]byte {
	m := hmac.New(sha256.New, c.bindKey)
	m.Write([]byte{domain})
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	var out [16]byte
	copy(out[:], m.Sum(nil))
	return out
}

// NewSession returns a session with a fresh random ID.
func NewSession(now time.Time, lifetime time.Duration, binding [16]byte, epoch uint64, guest bool) Session {
	var s Session
	if _, err := rand.Read(s.ID[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	s.Issued = now.Truncate(time.Second)
	s.Expires = now.Add(lifetime).Truncate(time.Second)
	s.Binding = binding
	s.Epoch = epoch
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
	copy(p[34:50], s.Binding[:])
	binary.BigEndian.PutUint64(p[50:58], s.Epoch)
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
// malformed, tampered with, signed with another key, or of an older layout.
// Callers treat it as no cookie, so the reasons are not told apart.
var ErrBadSession = errors.New("not a valid session cookie")

// Decode checks the MAC in constant time, then the layout. It does not check
// expiry, binding, epoch or revocation; Sessions does, against the clock,
// the credentials loaded and its revocation lists.
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
	copy(s.Binding[:], p[34:50])
	s.Epoch = binary.BigEndian.Uint64(p[50:58])
	return s, nil
}

// RevocationState is what must outlive the process for logouts to survive a
// restart: the users' epoch and the IDs of revoked user sessions. Guests'
// revocations are never part of it (see Sessions).
type RevocationState struct {
	// Epoch is stamped on every user session issued; only sessions of this
	// epoch are valid.
	Epoch uint64
	// Revoked maps a revoked session's ID to its expiry, after which the
	// entry is useless and dropped.
	Revoked map[[16]byte]time.Time
}

// NewRevocationState returns an empty state with a fresh random epoch: it
// ends every user session issued under any earlier state.
func NewRevocationState() RevocationState {
	return RevocationState{Epoch: randomEpoch(), Revoked: map[[16]byte]time.Time{}}
}

func randomEpoch() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return binary.BigEndian.Uint64(b[:])
}

// SessionOptions configures Sessions.
type SessionOptions struct {
	Codec    *SessionCodec
	Lifetime time.Duration
	// Credentials returns the hash lines in force, the user of each (""
	// for a bare line; users may be nil when every line is bare) and a
	// generation that changes whenever they may have changed (it keys a
	// cache of their bindings). No hashes means nothing is loaded: no
	// session is valid.
	Credentials func() (gen uint64, hashes, users []string)
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
	// MaxRevoked bounds the users' revocation list; 0 means
	// DefaultMaxRevoked. MaxGuestRevoked bounds the guests' list; 0 means
	// DefaultMaxGuestRevoked.
	MaxRevoked      int
	MaxGuestRevoked int
	// State is the users' revocation state kept by an earlier run. Nil
	// starts a fresh one, which ends every user session issued before.
	State *RevocationState
	// Persist, when set, is called after each change to the users'
	// revocations with a copy of them (expired entries left out), and must
	// return once they are durable. Logout returns after it.
	Persist func(RevocationState) error
	Logger  zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sessions issues, recognises and revokes browser sessions. It is the
// Authenticator of the session cookie.
//
// Users and guests are kept apart. Users' revocations are bounded by
// MaxRevoked, handed to Persist, and only a valid user session (that is, a
// password login) can add one. Guests' revocations live in memory only,
// bounded by MaxGuestRevoked, under a guest epoch drawn at random at every
// start: a restart ends every guest session, so none of their logouts is
// forgotten, and guests churning through logins can fill only their own
// list. When a list is full of unexpired entries, its epoch moves on: every
// session of that kind issued until then ends (users or guests, never both),
// and no revoked session ever comes back.
type Sessions struct {
	opts SessionOptions

	bound atomic.Pointer[credentialBindings]

	mu          sync.Mutex
	users       RevocationState
	guestEpoch  uint64
	guestsEnded map[[16]byte]time.Time // guest session ID -> its expiry
	version     uint64                 // bumped at each change to users

	persistMu sync.Mutex // one Persist at a time, in version order
	persisted uint64     // newest version Persist accepted
}

// credentialBindings caches the bindings of one generation of credentials.
type credentialBindings struct {
	gen   uint64
	lines [][16]byte
	users []string // the user of each line: a name or UserDefault
	set   [16]byte
}

var _ Authenticator = (*Sessions)(nil)

// NewSessions returns a Sessions.
func NewSessions(opts SessionOptions) *Sessions {
	if opts.MaxRevoked <= 0 {
		opts.MaxRevoked = DefaultMaxRevoked
	}
	if opts.MaxGuestRevoked <= 0 {
		opts.MaxGuestRevoked = DefaultMaxGuestRevoked
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.GuestEnabled == nil {
		opts.GuestEnabled = func() bool { return false }
	}
	s := &Sessions{opts: opts, guestEpoch: randomEpoch(), guestsEnded: map[[16]byte]time.Time{}}
	if opts.State != nil {
		s.users = RevocationState{Epoch: opts.State.Epoch, Revoked: make(map[[16]byte]time.Time, len(opts.State.Revoked))}
		for id, exp := range opts.State.Revoked {
			s.users.Revoked[id] = exp
		}
	} else {
		s.users = NewRevocationState()
	}
	return s
}

// bindings returns the bindings of the credentials in force, nil when none
// is loaded.
func (s *Sessions) bindings() *credentialBindings {
	gen, hashes, users := s.opts.Credentials()
	if len(hashes) == 0 {
		return nil
	}
	if b := s.bound.Load(); b != nil && b.gen == gen {
		return b
	}
	b := &credentialBindings{gen: gen, lines: make([][16]byte, len(hashes)), users: make([]string, len(hashes)),
		set: s.opts.Codec.BindSet(hashes)}
	for i, h := range hashes {
		b.lines[i] = s.opts.Codec.BindLine(h)
		b.users[i] = UserDefault
		if i < len(users) && users[i] != "" {
			b.users[i] = users[i]
		}
	}
	s.bound.Store(b)
	return b
}

// Current returns the request's valid session. Tampered, foreign, expired,
// revoked, old-epoch cookies and cookies of a credential no longer loaded
// all count as no session.
func (s *Sessions) Current(r *http.Request) (Session, bool) {
	sess, _, _, ok := s.current(r)
	return sess, ok
}

// current is Current that also says which credential line (1-based, of
// generation gen) a user session is bound to; line is 0 for a guest.
func (s *Sessions) current(r *http.Request) (sess Session, gen uint64, line int, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return Session{}, 0, 0, false
	}
	sess, err = s.opts.Codec.Decode(c.Value)
	if err != nil {
		return Session{}, 0, 0, false
	}
	now := s.opts.Now()
	if !now.Before(sess.Expires) || sess.Issued.After(now.Add(time.Minute)) {
		return Session{}, 0, 0, false
	}
	b := s.bindings()
	if b == nil {
		return Session{}, 0, 0, false
	}
	if sess.Guest {
		// The binding was signed by us, so comparing it leaks nothing.
		if sess.Binding != b.set || !s.opts.GuestEnabled() {
			return Session{}, 0, 0, false
		}
		sess.User = UserGuest
	} else {
		// The line decides the user, so removing a user's lines ends
		// that user's sessions, and only theirs.
		i := slices.Index(b.lines, sess.Binding)
		if i < 0 {
			return Session{}, 0, 0, false
		}
		sess.User = b.users[i]
		line = i + 1
	}
	s.mu.Lock()
	var valid bool
	if sess.Guest {
		_, revoked := s.guestsEnded[sess.ID]
		valid = sess.Epoch == s.guestEpoch && !revoked
	} else {
		_, revoked := s.users.Revoked[sess.ID]
		valid = sess.Epoch == s.users.Epoch && !revoked
	}
	s.mu.Unlock()
	if !valid {
		return Session{}, 0, 0, false
	}
	return sess, b.gen, line, true
}

// Authenticate implements Authenticator: a request without a valid
// session is not authenticated, never refused, so it falls through to the
// login page or the next credential.
func (s *Sessions) Authenticate(_ http.ResponseWriter, r *http.Request) (User, bool, error) {
	sess, gen, line, ok := s.current(r)
	if !ok {
		return User{}, false, nil
	}
	if sess.Guest {
		return User{Name: sess.User, Method: MethodGuest}, true, nil
	}
	return User{Name: sess.User, Method: MethodSession, Generation: gen, Line: line}, true, nil
}

// IssueUser starts a user session bound to hash, the credential line the
// password was checked against, and sets its cookie on w.
func (s *Sessions) IssueUser(w http.ResponseWriter, r *http.Request, hash string) Session {
	s.mu.Lock()
	epoch := s.users.Epoch
	s.mu.Unlock()
	sess := NewSession(s.opts.Now(), s.opts.Lifetime, s.opts.Codec.BindLine(hash), epoch, false)
	http.SetCookie(w, s.cookie(r, s.opts.Codec.Encode(sess), sess.Expires))
	return sess
}

// IssueGuest starts a guest session bound to the credentials loaded now
// and sets its cookie on w. It issues nothing, and returns false, when no
// credential is loaded.
func (s *Sessions) IssueGuest(w http.ResponseWriter, r *http.Request) (Session, bool) {
	b := s.bindings()
	if b == nil {
		return Session{}, false
	}
	s.mu.Lock()
	epoch := s.guestEpoch
	s.mu.Unlock()
	sess := NewSession(s.opts.Now(), s.opts.Lifetime, b.set, epoch, true)
	http.SetCookie(w, s.cookie(r, s.opts.Codec.Encode(sess), sess.Expires))
	return sess, true
}

// End revokes the request's session, if it is a valid one, until its own
// expiry (a copied cookie must not outlive logout), and clears the cookie on
// w. A user's logout returns once Persist has kept it; when Persist fails,
// the revocation holds in memory and the error is returned (and logged).
func (s *Sessions) End(w http.ResponseWriter, r *http.Request) error {
	ck := s.cookie(r, "", time.Unix(0, 0))
	ck.MaxAge = -1
	http.SetCookie(w, ck)
	// Only a valid session is revoked: a cookie that is already refused
	// needs no entry, and this keeps anyone without a valid session (and
	// guests, for users' list) from adding any.
	sess, ok := s.Current(r)
	if !ok {
		return nil
	}
	return s.revoke(sess)
}

func (s *Sessions) revoke(sess Session) error {
	now := s.opts.Now()
	s.mu.Lock()
	if sess.Guest {
		s.guestEpoch = addRevocation(s.guestsEnded, sess, s.guestEpoch, s.opts.MaxGuestRevoked, now, func() {
			s.opts.Logger.Warn().Int("revoked", s.opts.MaxGuestRevoked).
				Msg("guest revocation list is full: every guest session issued until now is ended (users' sessions are not affected); guests continue as guest again")
		})
		s.mu.Unlock()
		return nil
	}
	s.users.Epoch = addRevocation(s.users.Revoked, sess, s.users.Epoch, s.opts.MaxRevoked, now, func() {
		s.opts.Logger.Warn().Int("revoked", s.opts.MaxRevoked).
			Msg("user revocation list is full: every user session issued until now is ended; users log in again")
	})
	s.version++
	v := s.version
	s.mu.Unlock()
	return s.persist(v)
}

// addRevocation records sess in list, bounded by bound, and returns the epoch
// in force afterwards. Expired entries go first; when the list is still full
// the epoch moves on and the list is cleared: every session of the old epoch
// ends, so forgetting the entries revives nothing.
func addRevocation(list map[[16]byte]time.Time, sess Session, epoch uint64, bound int, now time.Time, full func()) uint64 {
	if len(list) >= bound {
		for id, exp := range list {
			if !now.Before(exp) {
				delete(list, id)
			}
		}
	}
	if len(list) >= bound {
		clear(list)
		full()
		return randomEpoch()
	}
	list[sess.ID] = sess.Expires
	return epoch
}

// persist hands Persist the users' state as of version v or newer. Callers
// that arrive while a write is running find their change written by the
// next one, so a burst of logouts costs few writes.
func (s *Sessions) persist(v uint64) error {
	if s.opts.Persist == nil {
		return nil
	}
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	if s.persisted >= v {
		return nil
	}
	now := s.opts.Now()
	s.mu.Lock()
	cur := s.version
	st := RevocationState{Epoch: s.users.Epoch, Revoked: make(map[[16]byte]time.Time, len(s.users.Revoked))}
	for id, exp := range s.users.Revoked {
		if now.Before(exp) {
			st.Revoked[id] = exp
		}
	}
	s.mu.Unlock()
	if err := s.opts.Persist(st); err != nil {
		s.opts.Logger.Error().Err(err).
			Msg("cannot keep a logout on disk: it holds until the gateway restarts; fix the state directory, the next logout or shutdown writes the list again")
		return err
	}
	s.persisted = cur
	return nil
}

// Flush hands Persist the users' state if a change has not reached it (a
// failed write); the gateway calls it at shutdown.
func (s *Sessions) Flush() error {
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	return s.persist(v)
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
