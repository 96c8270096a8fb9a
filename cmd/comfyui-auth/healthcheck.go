package main

import (
	"encoding/json"
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
		fmt.Fprintf(stderr, "unhealthy: %s answered %d: %s\n", *url, resp.StatusCode, readyzSummary(body))
		return 1
	}
	fmt.Fprintf(stdout, "healthy: %s\n", readyzSummary(body))
	return 0
}

// readyzSummary turns a /readyz body into one line: the status word and,
// when the gateway gave them (to a loopback caller such as this command
// inside the container), the reason and the state of each part. Anything
// else is printed as it came.
func readyzSummary(body []byte) string {
	var r struct {
		Status      string `json:"status"`
		Reason      string `json:"reason"`
		Credentials string `json:"credentials"`
		Upstream    string `json:"upstream"`
	}
	if json.Unmarshal(body, &r) != nil || r.Status == "" {
		return strings.TrimSpace(string(body))
	}
	out := r.Status
	if r.Reason != "" {
		out += ": " + r.Reason
	}
	if r.Credentials == "" && r.Upstream == "" {
		if r.Status != "ready" {
			out += " (the gateway gives details only to loopback and authenticated callers: run `comfyui-auth healthcheck` inside the container, or read the gateway's log)"
		}
		return out
	}
	return out + " (credentials: " + r.Credentials + "; upstream: " + r.Upstream + ")"
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
