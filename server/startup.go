package server

import (
	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

// checkServerToken compares the raw token the deployment hands the server
// (COMFYUI_AUTH_TOKEN / QWEN_API_TOKEN) with the loaded hashes once at start.
// A desynchronised token and hash caused most 401s in the deployment this
// gateway drops into, so a mismatch is an error saying which mix-up it is,
// with the same diagnosis `comfyui-auth token check` prints.
func (s *Server) checkServerToken() {
	if s.cfg.ServerToken == "" {
		return
	}
	snap := s.store.Snapshot()
	name := s.cfg.ServerTokenVar
	if name == "" {
		name = "COMFYUI_AUTH_TOKEN"
	}
	if snap == nil {
		s.logger.Warn().Str("variable", name).Msg("cannot check the server token: no valid credential is loaded yet")
		return
	}
	d := hashstore.Diagnose(s.cfg.ServerToken, snap.Creds, s.cfg.AcceptHashToken)
	d.Source = snap.Source
	ev := s.logger.Info()
	if !d.OK() {
		ev = s.logger.Error()
	}
	ev.Str("variable", name).Str("diagnosis", d.Kind.String()).
		Str("token_fingerprint", d.ValueFingerprint).Strs("hash_fingerprints", snap.Fingerprints).
		Str("hash_source", snap.Source).Msg(name + ": " + d.Sentence())
}
