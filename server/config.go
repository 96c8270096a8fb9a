package server

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// Config is everything the gateway needs to run. cmd/comfyui-auth fills it
// from its settings table (cmd/comfyui-auth/settings.go), which holds each
// field's flag, environment variables and default; the README's
// configuration table is checked against that table.
type Config struct {
	// Listen is the public address (flag --listen, env COMFYUI_AUTH_LISTEN).
	Listen string
	// Upstream is ComfyUI's base URL on loopback (--upstream,
	// COMFYUI_AUTH_UPSTREAM).
	Upstream string
	// HashFile is the bcrypt credential file to load and watch (--hash-file,
	// COMFYUI_AUTH_TOKEN_FILE).
	HashFile string
	// AuthEnabled false turns the gateway into a plain proxy
	// (COMFYUI_LOGIN_ENABLED=false).
	AuthEnabled bool
	// AcceptHashToken accepts the bcrypt hash string itself as a bearer
	// token, as ComfyUI-Login does (--accept-hash-token,
	// COMFYUI_AUTH_ACCEPT_HASH_TOKEN).
	AcceptHashToken bool
	// BcryptWorkers bounds concurrent bcrypt comparisons (--bcrypt-workers,
	// COMFYUI_AUTH_BCRYPT_WORKERS).
	BcryptWorkers int
	// BcryptQueue bounds how many verifications may wait for a worker
	// (--bcrypt-queue, COMFYUI_AUTH_BCRYPT_QUEUE).
	BcryptQueue int
	// BcryptMaxWait bounds how long a verification waits for a worker
	// before the client gets 503 (--bcrypt-max-wait,
	// COMFYUI_AUTH_BCRYPT_MAX_WAIT).
	BcryptMaxWait time.Duration
	// PollInterval is how often the hash file is re-read besides fsnotify
	// events (--poll-interval, COMFYUI_AUTH_POLL_INTERVAL).
	PollInterval time.Duration
	// Username is the display name used when the hash file has none
	// (COMFYUI_USERNAME).
	Username string
	// Password is a raw password hashed in memory when the hash file does
	// not exist (COMFYUI_PASSWORD).
	Password string
	// ServerToken is the raw token the deployment gives the server
	// (COMFYUI_AUTH_TOKEN or QWEN_API_TOKEN); it is only checked against the
	// hash at start, to catch a desynchronised pair early.
	ServerToken string
	// ServerTokenVar names the variable ServerToken came from, for messages.
	ServerTokenVar string
	// UpstreamTimeout bounds the wait for ComfyUI's response headers before
	// the client gets 504 (--upstream-timeout, COMFYUI_AUTH_UPSTREAM_TIMEOUT).
	UpstreamTimeout time.Duration
	// ReadHeaderTimeout guards against slow-header clients (slowloris)
	// without cutting slow uploads or idle websockets
	// (--read-header-timeout, COMFYUI_AUTH_READ_HEADER_TIMEOUT).
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes caps request header size (--max-header-bytes,
	// COMFYUI_AUTH_MAX_HEADER_BYTES).
	MaxHeaderBytes int
	// MetricsListen is the address of the Prometheus /metrics endpoint, kept
	// off the public port because it is unauthenticated; empty turns it off
	// (--metrics-listen, COMFYUI_AUTH_METRICS_LISTEN).
	MetricsListen string
	// ShutdownTimeout bounds the drain of in-flight requests on SIGTERM
	// (--shutdown-timeout, COMFYUI_AUTH_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// MaxLoginAttempts is how many wrong raw tokens or passwords a client
	// may send within ThrottleWindow before it is locked out with 429
	// (--max-login-attempts, MAX_LOGIN_ATTEMPTS, the deployment's own name).
	// 0 turns the throttle off. The hash token is never throttled: it costs
	// no bcrypt, and guessing a 60-character hash is hopeless.
	MaxLoginAttempts int
	// ThrottleWindow is the period failures are counted over
	// (--throttle-window, COMFYUI_AUTH_THROTTLE_WINDOW).
	ThrottleWindow time.Duration
	// ThrottleLock is the first lockout's length; it doubles on each repeat
	// up to 64 times this (--throttle-lock, COMFYUI_AUTH_THROTTLE_LOCK).
	ThrottleLock time.Duration
	// TrustedProxies lists the CIDRs of reverse proxies in front of the
	// gateway whose X-Forwarded-For and X-Forwarded-Proto are believed
	// (--trusted-proxies, COMFYUI_AUTH_TRUSTED_PROXIES). Empty believes no
	// one, so a client cannot pick the address it is throttled under.
	TrustedProxies string
	// TLSCert and TLSKey are PEM files; when both are set the gateway
	// serves HTTPS and HTTP/2 itself and reloads the pair when the files
	// change (--tls-cert, --tls-key, COMFYUI_AUTH_TLS_CERT,
	// COMFYUI_AUTH_TLS_KEY). Without them passwords and tokens cross the
	// network in clear unless a TLS proxy sits in front.
	TLSCert string
	TLSKey  string
	// SecretKey signs browser session cookies (SECRET_KEY; no flag, so it
	// never shows in the process list). Empty: SecretKeyFile, else the key
	// kept in StateDir, else a random key per start.
	SecretKey string
	// SecretKeyFile holds the session signing key, and is created with a
	// random one when missing, so restarts keep the key; sessions survive
	// them only with StateDir (--secret-key-file,
	// COMFYUI_AUTH_SECRET_KEY_FILE).
	SecretKeyFile string
	// StateDir is a writable directory where the gateway keeps the users'
	// session revocations, so logouts and sessions survive restarts, and
	// the session key when neither SecretKey nor SecretKeyFile is set.
	// Empty: nothing is kept, and every session ends at a restart
	// (--state-dir, COMFYUI_AUTH_STATE_DIR).
	StateDir string
	// SessionExpire is a browser session's lifetime (--session-expire,
	// SESSION_EXPIRE_HOURS as a number of hours).
	SessionExpire time.Duration
	// GuestMode offers a Guest button on the login page (--guest-mode,
	// GUEST_MODE_ENABLED). A GUEST_MODE file next to the hash file turns it
	// on too, as in ComfyUI-Login.
	GuestMode bool
	// PublicURL is the origin browsers use to reach the gateway, such as
	// https://comfy.example.com; when set it is the only Origin accepted on
	// cookie-authenticated writes and websockets, and an https one makes
	// cookies Secure. Empty: taken from each request's Host
	// (--public-url, COMFYUI_AUTH_PUBLIC_URL).
	PublicURL string
	// LogLevel is the lowest level logged: debug, info, warn or error
	// (--log-level, COMFYUI_AUTH_LOG_LEVEL). cmd/comfyui-auth builds the
	// logger from it.
	LogLevel string
	// MaxConns bounds the client connections open at once; 0 derives it
	// from the descriptor limit, at most 4096 (--max-conns,
	// COMFYUI_AUTH_MAX_CONNS).
	MaxConns int
	// MaxConnsPerClient bounds one client address's (an IPv6 /64's)
	// connections; trusted proxies count toward MaxConns only. 0 means
	// 256, or MaxConns when lower (--max-conns-per-client,
	// COMFYUI_AUTH_MAX_CONNS_PER_CLIENT).
	MaxConnsPerClient int
	// ComfyMultiUser binds ComfyUI's --multi-user mode to the login: each
	// authenticated user is registered in ComfyUI's user registry under
	// their name, and every proxied request carries that user's id in
	// Comfy-User, whatever the client sent (--comfy-multi-user,
	// COMFYUI_AUTH_MULTI_USER). Needs authentication.
	ComfyMultiUser bool
	// MaxQueuedPrompts is how many prompts one user may have pending or
	// running in ComfyUI's queue; POST /prompt beyond it gets 429
	// queue_share. Guests share one count. 0 is off
	// (--max-queued-prompts, COMFYUI_AUTH_MAX_QUEUED_PROMPTS).
	MaxQueuedPrompts int

	// loginReadTimeout overrides loginReadTimeout (tests).
	loginReadTimeout time.Duration
	// refusalLogInterval overrides middleware.DefaultRefusalInterval (tests).
	refusalLogInterval time.Duration

	// bcryptCompare replaces bcrypt in the verifier; tests use it to hold a
	// worker busy without burning real bcrypt. Not a setting.
	bcryptCompare func(hash, token []byte) error
	// beforeWebsocketAdmission, when set, runs between a websocket's
	// credential check and its admission to a credential line; tests land
	// a reload there. Nil in production. Not a setting.
	beforeWebsocketAdmission func()
	// maxRevoked and maxGuestRevoked bound the users' and the guests'
	// revocation lists; 0 means middleware's defaults. Tests lower them.
	maxRevoked, maxGuestRevoked int
}

// FieldError is a Config value Validate refuses. Field names the Config
// field, so cmd/comfyui-auth can name the flag and environment variable a
// person actually sets; Reason says what is wrong and what is expected.
type FieldError struct {
	Field  string // Config field name, e.g. "BcryptQueue"
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks the values a person may get wrong and says what to fix.
// A zero or negative count or duration is refused, never replaced by a
// default: the defaults live in cmd/comfyui-auth's settings table, and a
// value typed on purpose must not be swapped behind the person's back.
func (c Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("Listen", "%q is not host:port (for example 0.0.0.0:8188)", c.Listen)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return bad("MetricsListen", "%q is not host:port (for example 127.0.0.1:9188)", c.MetricsListen)
		}
	}
	if _, err := parseUpstream(c.Upstream); err != nil {
		return bad("Upstream", "%v", err)
	}
	if c.AuthEnabled && c.HashFile == "" && c.Password == "" {
		return fmt.Errorf("no credential source: set --hash-file (COMFYUI_AUTH_TOKEN_FILE) or COMFYUI_PASSWORD, or COMFYUI_LOGIN_ENABLED=false to run without authentication")
	}
	if c.BcryptWorkers < 1 {
		return bad("BcryptWorkers", "must be at least 1, got %d", c.BcryptWorkers)
	}
	if c.BcryptQueue < 1 {
		return bad("BcryptQueue", "must be at least 1, got %d: it is how many token checks may wait for a busy worker before the rest get 503", c.BcryptQueue)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"BcryptMaxWait", c.BcryptMaxWait}, {"PollInterval", c.PollInterval},
		{"UpstreamTimeout", c.UpstreamTimeout}, {"ReadHeaderTimeout", c.ReadHeaderTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return bad(d.field, "must be positive, got %s (write it like 2s, 500ms or 1m, or a number of seconds)", d.v)
		}
	}
	if c.MaxLoginAttempts < 0 {
		return bad("MaxLoginAttempts", "must be 0 (no throttle) or more, got %d", c.MaxLoginAttempts)
	}
	if c.MaxLoginAttempts > 0 {
		if c.ThrottleWindow <= 0 {
			return bad("ThrottleWindow", "must be positive while the throttle is on, got %s", c.ThrottleWindow)
		}
		if c.ThrottleLock <= 0 {
			return bad("ThrottleLock", "must be positive while the throttle is on, got %s", c.ThrottleLock)
		}
	}
	if _, err := middleware.ParseTrustedProxies(c.TrustedProxies); err != nil {
		return bad("TrustedProxies", "%v", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("set both --tls-cert and --tls-key (COMFYUI_AUTH_TLS_CERT, COMFYUI_AUTH_TLS_KEY), or neither")
	}
	if c.SessionExpire < time.Minute {
		return bad("SessionExpire", "must be at least a minute, got %s (SESSION_EXPIRE_HOURS is in hours, for example 24)", c.SessionExpire)
	}
	if _, err := parsePublicURL(c.PublicURL); err != nil {
		return bad("PublicURL", "%v", err)
	}
	if c.MaxConns < 0 {
		return bad("MaxConns", "must be 0 (derived from the descriptor limit) or more, got %d", c.MaxConns)
	}
	if c.MaxConnsPerClient < 0 {
		return bad("MaxConnsPerClient", "must be 0 (256, or --max-conns when lower) or more, got %d", c.MaxConnsPerClient)
	}
	if c.ComfyMultiUser && !c.AuthEnabled {
		return bad("ComfyMultiUser", "needs authentication: ComfyUI's user is the one the gateway let in, and with COMFYUI_LOGIN_ENABLED=false nobody is; turn authentication on or this off")
	}
	if c.MaxQueuedPrompts < 0 {
		return bad("MaxQueuedPrompts", "must be 0 (no limit) or more, got %d", c.MaxQueuedPrompts)
	}
	if c.MaxHeaderBytes < 4096 {
		return bad("MaxHeaderBytes", "must be at least 4096, got %d", c.MaxHeaderBytes)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return bad("LogLevel", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	return nil
}

func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q must start with http:// or https:// (ComfyUI listens on http://127.0.0.1:8189 inside the image)", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, fmt.Errorf("%q must be a bare origin such as http://127.0.0.1:8189, without path or query", s)
	}
	u.Path = ""
	return u, nil
}

// parsePublicURL checks --public-url; "" gives nil (origin from Host).
func parsePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q must be an origin such as https://comfy.example.com (scheme and host, no path)", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}
