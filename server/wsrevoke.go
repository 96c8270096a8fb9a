package server

import (
	"context"
	"net/http"
	"sync"

	"github.com/rs/zerolog"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// wsAdmission is what let a proxied websocket in: the user and the hash
// line their token matched or their session is bound to. The websocket
// lives as long as that line stays loaded.
type wsAdmission struct {
	user   string // the line's name, "" for a bare line
	hash   string
	shown  string // who the log names: Info.User
	cancel context.CancelFunc
}

// wsRegistry holds the open websockets a credential line admitted; guest
// and auth-disabled websockets are not in it.
type wsRegistry struct {
	mu   sync.Mutex
	open map[*wsAdmission]struct{}
}

// admission resolves the line that admitted r in the credentials loaded
// now. ok is false when r's generation is no longer loaded (a reload
// landed between the check and the upgrade): the line cannot be named
// then, so the caller must not keep the websocket open on it.
func admission(snap *hashstore.Snapshot, info *middleware.Info) (a *wsAdmission, ok bool) {
	if snap == nil || info.Generation != snap.Generation || info.Line < 1 || info.Line > len(snap.Creds.Hashes) {
		return nil, false
	}
	i := info.Line - 1
	user := ""
	if i < len(snap.Creds.Users) {
		user = snap.Creds.Users[i]
	}
	return &wsAdmission{user: user, hash: snap.Creds.Hashes[i], shown: info.User}, true
}

// holds reports whether snap still has a's line: the same user and the
// same hash, wherever it now sits in the file.
func (a *wsAdmission) holds(snap *hashstore.Snapshot) bool {
	if snap == nil {
		return false
	}
	for i, h := range snap.Creds.Hashes {
		user := ""
		if i < len(snap.Creds.Users) {
			user = snap.Creds.Users[i]
		}
		if user == a.user && h == a.hash {
			return true
		}
	}
	return false
}

func (r *wsRegistry) add(a *wsAdmission) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[*wsAdmission]struct{}{}
	}
	r.open[a] = struct{}{}
}

func (r *wsRegistry) remove(a *wsAdmission) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, a)
}

// sweep closes every websocket whose admitting line snap no longer holds,
// and returns how many it closed.
func (r *wsRegistry) sweep(snap *hashstore.Snapshot, logger zerolog.Logger) int {
	r.mu.Lock()
	var gone []*wsAdmission
	for a := range r.open {
		if !a.holds(snap) {
			gone = append(gone, a)
			delete(r.open, a)
		}
	}
	r.mu.Unlock()
	for _, a := range gone {
		a.cancel()
		gen := uint64(0)
		if snap != nil {
			gen = snap.Generation
		}
		logger.Info().Str("user", a.shown).Uint64("generation", gen).
			Msg("websocket closed: the credential line that admitted it is no longer loaded")
	}
	return len(gone)
}

// closeRevokedWebsockets sweeps the open websockets at every successful
// reload of the credential file until ctx is done. A refused (kept-last-
// good) file is no reload, so it closes nothing.
func (s *Server) closeRevokedWebsockets(ctx context.Context) {
	// The next channel is taken before the snapshot is read, so a reload
	// landing during a sweep wakes the loop again.
	changed := s.store.Changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			changed = s.store.Changed()
			s.wsAdmitted.sweep(s.store.Snapshot(), s.logger)
		}
	}
}

// admitWebsocket registers r's websocket, closed by cancel, with the line
// that admitted it. It returns a release func, or false when the line is
// already gone (the caller must not proxy then). Guest and auth-disabled
// websockets are not tied to a line and are always let through.
func (s *Server) admitWebsocket(r *http.Request, cancel context.CancelFunc) (release func(), ok bool) {
	info := middleware.InfoFrom(r)
	if s.store == nil || (info.Method != middleware.MethodRawToken && info.Method != middleware.MethodHashToken &&
		info.Method != middleware.MethodSession) {
		return func() {}, true
	}
	a, ok := admission(s.store.Snapshot(), info)
	if !ok {
		return nil, false
	}
	a.cancel = cancel
	s.wsAdmitted.add(a)
	// Registered first, checked second: a reload either finds a in the
	// registry or is seen here.
	if !a.holds(s.store.Snapshot()) {
		s.wsAdmitted.remove(a)
		return nil, false
	}
	return func() { s.wsAdmitted.remove(a) }, true
}
