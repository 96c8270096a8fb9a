package main

// The settings table of `comfyui-auth serve`. Each row is one setting and
// drives everything about it: its default, its environment variable(s), its
// flag, its line in --help, and the check of README's Configuration table
// (TestReadmeConfigurationTableMatchesSettings).
//
// To add a setting:
//  1. add a field with a doc comment to server.Config, and refuse its bad
//     values in Config.Validate with a *server.FieldError naming the field
//     (the error then names the flag and variable by itself);
//  2. add a row below: flag (without dashes; "" for environment-only
//     secrets), environment variable, default as README writes it, the
//     Config field's name, and one line of help;
//  3. add the same flag, variable and default to README's Configuration
//     table; the test above fails until they agree.
//
// The parser follows the field's type: string; int (whole number); bool
// (parseBool); time.Duration (parseDuration: Go syntax or bare seconds).
// No other parsers exist for flags or environment variables.

import (
	"flag"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/server"
)

// setting is one row of the table.
type setting struct {
	flag  string   // flag name without dashes; "" when environment-only
	env   []string // variables, the first set and non-empty one wins
	def   string   // default, read by the same parser as any other value
	field string   // server.Config field it fills
	help  string   // one line for --help

	// shownDef, when set, is what --help and README show instead of def,
	// for a default that depends on the machine or means "off".
	shownDef string
	// envUnit, when set, is what a bare number in the environment variable
	// counts (SESSION_EXPIRE_HOURS is in hours); flags always count seconds.
	envUnit time.Duration
	// unlessFalse marks COMFYUI_LOGIN_ENABLED's rule: only an explicit
	// "false" turns it off, any other value keeps it on (fail closed).
	unlessFalse bool
	// sourceField, when set, names a Config string field that receives the
	// name of the variable the value came from (for messages).
	sourceField string
}

// settings is the table. Order is --help's order.
var settings = []setting{
	{flag: "listen", env: env1("COMFYUI_AUTH_LISTEN"), def: "0.0.0.0:8188", field: "Listen",
		help: "public address"},
	{flag: "upstream", env: env1("COMFYUI_AUTH_UPSTREAM"), def: "http://127.0.0.1:8189", field: "Upstream",
		help: "ComfyUI base URL on loopback"},
	{flag: "hash-file", env: env1("COMFYUI_AUTH_TOKEN_FILE"), def: "/workspace/ComfyUI/.secrets/qwen-api-user.token", field: "HashFile",
		help: "bcrypt credential file to load and watch"},
	{env: env1("COMFYUI_LOGIN_ENABLED"), def: "true", field: "AuthEnabled", unlessFalse: true,
		help: "false turns authentication off; any other value keeps it on"},
	{flag: "accept-hash-token", env: env1("COMFYUI_AUTH_ACCEPT_HASH_TOKEN"), def: "true", field: "AcceptHashToken",
		help: "accept the hash string itself as a Bearer token, as ComfyUI-Login does"},
	{flag: "bcrypt-workers", env: env1("COMFYUI_AUTH_BCRYPT_WORKERS"), def: strconv.Itoa(max(1, runtime.NumCPU()/2)), shownDef: "max(1, CPUs/2)", field: "BcryptWorkers",
		help: "concurrent bcrypt checks at most"},
	{flag: "bcrypt-queue", env: env1("COMFYUI_AUTH_BCRYPT_QUEUE"), def: "64", field: "BcryptQueue",
		help: "token checks that may wait for a worker; more get 503 at once"},
	{flag: "bcrypt-max-wait", env: env1("COMFYUI_AUTH_BCRYPT_MAX_WAIT"), def: "2s", field: "BcryptMaxWait",
		help: "longest wait for a bcrypt worker before 503"},
	{flag: "poll-interval", env: env1("COMFYUI_AUTH_POLL_INTERVAL"), def: "2s", field: "PollInterval",
		help: "hash file re-read interval besides fsnotify events"},
	{flag: "upstream-timeout", env: env1("COMFYUI_AUTH_UPSTREAM_TIMEOUT"), def: "120s", field: "UpstreamTimeout",
		help: "longest wait for ComfyUI's response headers before 504"},
	{flag: "state-dir", env: env1("COMFYUI_AUTH_STATE_DIR"), field: "StateDir",
		help: "writable directory keeping logouts, and the session key when none is given, so sessions survive restarts; empty: every session ends at a restart"},
	{flag: "secret-key-file", env: env1("COMFYUI_AUTH_SECRET_KEY_FILE"), field: "SecretKeyFile",
		help: "file with the session signing key, created when missing (SECRET_KEY wins)"},
	{env: env1("SECRET_KEY"), field: "SecretKey",
		help: "session signing key; no flag, so it never shows in the process list"},
	{flag: "session-expire", env: env1("SESSION_EXPIRE_HOURS"), def: "24h", field: "SessionExpire", envUnit: time.Hour,
		help: "browser session lifetime (SESSION_EXPIRE_HOURS: a bare number is hours)"},
	{flag: "guest-mode", env: env1("GUEST_MODE_ENABLED"), def: "false", field: "GuestMode",
		help: "offer a Guest button on the login page (a GUEST_MODE file next to the hash file does too)"},
	{flag: "public-url", env: env1("COMFYUI_AUTH_PUBLIC_URL"), shownDef: "from each request's Host", field: "PublicURL",
		help: "public origin browsers use, e.g. https://comfy.example.com"},
	{flag: "read-header-timeout", env: env1("COMFYUI_AUTH_READ_HEADER_TIMEOUT"), def: "10s", field: "ReadHeaderTimeout",
		help: "longest time a client may take to send its headers"},
	{flag: "max-header-bytes", env: env1("COMFYUI_AUTH_MAX_HEADER_BYTES"), def: "65536", field: "MaxHeaderBytes",
		help: "largest accepted request header block"},
	{flag: "max-conns", env: env1("COMFYUI_AUTH_MAX_CONNS"), def: "0", shownDef: "0: derived", field: "MaxConns",
		help: "client connections open at once at most; 0: derived from the descriptor limit, at most 4096"},
	{flag: "max-conns-per-client", env: env1("COMFYUI_AUTH_MAX_CONNS_PER_CLIENT"), def: "0", shownDef: "0: 256", field: "MaxConnsPerClient",
		help: "connections one client address (IPv6 /64) may hold; trusted proxies are exempt; 0: 256"},
	{flag: "comfy-multi-user", env: env1("COMFYUI_AUTH_MULTI_USER"), def: "false", field: "ComfyMultiUser",
		help: "register each user in ComfyUI's --multi-user registry and set their Comfy-User on every request"},
	{flag: "max-queued-prompts", env: env1("COMFYUI_AUTH_MAX_QUEUED_PROMPTS"), def: "0", shownDef: "0: off", field: "MaxQueuedPrompts",
		help: "prompts one user may have pending or running in ComfyUI's queue before 429 queue_share; guests share one count; 0: off"},
	{flag: "shutdown-timeout", env: env1("COMFYUI_AUTH_SHUTDOWN_TIMEOUT"), def: "10s", field: "ShutdownTimeout",
		help: "drain bound on SIGTERM"},
	{flag: "max-login-attempts", env: env1("MAX_LOGIN_ATTEMPTS"), def: "5", field: "MaxLoginAttempts",
		help: "wrong raw tokens or passwords per client within --throttle-window before a 429 lockout; 0 disables"},
	{flag: "throttle-window", env: env1("COMFYUI_AUTH_THROTTLE_WINDOW"), def: "5m", field: "ThrottleWindow",
		help: "period failures are counted over"},
	{flag: "throttle-lock", env: env1("COMFYUI_AUTH_THROTTLE_LOCK"), def: "1m", field: "ThrottleLock",
		help: "first lockout length, doubled on each repeat"},
	{flag: "trusted-proxies", env: env1("COMFYUI_AUTH_TRUSTED_PROXIES"), shownDef: "none", field: "TrustedProxies",
		help: "comma-separated CIDRs of proxies whose X-Forwarded-For/-Proto are believed"},
	{flag: "tls-cert", env: env1("COMFYUI_AUTH_TLS_CERT"), field: "TLSCert",
		help: "PEM certificate file; with --tls-key serves HTTPS and HTTP/2, reloaded on change"},
	{flag: "tls-key", env: env1("COMFYUI_AUTH_TLS_KEY"), field: "TLSKey",
		help: "PEM private key file for --tls-cert"},
	{flag: "log-level", env: env1("COMFYUI_AUTH_LOG_LEVEL"), def: "info", field: "LogLevel",
		help: "debug, info, warn or error"},
	{flag: "metrics-listen", env: env1("COMFYUI_AUTH_METRICS_LISTEN"), shownDef: "off", field: "MetricsListen",
		help: "address of the unauthenticated Prometheus /metrics endpoint, e.g. 127.0.0.1:9188"},
	{env: env1("COMFYUI_USERNAME"), field: "Username",
		help: "display name when the hash file has none"},
	{env: env1("COMFYUI_PASSWORD"), field: "Password",
		help: "raw password, hashed in memory when the hash file does not exist"},
	{env: []string{"COMFYUI_AUTH_TOKEN", "QWEN_API_TOKEN"}, field: "ServerToken", sourceField: "ServerTokenVar",
		help: "the raw token, checked against the hash at start"},
}

func env1(name string) []string { return []string{name} }

// names is how messages name a setting: "--bcrypt-queue
// (COMFYUI_AUTH_BCRYPT_QUEUE)", or the variables alone when there is no flag.
func (s setting) names() string {
	vars := strings.Join(s.env, " or ")
	if s.flag == "" {
		return vars
	}
	return "--" + s.flag + " (" + vars + ")"
}

// shown is the default as --help and README write it.
func (s setting) shown() string {
	if s.shownDef != "" {
		return s.shownDef
	}
	return s.def
}

// settingFor returns the row that fills a Config field.
func settingFor(field string) (setting, bool) {
	for _, s := range settings {
		if s.field == field {
			return s, true
		}
	}
	return setting{}, false
}

// value binds s to its field in cfg, with the parser its type calls for.
// fromEnv selects the environment's unit for bare numbers.
func (s setting) value(cfg *server.Config, fromEnv bool) settingValue {
	f := reflect.ValueOf(cfg).Elem().FieldByName(s.field)
	if !f.IsValid() {
		panic("settings: server.Config has no field " + s.field)
	}
	switch p := f.Addr().Interface().(type) {
	case *string:
		return stringValue{p}
	case *int:
		return intValue{p}
	case *bool:
		if s.unlessFalse {
			return unlessFalseValue{p}
		}
		return boolValue{p}
	case *time.Duration:
		unit := time.Second
		if fromEnv && s.envUnit != 0 {
			unit = s.envUnit
		}
		return durationValue{p, unit}
	}
	panic(fmt.Sprintf("settings: no parser for %s's type %s", s.field, f.Type()))
}

// settingValue is a flag.Value that also names its kind for --help.
type settingValue interface {
	String() string
	Set(string) error
	kind() string
}

type stringValue struct{ p *string }

// The String methods answer for a nil pointer too: flag.PrintDefaults calls
// them on a zero value to decide whether to print "(default ...)".

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v stringValue) Set(s string) error { *v.p = s; return nil }
func (stringValue) kind() string         { return "string" }

type intValue struct{ p *int }

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("is not a whole number")
	}
	*v.p = n
	return nil
}
func (intValue) kind() string { return "n" }

type boolValue struct{ p *bool }

func (v boolValue) String() string { return strconv.FormatBool(v.p != nil && *v.p) }
func (v boolValue) Set(s string) error {
	b, err := parseBool(s)
	if err != nil {
		return err
	}
	*v.p = b
	return nil
}
func (boolValue) kind() string     { return "" }
func (boolValue) IsBoolFlag() bool { return true }

// unlessFalseValue is COMFYUI_LOGIN_ENABLED: deployments in the wild set it
// to "false" to turn authentication off, and anything else, even a typo,
// must keep authentication on.
type unlessFalseValue struct{ p *bool }

func (v unlessFalseValue) String() string { return strconv.FormatBool(v.p != nil && *v.p) }
func (v unlessFalseValue) Set(s string) error {
	*v.p = !strings.EqualFold(strings.TrimSpace(s), "false")
	return nil
}
func (unlessFalseValue) kind() string { return "" }

type durationValue struct {
	p    *time.Duration
	unit time.Duration // what a bare number counts
}

func (v durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return v.p.String()
}
func (v durationValue) Set(s string) error {
	d, err := parseDurationUnit(s, v.unit)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}
func (durationValue) kind() string { return "duration" }

// parseBool is the one boolean parser of flags and environment variables:
// true/false, 1/0, yes/no, on/off, t/f, in any case. Anything else is an
// error, never quietly the default.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "t", "1", "yes", "on":
		return true, nil
	case "false", "f", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("is not true or false")
}

// parseDuration is the one duration parser of flags and environment
// variables: Go syntax (2s, 500ms, 1m30s) or, as environment files and
// Compose users write it, a bare number of seconds.
func parseDuration(s string) (time.Duration, error) {
	return parseDurationUnit(s, time.Second)
}

// parseDurationUnit is parseDuration with bare numbers counted in unit.
func parseDurationUnit(s string, unit time.Duration) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if f := n * float64(unit); !math.IsNaN(f) && math.Abs(f) < math.MaxInt64 {
			return time.Duration(f), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		bare := "seconds"
		if unit == time.Hour {
			bare = "hours"
		}
		return 0, fmt.Errorf("is not a duration (write it like 2s, 500ms or 1m, or a bare number of %s)", bare)
	}
	return d, nil
}

// defaultConfig is the Config every setting's default makes.
func defaultConfig() server.Config {
	var cfg server.Config
	for _, s := range settings {
		if s.def == "" {
			continue
		}
		if err := s.value(&cfg, false).Set(s.def); err != nil {
			panic(fmt.Sprintf("settings: default %q of %s %v", s.def, s.names(), err))
		}
	}
	return cfg
}

// durationFlag and boolFlag define the other commands' flags with the same
// parsers as serve's settings, so `--timeout 5` and `--force=yes` mean the
// same everywhere.
func durationFlag(fs *flag.FlagSet, name string, def time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	*p = def
	fs.Var(durationValue{p, time.Second}, name, usage)
	return p
}

func boolFlag(fs *flag.FlagSet, name string, usage string) *bool {
	p := new(bool)
	fs.Var(boolValue{p}, name, usage)
	return p
}
