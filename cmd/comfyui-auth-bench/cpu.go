package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/comfyui-auth/comfyui-auth/server"
)

// The cpu scenario measures the gateway's CPU per proxied small GET, read
// from /proc/<pid>/stat (user+system) around a fixed-length load, for:
//   - "old": the gateway built with -tags comfyui_auth_plain_transport,
//     which proxies through http.Transport;
//   - "new": the gateway as shipped, with its synchronous upstream pool;
//   - "floor 1": this binary re-executed as floorRelayCmd, a bare net/http
//     server that relays through the same pool, with no authentication,
//     access log or ReverseProxy: what any Go proxy of this design pays.
//
// The variants run one after the other, interleaved, for cpuRounds
// rounds; the median of the rounds is reported. It runs only when named in
// -only (it adds a minute and a half).

const floorRelayCmd = "floor-relay"

const cpuRounds = 3

type cpuCell struct {
	Variant   string    `json:"variant"`
	USPerReq  []float64 `json:"us_per_request_rounds"`
	Median    float64   `json:"us_per_request_median"`
	RatioFl1  float64   `json:"ratio_to_floor1"`
	RPS       float64   `json:"rps_last_round"`
	Errors    int64     `json:"errors"`
	NonOK     int64     `json:"non_200"`
	Requests  int64     `json:"requests"`
	LoadNotes string    `json:"load,omitempty"`
}

// floorRelay runs the floor-1 relay: floor-relay LISTEN UPSTREAM.
func floorRelay(args []string) {
	fs := flag.NewFlagSet(floorRelayCmd, flag.ExitOnError)
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: comfyui-auth-bench floor-relay LISTEN UPSTREAM_URL")
		os.Exit(2)
	}
	up, err := url.Parse(fs.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The floor must not lose where the gateway does not: the same GC
	// target as comfyui-auth serve (200 unless GOGC is set), and pooled
	// copy buffers.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(200)
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	rt, closePool := server.NewUpstreamTransport(up, 120*time.Second)
	defer closePool()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = up.Scheme, up.Host, "", ""
		if r.ContentLength == 0 {
			out.Body = nil
		}
		resp, err := rt.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vv := range resp.Header {
			w.Header()[k] = vv
		}
		w.WriteHeader(resp.StatusCode)
		// Not io.Copy: the ResponseWriter's ReadFrom would flush the
		// headers in a write of their own before a small body.
		buf := bufs.Get().(*[]byte)
		_, _ = io.CopyBuffer(struct{ io.Writer }{w}, resp.Body, *buf)
		bufs.Put(buf)
	})
	srv := &http.Server{Addr: fs.Arg(0), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// cpuPerRequest runs the cpu scenario against the fake ComfyUI at upURL.
func (b *bench) cpuPerRequest(upURL, hashFile, raw string) ([]cpuCell, error) {
	oldBin := filepath.Join(b.dir, "comfyui-auth-plain-transport")
	cmd := exec.Command(goBinary(), "build", "-tags", "comfyui_auth_plain_transport", "-o", oldBin, "./cmd/comfyui-auth")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the http.Transport gateway: %w: %s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if procs := os.Getenv("CPU_BENCH_GOMAXPROCS"); procs != "" {
		// The measured processes only: the load generator and the fake
		// ComfyUI keep theirs.
		os.Setenv("GOMAXPROCS", procs)
		defer os.Unsetenv("GOMAXPROCS")
	}
	newGW, err := b.startGateway("cpu-new", upURL, hashFile)
	if err != nil {
		return nil, err
	}
	defer newGW.stop()
	saved := b.gatewayBin
	b.gatewayBin = oldBin
	oldGW, err := b.startGateway("cpu-old", upURL, hashFile)
	b.gatewayBin = saved
	if err != nil {
		return nil, err
	}
	defer oldGW.stop()
	port := freePort()
	floor, err := startProc("cpu-floor1", filepath.Join(b.dir, "cpu-floor1.log"),
		self, floorRelayCmd, fmt.Sprintf("127.0.0.1:%d", port), upURL)
	if err != nil {
		return nil, err
	}
	defer floor.stop()
	floorURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHTTP(floorURL+"/system_stats", 200, 10*time.Second); err != nil {
		return nil, fmt.Errorf("floor relay: %w", err)
	}

	type variant struct {
		name, url string
		pid       int
		auth      bool
	}
	variants := []variant{
		{"gateway, http.Transport (old)", oldGW.url, oldGW.pid(), true},
		{"gateway, sync pool (new)", newGW.url, newGW.pid(), true},
		{"floor 1: net/http + sync pool", floorURL, floor.pid(), false},
	}
	dur := 10 * time.Second
	if b.quick {
		dur = time.Second
	}
	cells := make([]cpuCell, len(variants))
	for round := 0; round < cpuRounds; round++ {
		for i, v := range variants {
			h := http.Header{}
			if v.auth {
				h.Set("Authorization", "Bearer "+raw)
			}
			before := cpuSeconds(v.pid)
			res := runLoad(loadSpec{url: v.url + "/system_stats", header: h, conc: 16, dur: dur, maxReq: 1 << 62})
			used := cpuSeconds(v.pid) - before
			c := &cells[i]
			c.Variant = v.name
			if res.Requests > 0 {
				c.USPerReq = append(c.USPerReq, used/float64(res.Requests)*1e6)
			}
			c.RPS = res.RPS
			c.Errors += res.Errors
			c.Requests += res.Requests
			for code, n := range res.Codes {
				if code != 200 {
					c.NonOK += n
				}
			}
			b.logf("  round %d %-32s %6.1f µs/req  %7.0f req/s", round+1, v.name, c.USPerReq[len(c.USPerReq)-1], res.RPS)
		}
	}
	for i := range cells {
		cells[i].Median = median(cells[i].USPerReq)
	}
	floorMed := cells[len(cells)-1].Median
	for i := range cells {
		if floorMed > 0 {
			cells[i].RatioFl1 = cells[i].Median / floorMed
		}
	}
	return cells, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func moduleRoot() string {
	out, err := exec.Command(goBinary(), "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// cpuTable renders the cpu scenario as Markdown.
func cpuTable(cells []cpuCell, load string) string {
	var sb strings.Builder
	sb.WriteString("| variant | CPU µs per request (median) | rounds | ratio to floor 1 | req/s (last round) | errors | non-200 |\n")
	sb.WriteString("|---|---:|---|---:|---:|---:|---:|\n")
	for _, c := range cells {
		rounds := make([]string, len(c.USPerReq))
		for i, v := range c.USPerReq {
			rounds[i] = fmt.Sprintf("%.1f", v)
		}
		fmt.Fprintf(&sb, "| %s | %.1f | %s | %.2f× | %.0f | %d | %d |\n",
			c.Variant, c.Median, strings.Join(rounds, ", "), c.RatioFl1, c.RPS, c.Errors, c.NonOK)
	}
	if len(cells) >= 2 && len(cells[0].USPerReq) == len(cells[1].USPerReq) {
		// Rounds run back to back, so each pair shared the machine's load;
		// the paired change is steadier than the change of the medians.
		pairs := make([]string, len(cells[0].USPerReq))
		for i := range pairs {
			pairs[i] = fmt.Sprintf("%+.0f %%", (cells[1].USPerReq[i]/cells[0].USPerReq[i]-1)*100)
		}
		fmt.Fprintf(&sb, "\n%s against %s, round by round: %s.\n", cells[1].Variant, cells[0].Variant, strings.Join(pairs, ", "))
	}
	if load != "" {
		fmt.Fprintf(&sb, "\nLoad average when the scenario began and ended: %s.\n", load)
	}
	return sb.String()
}

// loadAvg is the 1-, 5- and 15-minute load average, to say whether other
// work shared the machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
