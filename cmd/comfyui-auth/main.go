// Command comfyui-auth is the authenticating gateway in front of ComfyUI:
// `comfyui-auth serve` runs it, `comfyui-auth healthcheck` probes it for
// Docker's HEALTHCHECK, and `token`, `hash` and `probe` make, rotate and
// diagnose the credentials.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/server"
	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `comfyui-auth: an authenticating gateway in front of ComfyUI

Usage:
  comfyui-auth serve [flags]         run the gateway (see serve --help)
  comfyui-auth healthcheck [--url U] exit 0 when the gateway is ready, 1 otherwise
  comfyui-auth entrypoint            container entrypoint: run ComfyUI on loopback and the gateway
  comfyui-auth token generate        make a raw token (.env.generated) and its bcrypt hash file
  comfyui-auth token rotate          add a new token beside the old one, then retire the old one
  comfyui-auth token check           say whose a token is, or why the hash file does not accept it
  comfyui-auth token ... --user NAME a named user's token: generate, rotate, revoke (see token help)
  comfyui-auth token users           list the named users and their lines, no secret
  comfyui-auth hash                  print the bcrypt hash of a password read from stdin
  comfyui-auth probe --url U         call a running gateway and explain its answer (401, 502, ...)
  comfyui-auth version               print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit code: 0 success, 1 a
// failure or negative finding, 2 a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stderr)
	case "healthcheck":
		return runHealthcheck(args[1:], os.LookupEnv, stdout, stderr)
	case "entrypoint":
		return runEntrypoint(args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], os.Stdin, stdout, stderr)
	case "hash":
		return runHash(args[1:], os.Stdin, stdout, stderr)
	case "probe":
		return runProbe(args[1:], os.LookupEnv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "comfyui-auth", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "comfyui-auth: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func runServe(args []string, stderr io.Writer) int {
	cfg, err := loadServeConfig(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "comfyui-auth serve: %v\n", err)
		return 2
	}
	setGCPercent(os.LookupEnv)
	logger, closeLog := newLogger(stderr, cfg.LogLevel)
	defer closeLog()
	if !cfg.AuthEnabled {
		logger.Warn().Msg("AUTHENTICATION IS OFF (COMFYUI_LOGIN_ENABLED=false): anyone who reaches this port controls ComfyUI")
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		closeLog() // the lines logged so far, then the error
		fmt.Fprintf(stderr, "comfyui-auth serve: %v\n", err)
		return 1
	}
	ln, err := srv.Listen()
	if err != nil {
		closeLog()
		fmt.Fprintf(stderr, "comfyui-auth serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil {
		logger.Error().Err(err).Msg("gateway stopped")
		return 1
	}
	return 0
}

// defaultGCPercent is the garbage collector's target when GOGC is unset.
// Each proxied request allocates several KB of short-lived net/http and
// ReverseProxy state over a live heap of a few MiB, so at Go's default of
// 100 the collector runs dozens of times a second under load. 200 lets the
// heap grow to three times what is live instead of two, which cut the CPU
// per proxied small GET by 7 % (BenchmarkProxySmallGET); an idle gateway
// stays around 15 MiB. GOGC, when set, wins.
const defaultGCPercent = 200

func setGCPercent(lookupEnv func(string) (string, bool)) {
	if _, set := lookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// newLogger writes JSON, or a readable console format when stderr is a
// terminal (a person running it by hand), at level (a name Config.Validate
// accepted). JSON lines are buffered (see logBuffer); the returned close
// writes out what is held and must run before exit and before anything
// else is printed to w.
func newLogger(w io.Writer, level string) (zerolog.Logger, func()) {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	closeLog := func() {}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	} else {
		b := newLogBuffer(w)
		w, closeLog = b, b.Close
	}
	l, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil {
		l = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(l).With().Timestamp().Logger(), closeLog
}
