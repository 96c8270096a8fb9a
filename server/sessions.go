package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// Guest logins per client: at most guestLoginBurst within guestLoginWindow;
// then the client waits guestLoginLock, doubled on each repeat up to
// guestLoginMaxLock. A person needs one guest login per visit; the limit
// only stops a script churning sessions.
const (
	guestLoginBurst   = 10
	guestLoginWindow  = time.Minute
	guestLoginLock    = time.Minute
	guestLoginMaxLock = 15 * time.Minute
)

// newSessions builds the browser sessions: the signing key, and the users'
// revocations kept in the state directory when there is one.
func (s *Server) newSessions() (*middleware.Sessions, error) {
	cfg := s.cfg
	var sd *stateDir
	if cfg.StateDir != "" {
		var err error
		if sd, err = openStateDir(cfg.StateDir, s.logger); err != nil {
			return nil, err
		}
	}
	key, source, err := sessionKey(cfg, sd)
	if err != nil {
		return nil, err
	}
	if source != "" {
		s.logger.Info().Str("source", source).Msg("session signing key loaded")
	}
	s.queueKey, s.queueKeyKept = queueTagKey(key), source != ""
	opts := middleware.SessionOptions{
		Codec:           middleware.NewSessionCodec(key),
		Lifetime:        cfg.SessionExpire,
		Credentials:     s.credentials,
		GuestEnabled:    s.guestEnabled,
		SecureOrigin:    s.public != nil && s.public.Scheme == "https",
		IsHTTPS:         s.isHTTPS,
		MaxRevoked:      cfg.maxRevoked,
		MaxGuestRevoked: cfg.maxGuestRevoked,
		Logger:          s.logger.With().Str("component", "sessions").Logger(),
	}
	if sd == nil {
		if source == "" {
			s.logger.Warn().Msg("no --state-dir (COMFYUI_AUTH_STATE_DIR), SECRET_KEY or --secret-key-file: sessions are signed with a random key for this run only; every browser session ends when the gateway restarts (browsers log in again)")
		} else {
			s.logger.Warn().Msg("no --state-dir (COMFYUI_AUTH_STATE_DIR): logouts cannot be kept across a restart, so every browser session ends when the gateway restarts (browsers log in again); set a state directory to keep sessions")
		}
		return middleware.NewSessions(opts), nil
	}
	bound := cfg.maxRevoked
	if bound <= 0 {
		bound = middleware.DefaultMaxRevoked
	}
	st, problem, err := sd.loadRevocations(time.Now(), bound)
	if err != nil {
		return nil, err
	}
	if problem != "" {
		s.logger.Error().Str("state_dir", sd.dir).
			Msg(problem + ": every user session issued before this start is ended (users log in again) rather than risk letting a logged-out cookie back in; the file is written afresh")
	}
	// Written at once: this drops expired entries, keeps a new epoch, and
	// proves the directory writable before any logout depends on it.
	if err := sd.saveRevocations(st); err != nil {
		return nil, err
	}
	s.logger.Info().Str("state_dir", sd.dir).Int("revoked", len(st.Revoked)).
		Msg("session state kept in the state directory: user sessions survive restarts while their credential line stays loaded, and so do logouts; guest sessions end at each restart")
	opts.State = &st
	opts.Persist = sd.saveRevocations
	return middleware.NewSessions(opts), nil
}

// credentials is SessionOptions.Credentials: the hash lines in force and
// their users.
func (s *Server) credentials() (uint64, []string, []string) {
	if snap := s.store.Snapshot(); snap != nil {
		return snap.Generation, snap.Creds.Hashes, snap.Creds.Users
	}
	return 0, nil, nil
}

// matchedHash returns the hash line a Match was found on, provided the
// credentials in force are still those it was checked against.
func (s *Server) matchedHash(res hashstore.Result) (string, bool) {
	snap := s.store.Snapshot()
	if res.Outcome != hashstore.Match || snap == nil || snap.Generation != res.Generation ||
		res.Line < 1 || res.Line > len(snap.Creds.Hashes) {
		return "", false
	}
	return snap.Creds.Hashes[res.Line-1], true
}

// handleGuestLogin starts a guest session, at most guestLoginBurst per
// client within guestLoginWindow; beyond that the client gets the login
// page with 429 and Retry-After.
func (s *Server) handleGuestLogin(w http.ResponseWriter, r *http.Request, next string) {
	info := middleware.InfoFrom(r)
	if !s.guestEnabled() {
		info.Reason = "login: guest mode is off"
		http.Redirect(w, r, loginPath, http.StatusFound)
		return
	}
	client := s.client(r)
	// Taken before the session is issued, in one step with the check, so
	// that concurrent presses cannot all pass the check before any counts.
	// A press that then issues nothing (no credential loaded) still counts.
	if d, admitted := s.guestLimit.Admit(client.SameSiteKey()); !admitted {
		secs := max(1, int((d+time.Second-1)/time.Second))
		info.Reason = "login: too many guest logins from this client"
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		s.refuseLogin(w, r, loginPage{LockedSeconds: secs, Guest: true, Next: next, Code: middleware.CodeGuestLoginLimited}, http.StatusTooManyRequests)
		return
	}
	sess, ok := s.sessions.IssueGuest(w, r)
	if !ok {
		info.Reason = "login: no credential configured"
		http.Redirect(w, r, loginPath, http.StatusFound)
		return
	}
	s.logger.Info().Str("client", client.Addr.String()).Str("session", hex.EncodeToString(sess.ID[:4])).Msg("guest session started")
	http.Redirect(w, r, orRoot(next), http.StatusFound)
}

// sessionKey returns the key that signs session cookies: SECRET_KEY, else
// the key file, else the key kept in the state directory (both created with
// a random key when missing), else a random key for this run only.
func sessionKey(cfg Config, sd *stateDir) (key []byte, source string, err error) {
	if cfg.SecretKey != "" {
		if len(cfg.SecretKey) < 16 {
			return nil, "", fmt.Errorf("SECRET_KEY has %d characters; use at least 32 random ones, for example from `head -c 32 /dev/urandom | base64`", len(cfg.SecretKey))
		}
		return []byte(cfg.SecretKey), "SECRET_KEY", nil
	}
	if cfg.SecretKeyFile != "" {
		return keyFile(cfg.SecretKeyFile, "unset --secret-key-file")
	}
	if sd != nil {
		return sd.sessionKey()
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, "", fmt.Errorf("no randomness for a session key: %w", err)
	}
	return fresh, "", nil
}
