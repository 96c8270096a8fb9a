package middleware

import (
	"net/url"
	"strings"
)

// SafeNextPath reports whether p may be used as a post-login redirect: a
// path on this origin only. It refuses `//host` and `/\host` (browsers read
// both as another host), any scheme, backslashes and control characters.
func SafeNextPath(p string) bool {
	if p == "" || len(p) > 2048 || p[0] != '/' || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return false
		}
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil
}
