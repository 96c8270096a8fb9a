package middleware

import (
	"net/http"
)

// guestPOSTs are the only writes a guest may make: queueing a prompt and
// uploading its input image (ComfyUI-Login's list, plus the /api/ twins the
// current frontend uses).
var guestPOSTs = map[string]bool{
	"/prompt": true, "/api/prompt": true,
	"/upload/image": true, "/api/upload/image": true,
}

// GuestPolicy limits guest sessions, and only them: GET and HEAD pass (the
// websocket included, so a guest sees progress), POST passes to the paths in
// guestPOSTs, and anything else is answered 200 `{}` without reaching
// ComfyUI, as ComfyUI-Login does, so the frontend's settings saves and the
// like fail quietly instead of breaking the page.
func GuestPolicy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := InfoFrom(r)
		if info.Method != MethodGuest {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
		case r.Method == http.MethodPost && guestPOSTs[r.URL.EscapedPath()]:
		default:
			info.Reason = "guest: " + r.Method + " not allowed here, answered {}"
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("{}"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
