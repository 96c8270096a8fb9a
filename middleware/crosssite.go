package middleware

import (
	"net/http"
	"net/url"
)

// IsCrossSite reports whether the browser that sent r says another site made
// it: `Sec-Fetch-Site: cross-site` (an <img>, a form or a fetch from a
// foreign page), or an Origin header (`null` included) that is not the
// gateway's own. Clients other than browsers send neither, so they are
// same-site; a browser too old to send Sec-Fetch-Site is same-site for an
// <img>, which carries no Origin.
//
// publicURL, when set, is the gateway's origin; otherwise it is taken from
// Host, as CSRF does.
func IsCrossSite(r *http.Request, publicURL *url.URL) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return true
	}
	origin := r.Header.Get("Origin")
	return origin != "" && !sameOrigin(origin, r.Host, publicURL)
}
