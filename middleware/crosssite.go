package middleware

import (
	"net/http"
	"net/url"
)

// IsCrossSite reports whether the browser that sent r says another site made
// it: `Sec-Fetch-Site: cross-site` (an <img>, a form or a fetch from a
// foreign page) or, from a browser too old to send Sec-Fetch-Site, an
// Origin header naming another origin. Sec-Fetch-Site wins when present:
// browsers send `Origin: null` for the gateway's own login form, whose page
// has `Referrer-Policy: no-referrer`, so `null` alone proves nothing.
// Clients other than browsers send neither, so they are same-site; an old
// browser's <img>, which carries no Origin, is same-site too.
//
// publicURL, when set, is the gateway's origin; otherwise it is taken from
// Host, as CSRF does.
func IsCrossSite(r *http.Request, publicURL *url.URL) bool {
	if site := firstValue(r.Header, "Sec-Fetch-Site"); site != "" {
		return site == "cross-site"
	}
	origin := firstValue(r.Header, "Origin")
	return origin != "" && origin != "null" && !sameOrigin(origin, r.Host, publicURL)
}
