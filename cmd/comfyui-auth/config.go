package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/server"
)

// env looks up an environment variable; tests pass a map instead of the
// process environment.
type env func(string) (string, bool)

// loadServeConfig fills a server.Config from defaults, then the environment,
// then flags (a flag wins over its variable).
func loadServeConfig(args []string, getenv env, stderr io.Writer) (server.Config, error) {
	cfg := server.DefaultConfig()
	var errs []string
	str := func(dst *string, names ...string) {
		for _, n := range names {
			if v, ok := getenv(n); ok && v != "" {
				*dst = v
				return
			}
		}
	}
	integer := func(dst *int, name string) {
		if v, ok := getenv(name); ok && v != "" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q is not a whole number", name, v))
				return
			}
			*dst = n
		}
	}
	duration := func(dst *time.Duration, name string) {
		if v, ok := getenv(name); ok && v != "" {
			d, err := parseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q is not a duration (write it like 2s, 500ms or 1m)", name, v))
				return
			}
			*dst = d
		}
	}
	boolean := func(dst *bool, name string) {
		if v, ok := getenv(name); ok && v != "" {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q is not true or false", name, v))
				return
			}
			*dst = b
		}
	}

	str(&cfg.Listen, "COMFYUI_AUTH_LISTEN")
	str(&cfg.Upstream, "COMFYUI_AUTH_UPSTREAM")
	str(&cfg.HashFile, "COMFYUI_AUTH_TOKEN_FILE")
	if v, ok := getenv("COMFYUI_LOGIN_ENABLED"); ok {
		// The deployment's own meaning: only an explicit "false" turns
		// authentication off; anything else keeps it on (fail closed).
		cfg.AuthEnabled = !strings.EqualFold(strings.TrimSpace(v), "false")
	}
	boolean(&cfg.AcceptHashToken, "COMFYUI_AUTH_ACCEPT_HASH_TOKEN")
	integer(&cfg.BcryptWorkers, "COMFYUI_AUTH_BCRYPT_WORKERS")
	integer(&cfg.BcryptQueue, "COMFYUI_AUTH_BCRYPT_QUEUE")
	duration(&cfg.BcryptMaxWait, "COMFYUI_AUTH_BCRYPT_MAX_WAIT")
	duration(&cfg.PollInterval, "COMFYUI_AUTH_POLL_INTERVAL")
	duration(&cfg.UpstreamTimeout, "COMFYUI_AUTH_UPSTREAM_TIMEOUT")
	duration(&cfg.ReadHeaderTimeout, "COMFYUI_AUTH_READ_HEADER_TIMEOUT")
	integer(&cfg.MaxHeaderBytes, "COMFYUI_AUTH_MAX_HEADER_BYTES")
	integer(&cfg.MaxConns, "COMFYUI_AUTH_MAX_CONNS")
	integer(&cfg.MaxConnsPerClient, "COMFYUI_AUTH_MAX_CONNS_PER_CLIENT")
	duration(&cfg.ShutdownTimeout, "COMFYUI_AUTH_SHUTDOWN_TIMEOUT")
	integer(&cfg.MaxLoginAttempts, "MAX_LOGIN_ATTEMPTS")
	duration(&cfg.ThrottleWindow, "COMFYUI_AUTH_THROTTLE_WINDOW")
	duration(&cfg.ThrottleLock, "COMFYUI_AUTH_THROTTLE_LOCK")
	str(&cfg.TrustedProxies, "COMFYUI_AUTH_TRUSTED_PROXIES")
	str(&cfg.TLSCert, "COMFYUI_AUTH_TLS_CERT")
	str(&cfg.TLSKey, "COMFYUI_AUTH_TLS_KEY")
	str(&cfg.SecretKey, "SECRET_KEY")
	str(&cfg.SecretKeyFile, "COMFYUI_AUTH_SECRET_KEY_FILE")
	if v, ok := getenv("SESSION_EXPIRE_HOURS"); ok && v != "" {
		h, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || h <= 0 {
			errs = append(errs, fmt.Sprintf("SESSION_EXPIRE_HOURS=%q is not a positive number of hours (for example 24)", v))
		} else {
			cfg.SessionExpire = time.Duration(h * float64(time.Hour))
		}
	}
	boolean(&cfg.GuestMode, "GUEST_MODE_ENABLED")
	str(&cfg.PublicURL, "COMFYUI_AUTH_PUBLIC_URL")
	str(&cfg.MetricsListen, "COMFYUI_AUTH_METRICS_LISTEN")
	str(&cfg.Username, "COMFYUI_USERNAME")
	str(&cfg.Password, "COMFYUI_PASSWORD")
	for _, n := range []string{"COMFYUI_AUTH_TOKEN", "QWEN_API_TOKEN"} {
		if v, ok := getenv(n); ok && v != "" {
			cfg.ServerToken, cfg.ServerTokenVar = v, n
			break
		}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}

	fs := flag.NewFlagSet("comfyui-auth serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "public `address` (COMFYUI_AUTH_LISTEN)")
	fs.StringVar(&cfg.Upstream, "upstream", cfg.Upstream, "ComfyUI base `URL` on loopback (COMFYUI_AUTH_UPSTREAM)")
	fs.StringVar(&cfg.HashFile, "hash-file", cfg.HashFile, "bcrypt credential `file` to load and watch (COMFYUI_AUTH_TOKEN_FILE)")
	fs.BoolVar(&cfg.AcceptHashToken, "accept-hash-token", cfg.AcceptHashToken, "accept the hash string itself as a Bearer token, as ComfyUI-Login does (COMFYUI_AUTH_ACCEPT_HASH_TOKEN)")
	fs.IntVar(&cfg.BcryptWorkers, "bcrypt-workers", cfg.BcryptWorkers, "concurrent bcrypt checks at most (COMFYUI_AUTH_BCRYPT_WORKERS)")
	fs.IntVar(&cfg.BcryptQueue, "bcrypt-queue", cfg.BcryptQueue, "token checks that may wait for a worker (COMFYUI_AUTH_BCRYPT_QUEUE)")
	fs.DurationVar(&cfg.BcryptMaxWait, "bcrypt-max-wait", cfg.BcryptMaxWait, "longest wait for a bcrypt worker before 503 (COMFYUI_AUTH_BCRYPT_MAX_WAIT)")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "hash file re-read interval besides fsnotify events (COMFYUI_AUTH_POLL_INTERVAL)")
	fs.DurationVar(&cfg.UpstreamTimeout, "upstream-timeout", cfg.UpstreamTimeout, "longest wait for ComfyUI's response headers before 504 (COMFYUI_AUTH_UPSTREAM_TIMEOUT)")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", cfg.ReadHeaderTimeout, "longest time a client may take to send its headers (COMFYUI_AUTH_READ_HEADER_TIMEOUT)")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", cfg.MaxHeaderBytes, "largest accepted request header block (COMFYUI_AUTH_MAX_HEADER_BYTES)")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "client connections open at once at most; 0: derived from the descriptor limit, at most 4096 (COMFYUI_AUTH_MAX_CONNS)")
	fs.IntVar(&cfg.MaxConnsPerClient, "max-conns-per-client", cfg.MaxConnsPerClient, "connections one client address (IPv6 /64) may hold; trusted proxies are exempt; 0: 256 (COMFYUI_AUTH_MAX_CONNS_PER_CLIENT)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "`address` of the unauthenticated Prometheus /metrics endpoint, e.g. 127.0.0.1:9188; empty: off (COMFYUI_AUTH_METRICS_LISTEN)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "drain bound on SIGTERM (COMFYUI_AUTH_SHUTDOWN_TIMEOUT)")
	fs.IntVar(&cfg.MaxLoginAttempts, "max-login-attempts", cfg.MaxLoginAttempts, "wrong raw tokens or passwords per client within --throttle-window before a 429 lockout; 0 disables (MAX_LOGIN_ATTEMPTS)")
	fs.DurationVar(&cfg.ThrottleWindow, "throttle-window", cfg.ThrottleWindow, "period failures are counted over (COMFYUI_AUTH_THROTTLE_WINDOW)")
	fs.DurationVar(&cfg.ThrottleLock, "throttle-lock", cfg.ThrottleLock, "first lockout length, doubled on each repeat (COMFYUI_AUTH_THROTTLE_LOCK)")
	fs.StringVar(&cfg.TrustedProxies, "trusted-proxies", cfg.TrustedProxies, "comma-separated `CIDRs` of proxies whose X-Forwarded-For/-Proto are believed (COMFYUI_AUTH_TRUSTED_PROXIES)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate `file`; with --tls-key serves HTTPS and HTTP/2, reloaded on change (COMFYUI_AUTH_TLS_CERT)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key `file` for --tls-cert (COMFYUI_AUTH_TLS_KEY)")
	fs.StringVar(&cfg.SecretKeyFile, "secret-key-file", cfg.SecretKeyFile, "`file` with the session signing key, created when missing (COMFYUI_AUTH_SECRET_KEY_FILE; SECRET_KEY wins)")
	fs.DurationVar(&cfg.SessionExpire, "session-expire", cfg.SessionExpire, "browser session lifetime (SESSION_EXPIRE_HOURS, in hours)")
	fs.BoolVar(&cfg.GuestMode, "guest-mode", cfg.GuestMode, "offer a Guest button on the login page (GUEST_MODE_ENABLED, or a GUEST_MODE file next to the hash file)")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "public `origin` browsers use, e.g. https://comfy.example.com; default: each request's Host (COMFYUI_AUTH_PUBLIC_URL)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	return cfg, cfg.Validate()
}

// parseDuration accepts Go durations and, for environment files written by
// hand, a bare number of seconds.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}
