package middleware

import (
	"net/http"
	"strings"
)

// IsPublic reports whether a request may pass without credentials.
//
// ComfyUI-Login exempts any method on any path ending in .js/.css/.css.map/
// .ico, which lets `POST /userdata/x.js` through unauthenticated. Here only
// GET and HEAD are exempt, and never under /api/, /userdata or /internal,
// where file names are user data rather than static assets. Paths are
// matched on the raw (escaped) form so `%2e%2e` or `%2F` tricks cannot make a
// protected path look like an asset; ComfyUI resolves the same raw path.
func IsPublic(r *http.Request, extra map[string]bool) bool {
	path := r.URL.EscapedPath()
	switch path {
	case "/healthz", "/readyz":
		return true
	}
	if extra[path] {
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if strings.Contains(path, "..") || strings.Contains(path, "//") || strings.Contains(path, "%") {
		return false
	}
	lower := strings.ToLower(path)
	for _, prefix := range []string{"/api/", "/userdata", "/internal"} {
		if strings.HasPrefix(lower, prefix) {
			return false
		}
	}
	for _, ext := range []string{".js", ".css", ".css.map", ".ico"} {
		if strings.HasSuffix(path, ext) {
			return true
		}
	}
	return false
}
