package middleware

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// CSRF refuses cross-site requests that ride on a browser session cookie.
//
// It applies only to requests Auth let in with a session (full or guest):
// a token is not sent by a browser on its own, so token requests are not
// subject to it. For those, every method other than GET/HEAD/OPTIONS, and
// every websocket upgrade (a GET that browsers send cross-site with
// cookies), must come with `Sec-Fetch-Site: same-origin` or an Origin equal
// to the gateway's public origin; otherwise the answer is 403 with a JSON
// reason.
//
// publicURL, when set, is the one accepted origin. Otherwise the origin is
// taken from the request's Host, with either scheme: an attacker page
// cannot choose the Host a browser sends, and telling http from https
// behind a TLS proxy that sets no X-Forwarded-Proto would break real
// deployments for no gain.
func CSRF(publicURL *url.URL) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := InfoFrom(r)
			if info.Method != MethodSession && info.Method != MethodGuest {
				next.ServeHTTP(w, r)
				return
			}
			safe := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
			if safe && !IsWebSocket(r) {
				next.ServeHTTP(w, r)
				return
			}
			if r.Header.Get("Sec-Fetch-Site") == "same-origin" {
				next.ServeHTTP(w, r)
				return
			}
			origin := r.Header.Get("Origin")
			if origin != "" && sameOrigin(origin, r.Host, publicURL) {
				next.ServeHTTP(w, r)
				return
			}
			reason := "cross-site request refused: a request made with the session cookie must come from the gateway's own pages (Origin " +
				quoteOrNone(origin) + " is not " + expectedOrigin(r, publicURL) + ")"
			if publicURL == nil {
				reason += "; if the gateway sits behind a proxy that rewrites Host, set --public-url"
			}
			info.Reason = "csrf: origin " + quoteOrNone(origin)
			Refuse(w, r, http.StatusForbidden, CodeCrossOrigin, "Forbidden.", reason)
		})
	}
}

func quoteOrNone(s string) string {
	if s == "" {
		return "missing"
	}
	if len(s) > 100 {
		s = s[:100]
	}
	return "\"" + s + "\""
}

func expectedOrigin(r *http.Request, publicURL *url.URL) string {
	if publicURL != nil {
		return publicURL.Scheme + "://" + publicURL.Host
	}
	return "http(s)://" + r.Host
}

// sameOrigin compares an Origin header with the public origin, filling in
// default ports so `http://h` and `http://h:80` agree.
func sameOrigin(origin, host string, publicURL *url.URL) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if publicURL != nil {
		return strings.EqualFold(u.Scheme, publicURL.Scheme) &&
			strings.EqualFold(hostWithPort(u.Host, u.Scheme), hostWithPort(publicURL.Host, publicURL.Scheme))
	}
	return host != "" && strings.EqualFold(hostWithPort(u.Host, u.Scheme), hostWithPort(host, u.Scheme))
}

func hostWithPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}
