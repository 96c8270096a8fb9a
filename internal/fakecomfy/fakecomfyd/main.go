// Command fakecomfyd runs the fake ComfyUI as a process, for end-to-end tests
// that start the gateway and its upstream the way a deployment does. It takes
// ComfyUI's main.py command line: --listen and --port are honoured,
// --max-upload-size and --multi-user too (users.json starts empty, in memory),
// and every other ComfyUI flag is accepted and ignored
// so a compose file or entrypoint written for the real ComfyUI runs unchanged.
//
// --fake-broadcast-every D is the fake's own flag, for the websocket
// benchmark: every D it broadcasts a small `bench_tick` frame carrying the
// send time, so a client can measure delivery latency through the gateway.
//
// --enable-cors-header is ignored on purpose: in ComfyUI it switches the
// origin check off, and the gateway must work with the check on.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

type config struct {
	listen        []string
	port          int
	maxUploadSize int64
	broadcast     time.Duration
	multiUser     bool
}

// parseArgs reads main.py's flags. "--listen" alone means "0.0.0.0,::", as
// in ComfyUI. An unknown "--flag" takes the next argument as its value unless
// that argument starts with "-", so both "--preview-method auto" and
// "--use-split-cross-attention" are skipped whole.
func parseArgs(args []string) (config, error) {
	cfg := config{listen: []string{"127.0.0.1"}, port: 8188}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			continue // a stray value; ComfyUI has no positional arguments
		}
		if arg == "--multi-user" {
			cfg.multiUser = true // a switch: the next argument is not its value
			continue
		}
		name, value, hasValue := strings.Cut(arg, "=")
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value, hasValue = args[i+1], true
			i++
		}
		switch name {
		case "--listen":
			if !hasValue {
				value = "0.0.0.0,::"
			}
			cfg.listen = strings.Split(value, ",")
		case "--port":
			p, err := strconv.Atoi(value)
			if err != nil || p < 0 || p > 65535 {
				return cfg, fmt.Errorf("--port %q: want a number from 0 to 65535", value)
			}
			cfg.port = p
		case "--max-upload-size":
			mb, err := strconv.ParseFloat(value, 64)
			if err != nil || mb <= 0 {
				return cfg, fmt.Errorf("--max-upload-size %q: want a size in MB, such as 100", value)
			}
			cfg.maxUploadSize = int64(mb * 1024 * 1024)
		case "--fake-broadcast-every":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return cfg, fmt.Errorf("--fake-broadcast-every %q: want a positive duration, such as 1s", value)
			}
			cfg.broadcast = d
		}
	}
	return cfg, nil
}

// network picks tcp4 or tcp6 for an IP literal so "0.0.0.0,::" binds both
// families on one port instead of colliding on a dual-stack socket.
func network(host string) string {
	addr, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "tcp"
	case addr.Is4():
		return "tcp4"
	default:
		return "tcp6"
	}
}

func run() error {
	cfg, err := parseArgs(os.Args[1:])
	if err != nil {
		return err
	}
	fake := fakecomfy.New(fakecomfy.Options{
		MaxUploadSize: cfg.maxUploadSize,
		MultiUser:     cfg.multiUser,
		Argv:          append([]string{"main.py"}, os.Args[1:]...),
	})
	defer fake.Close()
	// No ReadTimeout or WriteTimeout: they would cut slow uploads, long
	// downloads and idle websockets, which ComfyUI does not.
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}

	var listeners []net.Listener
	var urls []string
	for _, host := range cfg.listen {
		host = strings.TrimSpace(host)
		ln, err := net.Listen(network(host), net.JoinHostPort(host, strconv.Itoa(cfg.port)))
		if err != nil {
			return fmt.Errorf("listen on %s port %d: %w", host, cfg.port, err)
		}
		listeners = append(listeners, ln)
		urls = append(urls, "http://"+ln.Addr().String())
	}

	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { errc <- srv.Serve(ln) }()
	}
	fmt.Fprintf(os.Stderr, "fake ComfyUI listening on %s\n", strings.Join(urls, ", "))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if cfg.broadcast > 0 {
		go tick(ctx, fake, cfg.broadcast)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	fake.Close() // websockets are hijacked: Shutdown would not close them
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// tick broadcasts the send time every d until ctx is done.
func tick(ctx context.Context, fake *fakecomfy.Server, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fake.Broadcast(map[string]any{"type": "bench_tick", "data": map[string]int64{"sent_unix_nano": time.Now().UnixNano()}})
		}
	}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "fakecomfyd: %v\n", err)
		os.Exit(1)
	}
}
