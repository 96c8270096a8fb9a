package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/comfyui-auth/comfyui-auth/server"
)

// env looks up an environment variable; tests pass a map instead of the
// process environment.
type env func(string) (string, bool)

// loadServeConfig fills a server.Config from the settings table: defaults,
// then the environment, then flags (a flag wins over its variable), then
// Validate. Every error names the flag and variable a person sets.
func loadServeConfig(args []string, getenv env, stderr io.Writer) (server.Config, error) {
	cfg := defaultConfig()
	if err := applyEnv(&cfg, getenv, settings); err != nil {
		return cfg, err
	}

	fs := flag.NewFlagSet("comfyui-auth serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are rewritten below, help is ours
	fs.Usage = func() {}
	var bad *flagSetError
	for _, s := range settings {
		if s.flag != "" {
			fs.Var(recordingValue{s.value(&cfg, false), s, &bad}, s.flag, s.help)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			serveUsage(stderr)
			return cfg, err
		}
		return cfg, flagError(err, bad, args)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (flags start with --; see comfyui-auth serve --help)", fs.Arg(0))
	}
	if err := cfg.Validate(); err != nil {
		var fe *server.FieldError
		if errors.As(err, &fe) {
			if s, ok := settingFor(fe.Field); ok {
				return cfg, fmt.Errorf("%s: %s", s.names(), fe.Reason)
			}
		}
		return cfg, err
	}
	return cfg, nil
}

// applyEnv sets the rows' fields from their environment variables, the
// first set and non-empty one of each row winning, and reports every value
// its parser refuses.
func applyEnv(cfg *server.Config, getenv env, rows []setting) error {
	var errs []string
	for _, s := range rows {
		for _, name := range s.env {
			v, ok := getenv(name)
			if !ok || v == "" {
				continue
			}
			if err := s.value(cfg, true).Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q %v", name, v, err))
			} else if s.sourceField != "" {
				*fieldPtr(cfg, s.sourceField) = name
			}
			break
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// acceptHashFlag defines --accept-hash-token on a client command (token
// check, probe) with the server's default and variable, so the diagnosis
// matches what the gateway beside it does.
func acceptHashFlag(fs *flag.FlagSet, getenv env) (*bool, error) {
	cfg := defaultConfig()
	s, _ := settingFor("AcceptHashToken")
	err := applyEnv(&cfg, getenv, []setting{s})
	fs.Var(s.value(&cfg, false), s.flag, "whether the server accepts the hash itself ("+strings.Join(s.env, ", ")+")")
	return &cfg.AcceptHashToken, err
}

func fieldPtr(cfg *server.Config, field string) *string {
	return setting{field: field}.value(cfg, false).(stringValue).p
}

// flagSetError is a flag value its parser refused.
type flagSetError struct {
	s   setting
	raw string
	err error
}

// recordingValue keeps the setting and raw text of a refused flag value, so
// the message can name the flag with its dashes and both of its names,
// which the flag package's own message ("-bcrypt-queue") does not.
type recordingValue struct {
	settingValue
	s   setting
	bad **flagSetError
}

func (v recordingValue) Set(raw string) error {
	err := v.settingValue.Set(raw)
	if err != nil {
		*v.bad = &flagSetError{v.s, raw, err}
	}
	return err
}

func (v recordingValue) IsBoolFlag() bool {
	b, ok := v.settingValue.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagError rewrites the flag package's errors into one sentence that names
// the flag as a person types it.
func flagError(err error, bad *flagSetError, args []string) error {
	if bad != nil {
		return fmt.Errorf("%s: %q %v", bad.s.names(), bad.raw, bad.err)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag %s (comfyui-auth serve --help lists them)", typedFlag(args, name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("%s needs a value, as in %s=VALUE", typedFlag(args, name), typedFlag(args, name))
	}
	return err
}

// typedFlag returns name with the dashes the person typed before it.
func typedFlag(args []string, name string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		n := strings.TrimLeft(a, "-")
		n, _, _ = strings.Cut(n, "=")
		if n == name && strings.HasPrefix(a, "-") {
			return a[:len(a)-len(strings.TrimLeft(a, "-"))] + name
		}
	}
	return "--" + name
}

// serveUsage is `comfyui-auth serve --help`, written from the settings table.
func serveUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: comfyui-auth serve [flags]

A flag wins over its environment variable, which wins over the default.
Durations take Go syntax (2s, 500ms, 1m) or a bare number of seconds.

`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "flag\tenvironment\tdefault\tmeaning")
	var cfg server.Config
	for _, s := range settings {
		flagCol := ""
		if s.flag != "" {
			flagCol = "--" + s.flag
			if k := s.value(&cfg, false).kind(); k != "" {
				flagCol += " " + k
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", flagCol, strings.Join(s.env, ", "), s.shown(), s.help)
	}
	tw.Flush()
}
