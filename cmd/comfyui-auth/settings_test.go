package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/server"
)

// runtimeVars are README Configuration rows that are not settings of
// server.Config: the Go runtime reads them (setGCPercent only picks
// another default for GOGC).
var runtimeVars = map[string]bool{"GOGC": true}

// readmeRow is one row of README's Configuration table, backticks removed.
type readmeRow struct{ flag, env, def string }

func readmeConfigRows(t *testing.T) []readmeRow {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []readmeRow
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Configuration":
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case in && strings.HasPrefix(line, "|") && !strings.HasPrefix(line, "|---") && !strings.HasPrefix(line, "| flag |"):
			cells := strings.Split(line, "|")
			if len(cells) < 5 {
				t.Fatalf("README configuration row with fewer than four cells: %q", line)
			}
			clean := func(s string) string { return strings.TrimSpace(strings.ReplaceAll(s, "`", "")) }
			rows = append(rows, readmeRow{clean(cells[1]), clean(cells[2]), clean(cells[3])})
		}
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no Configuration table under \"## Configuration\"")
	}
	return rows
}

func TestReadmeConfigurationTableMatchesSettings(t *testing.T) {
	byEnv := map[string]readmeRow{}
	for _, r := range readmeConfigRows(t) {
		if runtimeVars[r.env] {
			continue
		}
		byEnv[r.env] = r
	}
	for _, s := range settings {
		env := strings.Join(s.env, ", ")
		r, ok := byEnv[env]
		if !ok {
			t.Errorf("README's Configuration table has no row for %s", s.names())
			continue
		}
		delete(byEnv, env)
		wantFlag := ""
		if s.flag != "" {
			wantFlag = "--" + s.flag
		}
		if r.flag != wantFlag {
			t.Errorf("README row %s: flag %q, the settings table says %q", env, r.flag, wantFlag)
		}
		if r.def != s.shown() {
			t.Errorf("README row %s: default %q, the settings table says %q", env, r.def, s.shown())
		}
	}
	for env := range byEnv {
		t.Errorf("README's Configuration table lists %s, which no setting reads", env)
	}
}

func TestEveryConfigFieldHasASetting(t *testing.T) {
	covered := map[string]bool{}
	for _, s := range settings {
		if covered[s.field] {
			t.Errorf("two settings fill Config.%s", s.field)
		}
		covered[s.field] = true
		if s.sourceField != "" {
			covered[s.sourceField] = true
		}
	}
	typ := reflect.TypeOf(server.Config{})
	for i := range typ.NumField() {
		// Unexported fields are test overrides set inside package server;
		// no flag or variable can reach them.
		if f := typ.Field(i); f.IsExported() && !covered[f.Name] {
			t.Errorf("server.Config.%s has no row in the settings table (settings.go)", f.Name)
		}
	}
}

func TestSettingsTableIsWellFormed(t *testing.T) {
	flags, vars := map[string]bool{}, map[string]bool{}
	for _, s := range settings {
		if len(s.env) == 0 || s.help == "" {
			t.Errorf("%s: every setting needs an environment variable and help", s.field)
		}
		if s.flag != "" && flags[s.flag] {
			t.Errorf("flag --%s defined twice", s.flag)
		}
		flags[s.flag] = true
		for _, n := range s.env {
			if vars[n] {
				t.Errorf("variable %s read by two settings", n)
			}
			vars[n] = true
		}
	}
	// The defaults parse (defaultConfig panics otherwise) and pass Validate.
	if err := defaultConfig().Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

// TestDefaultsAreTheDocumentedOnes pins the defaults deployments rely on.
func TestDefaultsAreTheDocumentedOnes(t *testing.T) {
	cfg := defaultConfig()
	want := server.Config{
		Listen: "0.0.0.0:8188", Upstream: "http://127.0.0.1:8189",
		HashFile: "/workspace/ComfyUI/.secrets/qwen-api-user.token", AuthEnabled: true, AcceptHashToken: true,
		BcryptWorkers: cfg.BcryptWorkers, BcryptQueue: 64, BcryptMaxWait: 2 * time.Second,
		PollInterval: 2 * time.Second, UpstreamTimeout: 120 * time.Second, ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes: 64 << 10, ShutdownTimeout: 10 * time.Second, MaxLoginAttempts: 5,
		ThrottleWindow: 5 * time.Minute, ThrottleLock: time.Minute, SessionExpire: 24 * time.Hour, LogLevel: "info",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("defaults\n got %+v\nwant %+v", cfg, want)
	}
	if cfg.BcryptWorkers < 1 || cfg.MetricsListen != "" || cfg.GuestMode {
		t.Fatalf("workers %d, metrics %q, guest %v", cfg.BcryptWorkers, cfg.MetricsListen, cfg.GuestMode)
	}
}

// sample is a value of the row's type that differs from its default.
func sample(t *testing.T, s setting) (raw string, check func(server.Config) bool) {
	t.Helper()
	f := func(c server.Config) reflect.Value { return reflect.ValueOf(c).FieldByName(s.field) }
	def := f(defaultConfig())
	switch def.Interface().(type) {
	case string:
		return "sample-value", func(c server.Config) bool { return f(c).String() == "sample-value" }
	case int:
		return "7", func(c server.Config) bool { return f(c).Int() == 7 }
	case bool:
		if def.Bool() {
			return "false", func(c server.Config) bool { return !f(c).Bool() }
		}
		return "true", func(c server.Config) bool { return f(c).Bool() }
	case time.Duration:
		return "3", nil // checked by TestDurationsTakeBareSecondsEverywhere
	}
	t.Fatalf("%s: no sample for %s", s.field, def.Type())
	return "", nil
}

// TestEverySettingIsReadThroughTheInjectedLookup sets each variable in a
// map, not the process environment: a setting that bypasses the lookup
// (as COMFYUI_AUTH_LOG_LEVEL once did with os.Getenv) keeps its default.
func TestEverySettingIsReadThroughTheInjectedLookup(t *testing.T) {
	for _, s := range settings {
		raw, check := sample(t, s)
		if check == nil {
			continue
		}
		for _, name := range s.env {
			cfg, _ := loadServeConfig(nil, mapEnv(map[string]string{name: raw}), io.Discard)
			if !check(cfg) {
				t.Errorf("%s=%s did not reach Config.%s", name, raw, s.field)
			}
		}
		if s.flag != "" {
			cfg, _ := loadServeConfig([]string{"--" + s.flag + "=" + raw}, mapEnv(nil), io.Discard)
			if !check(cfg) {
				t.Errorf("--%s=%s did not reach Config.%s", s.flag, raw, s.field)
			}
		}
	}
}

func TestDurationsTakeBareSecondsEverywhere(t *testing.T) {
	for _, s := range settings {
		if _, ok := reflect.ValueOf(server.Config{}).FieldByName(s.field).Interface().(time.Duration); !ok {
			continue
		}
		get := func(c server.Config) time.Duration {
			return time.Duration(reflect.ValueOf(c).FieldByName(s.field).Int())
		}
		for _, raw := range []string{"90", "90s", "1m30s", "1.5m", "90.0"} {
			if s.flag != "" {
				cfg, err := loadServeConfig([]string{"--" + s.flag, raw}, mapEnv(nil), io.Discard)
				if got := get(cfg); got != 90*time.Second {
					t.Errorf("--%s %s gave %s (%v), want 1m30s", s.flag, raw, got, err)
				}
			}
			want := 90 * time.Second
			if s.envUnit != 0 && !strings.ContainsAny(raw, "sm") {
				want = 90 * s.envUnit
			}
			cfg, err := loadServeConfig(nil, mapEnv(map[string]string{s.env[0]: raw}), io.Discard)
			if got := get(cfg); got != want {
				t.Errorf("%s=%s gave %s (%v), want %s", s.env[0], raw, got, err, want)
			}
		}
	}
}

func TestSessionExpireHoursStaysInHours(t *testing.T) {
	cfg, err := loadServeConfig(nil, mapEnv(map[string]string{"SESSION_EXPIRE_HOURS": "1.5"}), io.Discard)
	if err != nil || cfg.SessionExpire != 90*time.Minute {
		t.Fatalf("SESSION_EXPIRE_HOURS=1.5: %s, %v", cfg.SessionExpire, err)
	}
	_, err = loadServeConfig(nil, mapEnv(map[string]string{"SESSION_EXPIRE_HOURS": "0"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SESSION_EXPIRE_HOURS") {
		t.Fatalf("SESSION_EXPIRE_HOURS=0: %v", err)
	}
}

// TestBooleansHaveOneParser checks that a variable, a serve flag and the
// client commands' variable read the same words the same way, and refuse
// the same words.
func TestBooleansHaveOneParser(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
		ok   bool
	}{
		{"true", true, true}, {"TRUE", true, true}, {"1", true, true}, {"yes", true, true}, {"on", true, true},
		{"false", false, true}, {"0", false, true}, {"No", false, true}, {"off", false, true},
		{"maybe", false, false}, {"nope", false, false}, {"2", false, false},
	} {
		fromEnv, envErr := loadServeConfig(nil, mapEnv(map[string]string{"GUEST_MODE_ENABLED": tc.raw}), io.Discard)
		fromFlag, flagErr := loadServeConfig([]string{"--guest-mode=" + tc.raw}, mapEnv(nil), io.Discard)
		if (envErr == nil) != tc.ok || (flagErr == nil) != tc.ok {
			t.Errorf("%q: environment error %v, flag error %v; want accepted=%v", tc.raw, envErr, flagErr, tc.ok)
			continue
		}
		if tc.ok && (fromEnv.GuestMode != tc.want || fromFlag.GuestMode != tc.want) {
			t.Errorf("%q: environment %v, flag %v, want %v", tc.raw, fromEnv.GuestMode, fromFlag.GuestMode, tc.want)
		}
		// token check reads COMFYUI_AUTH_ACCEPT_HASH_TOKEN with the same
		// parser: a refused word is a usage error (2), not a silent default.
		var stderr bytes.Buffer
		code := runTokenCheck([]string{"--hash-file", "/nonexistent", "--token", "x"}, strings.NewReader(""),
			mapEnv(map[string]string{"COMFYUI_AUTH_ACCEPT_HASH_TOKEN": tc.raw}), io.Discard, &stderr)
		if (code == 2) == tc.ok {
			t.Errorf("token check with COMFYUI_AUTH_ACCEPT_HASH_TOKEN=%q: exit %d (%s)", tc.raw, code, stderr.String())
		}
		if !tc.ok && !strings.Contains(stderr.String(), "COMFYUI_AUTH_ACCEPT_HASH_TOKEN") {
			t.Errorf("token check's message does not name the variable: %q", stderr.String())
		}
	}
}

// TestValueThatWouldBeReplacedIsRefused: a zero a constructor used to swap
// for its own default is now refused with a sentence naming the flag as
// typed and its variable, whether it came from a flag or the environment.
func TestValueThatWouldBeReplacedIsRefused(t *testing.T) {
	for _, tc := range []struct{ flag, env, raw string }{
		{"bcrypt-queue", "COMFYUI_AUTH_BCRYPT_QUEUE", "0"},
		{"bcrypt-workers", "COMFYUI_AUTH_BCRYPT_WORKERS", "0"},
		{"bcrypt-max-wait", "COMFYUI_AUTH_BCRYPT_MAX_WAIT", "0"},
		{"poll-interval", "COMFYUI_AUTH_POLL_INTERVAL", "0"},
		{"poll-interval", "COMFYUI_AUTH_POLL_INTERVAL", "-1s"},
		{"throttle-window", "COMFYUI_AUTH_THROTTLE_WINDOW", "0"},
		{"throttle-lock", "COMFYUI_AUTH_THROTTLE_LOCK", "0"},
		{"upstream-timeout", "COMFYUI_AUTH_UPSTREAM_TIMEOUT", "0"},
		{"shutdown-timeout", "COMFYUI_AUTH_SHUTDOWN_TIMEOUT", "-5"},
		{"max-login-attempts", "MAX_LOGIN_ATTEMPTS", "-1"},
		{"log-level", "COMFYUI_AUTH_LOG_LEVEL", "loud"},
	} {
		for _, how := range []string{"flag", "env"} {
			var args []string
			environ := map[string]string{}
			if how == "flag" {
				args = []string{"--" + tc.flag, tc.raw}
			} else {
				environ[tc.env] = tc.raw
			}
			_, err := loadServeConfig(args, mapEnv(environ), io.Discard)
			if err == nil {
				t.Errorf("%s %s=%s accepted", how, tc.flag, tc.raw)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, "--"+tc.flag+" ") || !strings.Contains(msg, tc.env) {
				t.Errorf("%s %s=%s: %q does not name --%s and %s", how, tc.flag, tc.raw, msg, tc.flag, tc.env)
			}
		}
	}
}

func TestUsageErrorsNameTheFlagAsTyped(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bcrypt-queue", "many"}, `--bcrypt-queue (COMFYUI_AUTH_BCRYPT_QUEUE): "many" is not a whole number`},
		{[]string{"--poll-interval=soon"}, `--poll-interval (COMFYUI_AUTH_POLL_INTERVAL): "soon" is not a duration`},
		{[]string{"--guest-mode=maybe"}, `--guest-mode (GUEST_MODE_ENABLED): "maybe" is not true or false`},
		{[]string{"--lisen", "x"}, "unknown flag --lisen"},
		{[]string{"-lisen", "x"}, "unknown flag -lisen"},
		{[]string{"--listen"}, "--listen needs a value"},
	} {
		_, err := loadServeConfig(tc.args, mapEnv(nil), io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want it to start %q", tc.args, err, tc.want)
		}
	}
}

// TestServeRefusesAZeroQueueThroughTheCommand runs the real command: on the
// old code --bcrypt-queue 0 started a gateway with a queue of 64.
func TestServeRefusesAZeroQueueThroughTheCommand(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"serve", "--listen", "127.0.0.1:0", "--bcrypt-queue", "0"}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "--bcrypt-queue (COMFYUI_AUTH_BCRYPT_QUEUE): must be at least 1, got 0") {
		t.Fatalf("stderr %q", stderr.String())
	}
}

func TestServeHelpIsTheSettingsTable(t *testing.T) {
	var stderr bytes.Buffer
	_, err := loadServeConfig([]string{"--help"}, mapEnv(nil), &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := stderr.String()
	for _, s := range settings {
		line := ""
		for _, l := range strings.Split(help, "\n") {
			for _, w := range strings.Fields(l) {
				if strings.TrimSuffix(w, ",") == s.env[0] {
					line = l
				}
			}
		}
		if line == "" || (s.flag != "" && !strings.Contains(line, "--"+s.flag)) || !strings.Contains(line, s.shown()) {
			t.Errorf("--help has no line with %s and default %q:\n%s", s.names(), s.shown(), help)
		}
	}
}

func TestHealthcheckReadsTheListenPortThroughTheLookup(t *testing.T) {
	for env, want := range map[string]string{
		"":               "http://127.0.0.1:8188/readyz",
		"0.0.0.0:9999":   "http://127.0.0.1:9999/readyz",
		"not-an-address": "http://127.0.0.1:8188/readyz",
	} {
		m := map[string]string{}
		if env != "" {
			m["COMFYUI_AUTH_LISTEN"] = env
		}
		if got := defaultHealthURL(mapEnv(m)); got != want {
			t.Errorf("COMFYUI_AUTH_LISTEN=%q: %s, want %s", env, got, want)
		}
	}
}

func TestParseDurationRefusesWhatIsNotADuration(t *testing.T) {
	for _, s := range []string{"", "soon", "NaN", "Inf", "1e300", "5 s"} {
		if d, err := parseDuration(s); err == nil {
			t.Errorf("parseDuration(%q) = %s, want an error", s, d)
		}
	}
}

// TestEveryCommandsHelpPrintsCleanly: the shared flag values must answer
// flag.PrintDefaults' String call on a zero value without panicking.
func TestEveryCommandsHelpPrintsCleanly(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--help"}, {"probe", "--help"}, {"healthcheck", "--help"},
		{"token", "generate", "--help"}, {"token", "rotate", "--help"}, {"token", "check", "--help"},
	} {
		var out bytes.Buffer
		if code := run(args, &out, &out); code != 0 || strings.Contains(out.String(), "panic") {
			t.Errorf("%q: exit %d\n%s", args, code, out.String())
		}
	}
}
