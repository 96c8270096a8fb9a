package middleware

import (
	"net/http"
)

// IsPublic reports whether a request may pass Auth without credentials: only
// the exact raw paths in extra (the gateway's login and logout pages), for any
// method, because those handlers are the gateway's own and never proxy.
//
// Nothing of ComfyUI is exempt. ComfyUI-Login exempts every path ending in
// .js/.css/.css.map/.ico, for any method, because its login page was served by
// ComfyUI and needed ComfyUI's assets. The gateway's login page uses only its
// own /comfyui-auth/* files (routed before Auth), so no ComfyUI asset is
// needed before login, and a suffix rule would open ComfyUI's dynamic routes
// whose last segment is client-chosen: GET /settings/x.js (a setting's value),
// /object_info/x.css, /history/x.ico, /view_metadata/x.js. A browser that is
// logged in sends its cookie with every asset request, so nothing else needs
// an exemption either.
//
// /healthz and /readyz are not here: the router answers them itself for every
// method (GET and HEAD, 405 for the rest), so they never reach Auth or the
// proxy. Paths are matched exactly on the raw (escaped) form: ComfyUI
// decodes escapes before routing, but a spelling such as /log%69n is simply
// not public here, so `%2e%2e` or `%2F` cannot make another path look like a
// listed one.
func IsPublic(r *http.Request, extra map[string]bool) bool {
	return extra[r.URL.EscapedPath()]
}
