package main

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The peers scenario puts each proxy a user could run in front of ComfyUI
// side by side, for a small GET /system_stats at a fixed concurrency, and
// reports, per proxy, req/s and the proxy's own CPU per request: the
// user+system time of its process tree (nginx's master and workers) from
// /proc, over the measured window, divided by the requests answered. CPU
// per request, unlike req/s, hardly depends on what else the two shared
// CPUs are doing, so it is the figure the goal is set on.
//
// Targets, each on loopback in front of the same fake ComfyUI:
//   - direct: the fake ComfyUI itself (no proxy, so no proxy CPU);
//   - nginx: Debian's nginx, no authentication, no access log;
//   - comfyui-auth: the gateway with its access log, a cached raw token;
//   - comfyui-auth, no access log: the same at --log-level warn, to show
//     what the access log costs;
//   - comfyui-auth (baseline): -baseline BIN, the same with another build,
//     for a before/after in one run;
//   - floor 1: net/http plus the gateway's upstream pool, nothing else;
//   - Caddy: Debian's caddy, reverse_proxy behind basicauth (bcrypt, the
//     same cost-12 hash, which Caddy's Caddyfile adapter caches);
//   - oauth2-proxy v7 with an htpasswd file: its Basic-auth session loader
//     lets an API request through without the browser flow. It runs a
//     bcrypt comparison on every request (no cache), so its entry is
//     {SHA}, its cheapest scheme: the comparison is of the proxies, not of
//     oauth2-proxy's bcrypt.
//
// Each round runs every target once, in an order rotated by one each round
// so no target always follows the same one; the ratios (× nginx, × floor 1)
// are taken within each round and their median reported, as each round's
// targets shared the machine's load of that moment.
const peersRounds = 5

// peerTarget is one proxy under measurement.
type peerTarget struct {
	name string
	url  string
	// header is what an authenticated client sends.
	header http.Header
	// pid is the proxy's root process (0: no proxy to measure).
	pid int
}

// peerRound is one target's measure in one round.
type peerRound struct {
	RPS       float64 `json:"rps"`
	Requests  int64   `json:"requests"`
	CPUTicks  int64   `json:"proxy_cpu_ticks"`
	UpTicks   int64   `json:"upstream_cpu_ticks"`
	USPerReq  float64 `json:"proxy_cpu_us_per_request"`
	UpUSPer   float64 `json:"upstream_cpu_us_per_request"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	Errors    int64   `json:"errors"`
	NonOK     int64   `json:"non_2xx"`
	VsNginx   float64 `json:"rps_vs_nginx,omitempty"`
	VsFloor1  float64 `json:"cpu_vs_floor1,omitempty"`
	Order     int     `json:"order_in_round"`
	LoadStart string  `json:"load_average_at_start"`
}

// peerCell is one target over all rounds.
type peerCell struct {
	Target    string      `json:"target"`
	Note      string      `json:"note,omitempty"`
	Rounds    []peerRound `json:"rounds"`
	RPS       float64     `json:"rps_median"`
	USPerReq  float64     `json:"proxy_cpu_us_per_request_median"`
	UpUSPer   float64     `json:"upstream_cpu_us_per_request_median"`
	VsNginx   float64     `json:"rps_vs_nginx_median"`
	VsFloor1  float64     `json:"cpu_vs_floor1_median"`
	P50       float64     `json:"p50_us_median"`
	Errors    int64       `json:"errors"`
	NonOK     int64       `json:"non_2xx"`
	NA        string      `json:"na,omitempty"`
	hasProxy  bool
	isNginx   bool
	isFloor1  bool
	rpsRounds []float64
}

// peersResult is the scenario's record in benchmarks.json.
type peersResult struct {
	LoadGen     string     `json:"load_generator"`
	Conc        int        `json:"concurrency"`
	RoundSecs   float64    `json:"round_seconds"`
	Rounds      int        `json:"rounds"`
	Cells       []peerCell `json:"targets"`
	LoadBefore  string     `json:"load_average_before"`
	LoadAfter   string     `json:"load_average_after"`
	CommandLine string     `json:"command_line"`
	Notes       []string   `json:"notes,omitempty"`
}

// peersSpec is how the scenario is run (flags).
type peersSpec struct {
	loadGen  string // "wrk" or "go"
	conc     int
	roundDur time.Duration
	rounds   int
	baseline string // a prebuilt gateway to measure beside this build
}

// peers runs the scenario. upstream is the fake ComfyUI's process, ng
// nginx's (nil when missing), gw the gateway (this build).
func (b *bench) peers(spec peersSpec, up *proc, upURL string, ng *proc, ngURL string, gw *gatewayProc, hashFile, h12, raw string) (*peersResult, error) {
	res := &peersResult{LoadGen: spec.loadGen, Conc: spec.conc, RoundSecs: spec.roundDur.Seconds(), Rounds: spec.rounds,
		CommandLine: strings.Join(os.Args, " ")}
	bearer := http.Header{"Authorization": {"Bearer " + raw}}
	basic := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("bench:"+raw))}}
	targets := []peerTarget{{name: "direct", url: upURL}}
	cells := []peerCell{{Target: "direct", Note: "the fake ComfyUI, no proxy"}}
	add := func(t peerTarget, note string, na string) {
		targets = append(targets, t)
		cells = append(cells, peerCell{Target: t.name, Note: note, NA: na, hasProxy: true})
	}
	if ng != nil {
		add(peerTarget{name: "nginx", url: ngURL, pid: ng.pid()}, "no auth, no access log, upstream keep-alive", "")
		cells[len(cells)-1].isNginx = true
	} else {
		add(peerTarget{name: "nginx"}, "", "nginx not available")
		cells[len(cells)-1].isNginx = true
	}
	add(peerTarget{name: "comfyui-auth", url: gw.url, header: bearer, pid: gw.pid()},
		"auth (cached raw Bearer token) + access log", "")
	// The same build with the access log off: what the log itself costs,
	// measured beside the rest.
	quiet, err := b.startGateway("peers-nolog", upURL, hashFile, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer quiet.stop()
	add(peerTarget{name: "comfyui-auth, no access log", url: quiet.url, header: bearer, pid: quiet.pid()},
		"the same with --log-level warn", "")
	if spec.baseline != "" {
		saved := b.gatewayBin
		b.gatewayBin = spec.baseline
		base, err := b.startGateway("peers-baseline", upURL, hashFile)
		b.gatewayBin = saved
		if err != nil {
			return nil, fmt.Errorf("baseline gateway %s: %w", spec.baseline, err)
		}
		defer base.stop()
		add(peerTarget{name: "comfyui-auth (baseline)", url: base.url, header: bearer, pid: base.pid()},
			"the same, built from "+spec.baseline, "")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fport := freePort()
	floor, err := startProc("peers-floor1", filepath.Join(b.dir, "peers-floor1.log"),
		self, floorRelayCmd, fmt.Sprintf("127.0.0.1:%d", fport), upURL)
	if err != nil {
		return nil, err
	}
	defer floor.stop()
	floorURL := fmt.Sprintf("http://127.0.0.1:%d", fport)
	if err := waitHTTP(floorURL+smallPath, 200, 10*time.Second); err != nil {
		return nil, fmt.Errorf("floor relay: %w", err)
	}
	add(peerTarget{name: "floor 1", url: floorURL, pid: floor.pid()}, "net/http + the upstream pool; no auth, log or ReverseProxy", "")
	cells[len(cells)-1].isFloor1 = true

	if caddy, u, err := b.startCaddy(upURL, h12, raw); err != nil {
		b.logf("  Caddy skipped: %v", err)
		add(peerTarget{name: "Caddy"}, "", err.Error())
		res.Notes = append(res.Notes, "Caddy: "+err.Error())
	} else {
		defer caddy.stop()
		add(peerTarget{name: "Caddy", url: u, header: basic, pid: caddy.pid()},
			caddyVersion()+" reverse_proxy + basicauth (bcrypt cost 12, cached), no access log", "")
	}
	if o2p, u, err := b.startOAuth2Proxy(upURL, raw); err != nil {
		b.logf("  oauth2-proxy skipped: %v", err)
		add(peerTarget{name: "oauth2-proxy"}, "", err.Error())
		res.Notes = append(res.Notes, "oauth2-proxy: "+err.Error())
	} else {
		defer o2p.stop()
		add(peerTarget{name: "oauth2-proxy", url: u, header: basic, pid: o2p.pid()},
			oauth2ProxyVersion+" --htpasswd-file ({SHA} entry), request log on; its upstream transport keeps Go's default 2 idle connections", "")
	}

	wrkBin := ""
	if spec.loadGen == "wrk" {
		if wrkBin = findWrk(b.logf); wrkBin == "" {
			b.logf("  wrk not found: using the Go load generator")
			spec.loadGen, res.LoadGen = "go", "go (wrk not found)"
		}
	}
	measure := func(t peerTarget, dur time.Duration) (peerRound, error) {
		var r peerRound
		r.LoadStart = loadAvg()
		p0, _ := procTreeTicks("/proc", t.pid)
		u0, _ := procTreeTicks("/proc", up.pid())
		switch spec.loadGen {
		case "wrk":
			w, err := runWrk(wrkBin, t.url+smallPath, t.header, spec.conc, dur)
			if err != nil {
				return r, err
			}
			r.RPS, r.Requests, r.P50, r.P99, r.Errors, r.NonOK = w.RPS, w.Requests, w.P50us, w.P99us, w.SocketErrors, w.NonOK
		default:
			g := runLoad(loadSpec{url: t.url + smallPath, header: t.header, conc: spec.conc, dur: dur, maxReq: 1 << 62})
			r.RPS, r.Requests, r.Errors = g.RPS, g.Requests, g.Errors
			r.P50, r.P99 = float64(g.P50)/1e3, float64(g.P99)/1e3
			for code, n := range g.Codes {
				if code < 200 || code > 299 {
					r.NonOK += n
				}
			}
		}
		p1, _ := procTreeTicks("/proc", t.pid)
		u1, _ := procTreeTicks("/proc", up.pid())
		r.CPUTicks, r.UpTicks = p1-p0, u1-u0
		if r.Requests > 0 {
			r.USPerReq = ticksToUS(r.CPUTicks) / float64(r.Requests)
			r.UpUSPer = ticksToUS(r.UpTicks) / float64(r.Requests)
		}
		return r, nil
	}

	// A short warm-up of every target: connections, caches, the Go heap.
	for _, t := range targets {
		if t.url == "" {
			continue
		}
		if _, err := measure(t, min(spec.roundDur, time.Second)); err != nil {
			return nil, fmt.Errorf("warm-up of %s: %w", t.name, err)
		}
	}
	res.LoadBefore = loadAvg()
	for round := 0; round < spec.rounds; round++ {
		for k, i := range rotatedOrder(len(targets), round) {
			t := targets[i]
			if t.url == "" {
				continue
			}
			r, err := measure(t, spec.roundDur)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", t.name, round+1, err)
			}
			r.Order = k
			cells[i].Rounds = append(cells[i].Rounds, r)
			b.logf("  round %d %-26s %8.0f req/s  proxy %6.1f µs/req  upstream %5.1f µs/req  p50 %6.0f µs  load %s",
				round+1, t.name, r.RPS, r.USPerReq, r.UpUSPer, r.P50, r.LoadStart)
		}
	}
	res.LoadAfter = loadAvg()
	summarizePeers(cells)
	res.Cells = cells
	return res, nil
}

// rotatedOrder is the order of n targets in a round: 0..n-1 rotated left
// by round.
func rotatedOrder(n, round int) []int {
	order := make([]int, n)
	for k := range order {
		order[k] = (k + round) % n
	}
	return order
}

// summarizePeers fills the medians and the within-round ratios. A round's
// ratio uses the same round's nginx and floor 1, which ran minutes apart at
// most, under the same load.
func summarizePeers(cells []peerCell) {
	var nginx, floor *peerCell
	for i := range cells {
		switch {
		case cells[i].isNginx && len(cells[i].Rounds) > 0:
			nginx = &cells[i]
		case cells[i].isFloor1 && len(cells[i].Rounds) > 0:
			floor = &cells[i]
		}
	}
	for i := range cells {
		c := &cells[i]
		var rps, cpu, up, p50, vsN, vsF []float64
		c.Errors, c.NonOK = 0, 0
		for j := range c.Rounds {
			r := &c.Rounds[j]
			rps, cpu, up, p50 = append(rps, r.RPS), append(cpu, r.USPerReq), append(up, r.UpUSPer), append(p50, r.P50)
			c.Errors += r.Errors
			c.NonOK += r.NonOK
			if nginx != nil && j < len(nginx.Rounds) && nginx.Rounds[j].RPS > 0 {
				r.VsNginx = r.RPS / nginx.Rounds[j].RPS
				vsN = append(vsN, r.VsNginx)
			}
			if c.hasProxy && floor != nil && j < len(floor.Rounds) && floor.Rounds[j].USPerReq > 0 {
				r.VsFloor1 = r.USPerReq / floor.Rounds[j].USPerReq
				vsF = append(vsF, r.VsFloor1)
			}
		}
		c.rpsRounds = rps
		c.RPS, c.UpUSPer, c.P50 = median(rps), median(up), median(p50)
		c.VsNginx, c.VsFloor1 = median(vsN), median(vsF)
		if c.hasProxy {
			c.USPerReq = median(cpu)
		}
	}
}

// peersTable renders the scenario as Markdown.
func peersTable(r *peersResult) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Load generator %s, c=%d, small GET %s, %d rounds of %s per target, order rotated each round; medians. "+
		"Ratios are taken within each round, then their median. Load average %s before the rounds, %s after.\n\n",
		r.LoadGen, r.Conc, smallPath, r.Rounds, time.Duration(r.RoundSecs*float64(time.Second)), r.LoadBefore, r.LoadAfter)
	sb.WriteString("| proxy | req/s | × nginx | proxy CPU µs/req | × floor 1 | CPU µs/req by round | ComfyUI CPU µs/req | p50 µs | errors | non-2xx | what |\n")
	sb.WriteString("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|\n")
	for _, c := range r.Cells {
		if c.NA != "" {
			fmt.Fprintf(&sb, "| %s | – | – | – | – | – | – | – | – | – | not measured: %s |\n", c.Target, c.NA)
			continue
		}
		cpu, vsF, rounds := "–", "–", "–"
		if c.hasProxy {
			cpu = fmt.Sprintf("%.1f", c.USPerReq)
			rs := make([]string, len(c.Rounds))
			for i, x := range c.Rounds {
				rs[i] = fmt.Sprintf("%.0f", x.USPerReq)
			}
			rounds = strings.Join(rs, ", ")
			if c.VsFloor1 > 0 {
				vsF = fmt.Sprintf("%.2f×", c.VsFloor1)
			}
		}
		vsN := "–"
		if c.VsNginx > 0 {
			vsN = fmt.Sprintf("%.2f", c.VsNginx)
		}
		fmt.Fprintf(&sb, "| %s | %.0f | %s | %s | %s | %s | %.1f | %.0f | %d | %d | %s |\n",
			c.Target, c.RPS, vsN, cpu, vsF, rounds, c.UpUSPer, c.P50, c.Errors, c.NonOK, c.Note)
	}
	sb.WriteString("\n")
	for _, g := range peersGoals(r.Cells) {
		fmt.Fprintf(&sb, "- %s\n", g)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&sb, "- %s\n", n)
	}
	fmt.Fprintf(&sb, "\nCommand: `%s`\n", r.CommandLine)
	return sb.String()
}

// peersGoals checks the proxy-speed goals on one run: comfyui-auth's CPU per
// request within 1.2× floor 1, and ahead of Caddy and oauth2-proxy in both
// CPU per request and req/s, counting the rounds each held in.
func peersGoals(cells []peerCell) []string {
	find := func(name string) *peerCell {
		for i := range cells {
			if cells[i].Target == name && cells[i].NA == "" && len(cells[i].Rounds) > 0 {
				return &cells[i]
			}
		}
		return nil
	}
	gw := find("comfyui-auth")
	if gw == nil {
		return nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**MISSED**"
	}
	var out []string
	if find("floor 1") != nil {
		within := 0
		for _, r := range gw.Rounds {
			if r.VsFloor1 > 0 && r.VsFloor1 <= 1.2 {
				within++
			}
		}
		out = append(out, fmt.Sprintf("CPU per request within 1.2× floor 1: %.2f× (median of rounds; %d of %d rounds within): %s",
			gw.VsFloor1, within, len(gw.Rounds), verdict(gw.VsFloor1 <= 1.2)))
	}
	for _, peer := range []string{"Caddy", "oauth2-proxy"} {
		p := find(peer)
		if p == nil {
			continue
		}
		cpuWins, rpsWins, n := 0, 0, min(len(gw.Rounds), len(p.Rounds))
		for i := 0; i < n; i++ {
			if gw.Rounds[i].USPerReq < p.Rounds[i].USPerReq {
				cpuWins++
			}
			if gw.Rounds[i].RPS > p.Rounds[i].RPS {
				rpsWins++
			}
		}
		out = append(out, fmt.Sprintf("ahead of %s: CPU/req %.1f vs %.1f µs (%d of %d rounds), req/s %.0f vs %.0f (%d of %d rounds): %s",
			peer, gw.USPerReq, p.USPerReq, cpuWins, n, gw.RPS, p.RPS, rpsWins, n, verdict(gw.USPerReq < p.USPerReq && gw.RPS > p.RPS)))
	}
	if base := find("comfyui-auth (baseline)"); base != nil {
		n := min(len(gw.Rounds), len(base.Rounds))
		pairs := make([]string, n)
		var changes []float64
		for i := 0; i < n; i++ {
			c := (gw.Rounds[i].USPerReq/base.Rounds[i].USPerReq - 1) * 100
			changes = append(changes, c)
			pairs[i] = fmt.Sprintf("%+.0f %%", c)
		}
		out = append(out, fmt.Sprintf("this build against the baseline, CPU per request round by round: %s (median %+.1f %%)",
			strings.Join(pairs, ", "), median(changes)))
	}
	return out
}

// ---- CPU accounting ----

// userHZ is the kernel's clock tick for /proc/<pid>/stat times; 100 on
// every Linux architecture Go supports.
const userHZ = 100

func ticksToUS(t int64) float64 { return float64(t) * 1e6 / userHZ }

// procStat is the part of /proc/<pid>/stat the accounting needs.
type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// parseProcStat reads a /proc/<pid>/stat line. The command name, in
// parentheses, may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseProcStat(line string) (procStat, error) {
	var s procStat
	i := strings.LastIndexByte(line, ')')
	if i < 0 || i+2 > len(line) {
		return s, errors.New("no ')' after the command name")
	}
	f := strings.Fields(line[i+1:])
	// f[0] is the state (field 3); ppid is field 4, utime 14, stime 15,
	// cutime 16, cstime 17.
	if len(f) < 15 {
		return s, fmt.Errorf("%d fields after the command name, want at least 15", len(f))
	}
	var err error
	get := func(k int) int64 {
		var v int64
		if err == nil {
			_, err = fmt.Sscan(f[k], &v)
		}
		return v
	}
	s.ppid = int(get(1))
	s.utime, s.stime, s.cutime, s.cstime = get(11), get(12), get(13), get(14)
	return s, err
}

// procTreeTicks is the CPU time, in clock ticks, of pid and of all its
// live descendants, plus what its reaped children used (cutime, cstime):
// nginx's workers are children of its master. procRoot is /proc, or a
// copy of its layout in tests. A pid of 0 is 0.
func procTreeTicks(procRoot string, pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, err
	}
	stats := map[int]procStat{}
	children := map[int][]int{}
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil || p <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		s, err := parseProcStat(string(b))
		if err != nil {
			continue
		}
		stats[p] = s
		children[s.ppid] = append(children[s.ppid], p)
	}
	root, ok := stats[pid]
	if !ok {
		return 0, fmt.Errorf("process %d not found under %s", pid, procRoot)
	}
	total := root.cutime + root.cstime
	seen := map[int]bool{}
	var walk func(p int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		s := stats[p]
		total += s.utime + s.stime
		if p != pid {
			total += s.cutime + s.cstime
		}
		for _, c := range children[p] {
			walk(c)
		}
	}
	walk(pid)
	return total, nil
}

// ---- wrk ----

// wrkResult is what the bench reads from wrk's report.
type wrkResult struct {
	Requests     int64
	Seconds      float64
	RPS          float64
	P50us, P99us float64
	NonOK        int64
	SocketErrors int64
}

func findWrk(logf func(string, ...any)) string {
	if p, err := exec.LookPath("wrk"); err == nil {
		return p
	}
	if aptInstall(logf, "wrk", "wrk") {
		if p, err := exec.LookPath("wrk"); err == nil {
			return p
		}
	}
	return ""
}

// runWrk runs one wrk measure: one thread (the machine has two CPUs to
// share with the proxies), conc connections, with the latency histogram.
// wrk takes whole seconds.
func runWrk(bin, url string, h http.Header, conc int, dur time.Duration) (wrkResult, error) {
	args := []string{"-t1", fmt.Sprintf("-c%d", conc), fmt.Sprintf("-d%ds", max(1, int(dur.Round(time.Second)/time.Second))), "--latency", "--timeout", "10s"}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			args = append(args, "-H", k+": "+v)
		}
	}
	args = append(args, url)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads wrk's text report (wrk 4.x, with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			if _, err := fmt.Sscan(f[0], &r.Requests); err != nil {
				return r, fmt.Errorf("wrk request count %q: %w", f[0], err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.Seconds, haveReq = d/1e6, true
		case len(f) == 2 && f[0] == "Requests/sec:":
			if _, err := fmt.Sscan(f[1], &r.RPS); err != nil {
				return r, fmt.Errorf("wrk Requests/sec %q: %w", f[1], err)
			}
			haveRPS = true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.P50us = d
			} else {
				r.P99us = d
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			if _, err := fmt.Sscan(f[len(f)-1], &r.NonOK); err != nil {
				return r, fmt.Errorf("wrk non-2xx count: %w", err)
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for k := 2; k+1 < len(f); k += 2 {
				var n int64
				if _, err := fmt.Sscan(strings.TrimSuffix(f[k+1], ","), &n); err != nil {
					return r, fmt.Errorf("wrk socket errors %q: %w", line, err)
				}
				r.SocketErrors += n
			}
		}
	}
	if !haveReq || !haveRPS {
		return r, fmt.Errorf("wrk's report lacks the request count or Requests/sec:\n%s", out)
	}
	return r, nil
}

// parseWrkDuration reads wrk's durations (820.00us, 1.23ms, 5.00s, 1.00m)
// into microseconds.
func parseWrkDuration(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		us     float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}, {"h", 3600e6}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			var x float64
			if _, err := fmt.Sscan(v, &x); err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return x * u.us, nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q has no known unit", s)
}

// ---- Caddy ----

// caddyfile is Caddy's config: no admin endpoint, no HTTPS, one site that
// checks Basic credentials against a bcrypt hash (base64, the form Caddy
// 2.6 reads and later versions still accept) and proxies to ComfyUI.
const caddyfile = `{
	admin off
	auto_https off
}
http://127.0.0.1:%d {
	basicauth {
		bench %s
	}
	reverse_proxy 127.0.0.1:%s
}
`

func caddyVersion() string {
	out, err := exec.Command("caddy", "version").Output()
	if err != nil {
		return "Caddy"
	}
	return "Caddy " + strings.Fields(string(out))[0]
}

func (b *bench) startCaddy(upURL, h12, raw string) (*proc, string, error) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		if !aptInstall(b.logf, "caddy", "caddy") {
			return nil, "", errors.New("caddy is not installed (apt-get install -y caddy, or run .ci/setup as root)")
		}
		if bin, err = exec.LookPath("caddy"); err != nil {
			return nil, "", err
		}
	}
	dir := filepath.Join(b.dir, "caddy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	port := freePort()
	upPort := upURL[strings.LastIndexByte(upURL, ':')+1:]
	conf := filepath.Join(dir, "Caddyfile")
	body := fmt.Sprintf(caddyfile, port, base64.StdEncoding.EncodeToString([]byte(h12)), upPort)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, "", err
	}
	env := append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	p, err := startProcEnv("caddy", filepath.Join(b.dir, "caddy.log"), env, bin, "run", "--config", conf, "--adapter", "caddyfile")
	if err != nil {
		return nil, "", err
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitAuthed(u+smallPath, "bench", raw, 10*time.Second); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("caddy did not start: %w (log: %s)", err, filepath.Join(b.dir, "caddy.log"))
	}
	return p, u, nil
}

// ---- oauth2-proxy ----

// oauth2ProxyVersion is the release the bench installs from the Go module
// proxy when oauth2-proxy is not on PATH.
const oauth2ProxyVersion = "oauth2-proxy v7.15.6"

const oauth2ProxyModule = "github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6"

func findOAuth2Proxy(logf func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("oauth2-proxy"); err == nil {
		return p, nil
	}
	gobin := filepath.Join(goEnv("GOPATH"), "bin", "oauth2-proxy")
	if _, err := os.Stat(gobin); err == nil {
		return gobin, nil
	}
	logf("  installing %s with go install (a few minutes, once)", oauth2ProxyModule)
	cmd := exec.Command(goBinary(), "install", oauth2ProxyModule)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s failed: %w: %s", oauth2ProxyModule, err, out)
	}
	return gobin, nil
}

func goEnv(key string) string {
	out, err := exec.Command(goBinary(), "env", key).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// htpasswdSHA is an htpasswd line in the {SHA} scheme.
func htpasswdSHA(user, password string) string {
	sum := sha1.Sum([]byte(password))
	return user + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:]) + "\n"
}

func (b *bench) startOAuth2Proxy(upURL, raw string) (*proc, string, error) {
	bin, err := findOAuth2Proxy(b.logf)
	if err != nil {
		return nil, "", err
	}
	dir := filepath.Join(b.dir, "oauth2-proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(htpasswdSHA("bench", raw)), 0o600); err != nil {
		return nil, "", err
	}
	port := freePort()
	// The provider is never contacted: a request with valid Basic
	// credentials gets a session from the htpasswd file.
	args := []string{bin,
		"--http-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--upstream", upURL + "/",
		"--htpasswd-file", htpasswd,
		"--email-domain", "*",
		"--client-id", "bench", "--client-secret", "bench",
		"--cookie-secret", randomToken(),
		"--cookie-secure=false",
		"--skip-provider-button",
	}
	p, err := startProc("oauth2-proxy", filepath.Join(b.dir, "oauth2-proxy.log"), args...)
	if err != nil {
		return nil, "", err
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitAuthed(u+smallPath, "bench", raw, 15*time.Second); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("oauth2-proxy did not let a Basic-auth request through: %w (log: %s)", err, filepath.Join(b.dir, "oauth2-proxy.log"))
	}
	return p, u, nil
}

// waitAuthed polls url with Basic credentials until it answers 200.
func waitAuthed(url, user, password string, within time.Duration) error {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(user, password)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: no 200 within %s (last: %s)", url, within, last)
}

// aptInstall installs a Debian package when running as root, saying so.
func aptInstall(logf func(string, ...any), pkg, what string) bool {
	if os.Geteuid() != 0 {
		logf("  %s is not installed and this is not root: apt-get install -y %s", what, pkg)
		return false
	}
	logf("  installing %s with apt-get", pkg)
	cmd := exec.Command("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "+pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		logf("  apt-get install %s failed: %v: %s", pkg, err, out)
		return false
	}
	return true
}
