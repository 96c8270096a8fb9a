package server

import (
	"strings"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"golang.org/x/crypto/bcrypt"
)

// checkServerToken compares the raw token the deployment hands the server
// (COMFYUI_AUTH_TOKEN / QWEN_API_TOKEN) with the loaded hashes once at start.
// A desynchronised token and hash caused most 401s in the deployment this
// gateway drops into, so a mismatch is an error naming both fingerprints.
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
	tok := s.cfg.ServerToken
	if _, _, ok := s.store.MatchHash(tok); ok {
		s.logger.Info().Str("variable", name).Msg(name + " holds the bcrypt hash itself, not the raw token; clients may send it as a Bearer token while hash tokens are accepted")
		return
	}
	if len(tok) <= hashstore.MaxTokenBytes {
		for i, h := range snap.Creds.Hashes {
			if bcrypt.CompareHashAndPassword([]byte(h), []byte(tok)) == nil {
				s.logger.Info().Str("variable", name).Int("hash_line", i+1).Msg(name + " matches the hash file")
				return
			}
		}
	}
	hint := "regenerate the pair with `comfyui-auth token generate`, or fix whichever of the two is stale"
	if strings.HasPrefix(tok, "$2") || strings.HasPrefix(tok, "2a") || strings.HasPrefix(tok, "2b") || strings.HasPrefix(tok, "2y") {
		hint = "it looks like a bcrypt hash, but a different one (or one cut by Compose's `$` interpolation: escape `$` as `$$`)"
	}
	s.logger.Error().Str("variable", name).Str("token_fingerprint", hashstore.Fingerprint(tok)).
		Strs("hash_fingerprints", snap.Fingerprints).Str("hash_source", snap.Source).
		Msg(name + " does not match the hash file: clients using that token will get 401; " + hint)
}
