package fakecomfy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// errOriginMismatch is the refusal ComfyUI answers with a bare 403.
var errOriginMismatch = errors.New("request with non matching host and origin")

// checkOrigin is a transcription of create_origin_only_middleware in ComfyUI
// 0.3.64's server.py, quirks included, because the gateway must get past the
// real one:
//
//   - it runs only when both Host and Origin headers are present;
//   - it runs only when Host's hostname is a loopback address;
//   - when Origin carries no port, Host's port is dropped before comparing,
//     and when Host carries no port, Origin's is dropped;
//   - an empty side (Origin "null", for example) skips the check;
//   - a port urllib cannot parse raises, which aiohttp answers with a 500.
//
// It returns nil when the request may proceed, errOriginMismatch (wrapped) for
// a 403, and another error for a 500.
func checkOrigin(r *http.Request) error {
	origins, ok := r.Header["Origin"]
	if !ok || len(origins) == 0 || r.Host == "" {
		return nil
	}
	origin := origins[0]

	hostDomain := strings.ToLower(r.Host)
	originNetloc, err := urlNetloc(origin)
	if err != nil {
		return err
	}
	originDomain := strings.ToLower(originNetloc)

	hostName, hostPort, err := hostInfo(hostDomain)
	if err != nil {
		return err
	}
	originName, originPort, err := hostInfo(originDomain)
	if err != nil {
		return err
	}

	loopback := isLoopback(hostName)
	if originPort == nil {
		hostDomain = derefOrEmpty(hostName)
	}
	if hostPort == nil {
		originDomain = derefOrEmpty(originName)
	}
	if loopback && hostDomain != "" && originDomain != "" && hostDomain != originDomain {
		return fmt.Errorf("%w %s != %s", errOriginMismatch, hostDomain, originDomain)
	}
	return nil
}

func derefOrEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// urlNetloc returns urllib.parse.urlparse(s).netloc.
func urlNetloc(s string) (string, error) {
	if i := strings.IndexByte(s, ':'); i > 0 && isSchemeName(s[:i]) {
		s = s[i+1:]
	}
	rest, ok := strings.CutPrefix(s, "//")
	if !ok {
		return "", nil
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	// urlsplit rejects unbalanced brackets with "Invalid IPv6 URL".
	if strings.Contains(rest, "[") != strings.Contains(rest, "]") {
		return "", fmt.Errorf("invalid IPv6 URL %q", s)
	}
	return rest, nil
}

func isSchemeName(s string) bool {
	for i, c := range s {
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !alpha {
			return false
		}
		if !alpha && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return s != ""
}

// hostInfo returns urllib's SplitResult.hostname and .port for a netloc:
// hostname is nil when empty, port is nil when absent or empty, and a port
// that is not 0-65535 digits is an error.
func hostInfo(netloc string) (hostname *string, port *int, err error) {
	if i := strings.LastIndexByte(netloc, '@'); i >= 0 {
		netloc = netloc[i+1:]
	}
	var name, p string
	if _, bracketed, ok := strings.Cut(netloc, "["); ok {
		var after string
		name, after, _ = strings.Cut(bracketed, "]")
		_, p, _ = strings.Cut(after, ":")
	} else {
		name, p, _ = strings.Cut(netloc, ":")
	}
	if name != "" {
		name = strings.ToLower(name)
		hostname = &name
	}
	if p != "" {
		n, convErr := strconv.Atoi(p)
		if convErr != nil || strings.ContainsAny(p, "+-") {
			return nil, nil, fmt.Errorf("port could not be cast to integer value as %q", p)
		}
		if n < 0 || n > 65535 {
			return nil, nil, fmt.Errorf("port out of range 0-65535: %d", n)
		}
		port = &n
	}
	return hostname, port, nil
}

// loopbackNames are the names a stock /etc/hosts maps to loopback. ComfyUI
// resolves any name with getaddrinfo; the fake stays off DNS so tests are
// hermetic, which only matters for a custom name pointed at 127.0.0.1.
var loopbackNames = map[string]bool{
	"localhost":             true,
	"localhost.localdomain": true,
	"ip6-localhost":         true,
	"ip6-loopback":          true,
}

// isLoopback mirrors server.py's is_loopback: an IP literal in 127.0.0.0/8 or
// ::1, or a name that resolves only to loopback.
func isLoopback(host *string) bool {
	if host == nil {
		return false
	}
	if addr, err := netip.ParseAddr(*host); err == nil {
		// Python's ipaddress does not unmap ::ffff:127.0.0.1 (before 3.13).
		return !addr.Is4In6() && addr.IsLoopback()
	}
	return loopbackNames[*host]
}
