package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// runHealthcheck asks the gateway's /readyz and exits 0 when it answers 200.
// Docker's HEALTHCHECK runs it, so the image needs no curl.
func runHealthcheck(args []string, getenv env, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", defaultHealthURL(getenv), "readiness `URL` to probe")
	timeout := durationFlag(fs, "timeout", 5*time.Second, "give up after this `long`")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(*url)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %s did not answer: %v\n", *url, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: %s answered %d: %s\n", *url, resp.StatusCode, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintf(stdout, "healthy: %s\n", strings.TrimSpace(string(body)))
	return 0
}

// defaultHealthURL probes the port the gateway listens on, from the same
// setting (variable and default), on loopback.
func defaultHealthURL(getenv env) string {
	cfg := defaultConfig()
	s, _ := settingFor("Listen")
	for _, name := range s.env {
		if v, ok := getenv(name); ok && v != "" {
			cfg.Listen = v
			break
		}
	}
	_, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil || port == "" {
		_, port, _ = net.SplitHostPort(defaultConfig().Listen)
	}
	return "http://127.0.0.1:" + port + "/readyz"
}
