package middleware

import "net/http"

// ResolveClient records, for the access log, the client address as the
// throttle sees it: the first untrusted X-Forwarded-For entry when the
// connection comes from a trusted proxy. Without trusted proxies it does
// nothing, so the log shows the connection's peer.
func ResolveClient(trusted TrustedProxies) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if len(trusted) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if a := trusted.ClientAddr(r); a.IsValid() {
				InfoFrom(r).Client = a.String()
			}
			next.ServeHTTP(w, r)
		})
	}
}
