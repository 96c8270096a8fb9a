// Command comfyui-auth-bench measures the gateway side by side with what
// users would otherwise run: ComfyUI directly and Debian's nginx as a plain
// reverse proxy. It builds and execs the real gateway and the fake ComfyUI
// (fakecomfyd), all on loopback, in one invocation so the ratios compare
// runs made on the same machine at the same time. It prints a table and
// writes it as BENCHMARKS.md and benchmarks.json.
//
//	go run ./cmd/comfyui-auth-bench            # full run, under 5 minutes
//	go run ./cmd/comfyui-auth-bench -quick     # a smoke run of every scenario
//	go run ./cmd/comfyui-auth-bench -only flood,overhead -out /tmp/b  # some scenarios
//
// It is a measurement, not a test: targets are checked in its summary, never
// by `go test`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/bcrypt"
)

type bench struct {
	quick      bool
	legitEvery time.Duration
	dir        string
	gatewayBin string
	fakeBin    string
	nginxBin   string
	logf       func(string, ...any)
}

// report is everything benchmarks.json holds.
type report struct {
	Machine   map[string]string `json:"machine"`
	Quick     bool              `json:"quick"`
	Overhead  []overheadCell    `json:"overhead"`
	Flood     *floodResult      `json:"flood,omitempty"`
	Reload    []reloadResult    `json:"reload"`
	WS        *wsResult         `json:"websockets,omitempty"`
	Startup   *startupResult    `json:"startup,omitempty"`
	DistFlood *distFloodResult  `json:"distributed_flood,omitempty"`
	Targets   []target          `json:"targets"`
	CPU       []cpuCell         `json:"cpu_per_request,omitempty"`
	Peers     *peersResult      `json:"peers,omitempty"`
	Notes     []string          `json:"notes"`
	Elapsed   string            `json:"elapsed"`
}

type overheadCell struct {
	Payload string      `json:"payload"`
	Conc    int         `json:"concurrency"`
	Target  string      `json:"target"`
	Result  *loadResult `json:"result,omitempty"`
	NA      string      `json:"na,omitempty"`
}

type target struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Target string `json:"target"`
	Met    bool   `json:"met"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == floorRelayCmd {
		floorRelay(os.Args[2:])
		return
	}
	quick := flag.Bool("quick", false, "a short smoke run of every scenario (numbers not meaningful)")
	out := flag.String("out", ".", "directory for BENCHMARKS.md and benchmarks.json")
	keep := flag.Bool("keep", false, "keep the temporary directory with the processes' logs")
	only := flag.String("only", "", "comma-separated scenarios to run (overhead, flood, reload, websockets, startup, distflood, and cpu and peers, which run only when named); empty runs all. "+
		"A partial run's report is for comparing builds, not for committing")
	legitEvery := flag.Duration("legit-every", 100*time.Millisecond, "how often the flood's legitimate client polls (100 ms, the goal's rate, gives 200 samples; 20ms gives 1,000 for a steadier p99)")
	gateway := flag.String("gateway", "", "measure this prebuilt comfyui-auth binary instead of building this module's (A/B comparisons of two builds)")
	loadGen := flag.String("loadgen", "wrk", "peers: the load generator, wrk (Debian's; installed when missing and root) or go (in-process)")
	peerRounds := flag.Int("rounds", peersRounds, "peers: rounds, each running every target once")
	peerRound := flag.Duration("round", 5*time.Second, "peers: how long each target is loaded in each round")
	peerConc := flag.Int("conc", 16, "peers: concurrent keep-alive connections")
	baseline := flag.String("baseline", "", "peers: also measure this prebuilt comfyui-auth binary, beside this build (a before/after in one run)")
	flag.Parse()
	opts := options{quick: *quick, out: *out, keep: *keep, only: scenarios(*only), gatewayBin: *gateway, legitEvery: *legitEvery,
		peers: peersSpec{loadGen: *loadGen, rounds: *peerRounds, roundDur: *peerRound, conc: *peerConc, baseline: *baseline}}
	if err := run(opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "comfyui-auth-bench:", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	quick, keep bool
	out         string
	// only is the set of scenarios to run; nil runs all.
	only map[string]bool
	// gatewayBin, when set, is a prebuilt gateway to measure.
	gatewayBin string
	// legitEvery is the flood's legitimate polling interval.
	legitEvery time.Duration
	// peers is how the peers scenario runs.
	peers peersSpec
}

// scenarios parses -only into a set; nil means every scenario.
func scenarios(only string) map[string]bool {
	if only == "" {
		return nil
	}
	set := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		set[strings.TrimSpace(s)] = true
	}
	return set
}

func run(opts options, stdout io.Writer) error {
	quick, out, keep, only := opts.quick, opts.out, opts.keep, opts.only
	want := func(s string) bool { return only == nil || only[s] }
	// Made first, so a long run never ends unable to write its report.
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("the -out directory: %w", err)
	}
	began := time.Now()
	logf := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(f, a...))
	}
	dir, err := os.MkdirTemp("", "comfyui-auth-bench-")
	if err != nil {
		return err
	}
	if keep {
		logf("logs kept in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{quick: quick, dir: dir, logf: logf, legitEvery: opts.legitEvery}
	if b.legitEvery <= 0 {
		b.legitEvery = 100 * time.Millisecond
	}
	if err := b.build(opts.gatewayBin); err != nil {
		return err
	}
	b.nginxBin = findNginx(logf)

	rep := &report{Machine: machine(), Quick: quick}
	up, upURL, err := b.startUpstream("upstream")
	if err != nil {
		return err
	}
	defer up.stop()

	// The real cost: a cost-12 hash of a random 32-character raw token.
	raw := randomToken()
	h12, err := bcrypt.GenerateFromPassword([]byte(raw), 12)
	if err != nil {
		return err
	}
	hashFile := filepath.Join(dir, "token")
	if err := os.WriteFile(hashFile, h12, 0o600); err != nil {
		return err
	}
	gw, err := b.startGateway("gateway", upURL, hashFile)
	if err != nil {
		return err
	}
	defer gw.stop()

	var ngURL string
	var ngProc *proc
	if b.nginxBin != "" {
		upPort, _ := strconv.Atoi(upURL[strings.LastIndexByte(upURL, ':')+1:])
		ng, u, err := b.startNginx(upPort)
		if err != nil {
			logf("nginx column skipped: %v", err)
			rep.Notes = append(rep.Notes, "nginx could not start: "+err.Error())
		} else {
			defer ng.stop()
			ngURL, ngProc = u, ng
		}
	}

	if want("overhead") {
		logf("1/5 overhead")
		cookie, err := login(gw.url, raw)
		if err != nil {
			logf("  session column skipped: %v", err)
			rep.Notes = append(rep.Notes, "login for the session column failed: "+err.Error())
		}
		rep.Overhead = b.overhead(upURL, gw.url, ngURL, string(h12), raw, cookie)
	}
	if want("flood") {
		logf("2/5 guess flood")
		rep.Flood = b.flood(gw, raw)
	}
	if want("reload") {
		logf("3/5 reload latency")
		rep.Reload = b.reload(upURL)
	}
	if want("websockets") {
		logf("4/5 websockets")
		if rep.WS, err = b.websockets(); err != nil {
			rep.Notes = append(rep.Notes, "websocket scenario failed: "+err.Error())
		}
	}
	if want("startup") {
		logf("5/5 start-up")
		rep.Startup = b.startup(upURL, hashFile, gw.startup)
	}

	if want("distflood") {
		logf("6/6 distributed flood")
		if rep.DistFlood, err = b.distFlood(upURL); err != nil {
			rep.Notes = append(rep.Notes, "distributed-flood scenario failed: "+err.Error())
		}
	}

	if only["cpu"] {
		logf("cpu per request (old gateway, new gateway, floor 1)")
		load := loadAvg()
		cells, err := b.cpuPerRequest(upURL, hashFile, raw)
		if err != nil {
			rep.Notes = append(rep.Notes, "cpu scenario failed: "+err.Error())
		} else {
			rep.CPU = cells
			md := cpuTable(cells, load+" → "+loadAvg())
			fmt.Fprint(stdout, md)
			if err := os.WriteFile(filepath.Join(out, "cpu.md"), []byte(md), 0o644); err != nil {
				return err
			}
		}
	}
	if only["peers"] {
		logf("peers: direct, nginx, comfyui-auth, floor 1, Caddy, oauth2-proxy")
		spec := opts.peers
		if spec.rounds <= 0 {
			spec.rounds = peersRounds
		}
		if spec.conc <= 0 {
			spec.conc = 16
		}
		if spec.roundDur <= 0 {
			spec.roundDur = 5 * time.Second
		}
		if quick {
			spec.rounds, spec.roundDur = 2, 500*time.Millisecond
		}
		pr, err := b.peers(spec, up, upURL, ngProc, ngURL, gw, hashFile, string(h12), raw)
		if err != nil {
			rep.Notes = append(rep.Notes, "peers scenario failed: "+err.Error())
			logf("peers scenario failed: %v", err)
		} else {
			rep.Peers = pr
			md := peersTable(pr)
			fmt.Fprint(stdout, md)
			if err := os.WriteFile(filepath.Join(out, "peers.md"), []byte(md), 0o644); err != nil {
				return err
			}
		}
	}
	rep.Targets = checkTargets(rep)
	if only != nil {
		rep.Notes = append(rep.Notes, "Partial run (-only): scenarios not listed were skipped.")
	}
	rep.Notes = append(rep.Notes,
		"The load generator, the fake ComfyUI, the gateway and nginx share the same CPUs; all ratios come from this one run.")
	rep.Elapsed = time.Since(began).Round(time.Second).String()

	md := markdown(rep)
	fmt.Fprint(stdout, md)
	if err := os.WriteFile(filepath.Join(out, "BENCHMARKS.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	return os.WriteFile(filepath.Join(out, "benchmarks.json"), append(js, '\n'), 0o644)
}

// build compiles the fake ComfyUI and, unless a prebuilt one is given, the
// gateway from this module.
func (b *bench) build(prebuiltGateway string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	modOut, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(modOut)))
	b.gatewayBin = filepath.Join(b.dir, "comfyui-auth")
	if prebuiltGateway != "" {
		b.gatewayBin = prebuiltGateway
	}
	b.fakeBin = filepath.Join(b.dir, "fakecomfyd")
	builds := map[string]string{b.fakeBin: "./internal/fakecomfy/fakecomfyd"}
	if prebuiltGateway == "" {
		builds[b.gatewayBin] = "./cmd/comfyui-auth"
	}
	for bin, pkg := range builds {
		cmd := exec.Command(goBin, "build", "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w: %s", pkg, err, out)
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- 1. overhead ----

const (
	smallPath = "/system_stats"
	largePath = "/view?filename=size-1048576.bin&type=output"
)

// login posts the password (the raw token) to the gateway's login form and
// returns the session cookie a browser would then send.
func login(gw, password string) (*http.Cookie, error) {
	client := &http.Client{
		Transport:     newTransport(1, nil),
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	resp, err := client.PostForm(gw+"/login", url.Values{"password": {password}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" && c.Value != "" {
			return &http.Cookie{Name: c.Name, Value: c.Value}, nil
		}
	}
	return nil, fmt.Errorf("POST /login answered %d with no session cookie", resp.StatusCode)
}

func (b *bench) overhead(direct, gw, ng, hash, raw string, session *http.Cookie) []overheadCell {
	dur := 1500 * time.Millisecond
	if b.quick {
		dur = 200 * time.Millisecond
	}
	bearer := func(t string) http.Header { return http.Header{"Authorization": {"Bearer " + t}} }
	var cookie http.Header
	sessionNA := "n/a (login failed)"
	if session != nil {
		cookie, sessionNA = http.Header{"Cookie": {session.String()}}, ""
	}
	var cells []overheadCell
	for _, payload := range []string{"small", "1MiB"} {
		path := smallPath
		if payload == "1MiB" {
			path = largePath
		}
		for _, conc := range []int{1, 16, 64} {
			// Targets are interleaved within one (payload, concurrency) so
			// they are measured close together in time.
			targets := []struct {
				name, base string
				header     http.Header
				na         string
			}{
				{"direct", direct, nil, ""},
				{"gateway hash-token", gw, bearer(hash), ""},
				{"gateway raw-token", gw, bearer(raw), ""},
				{"gateway session", gw, cookie, sessionNA},
				{"nginx", ng, nil, ""},
			}
			for _, t := range targets {
				cell := overheadCell{Payload: payload, Conc: conc, Target: t.name}
				switch {
				case t.na != "":
					cell.NA = t.na
				case t.base == "":
					cell.NA = "n/a (nginx not available)"
				default:
					r := runLoad(loadSpec{url: t.base + path, header: t.header, conc: conc, dur: dur, maxReq: 500000})
					cell.Result = &r
					b.logf("  %-5s c=%-2d %-19s %8.0f req/s p50 %-9s p99 %-9s codes %v", payload, conc, t.name, r.RPS, r.P50, r.P99, r.Codes)
				}
				cells = append(cells, cell)
			}
		}
	}
	return cells
}

// ---- 2. guess flood ----

type floodResult struct {
	Seconds         float64       `json:"seconds"`
	Attackers       int           `json:"attackers"`
	LegitRequests   int           `json:"legit_requests"`
	LegitOK         int           `json:"legit_ok"`
	LegitP50        time.Duration `json:"legit_p50_ns"`
	LegitP99        time.Duration `json:"legit_p99_ns"`
	LegitMax        time.Duration `json:"legit_max_ns"`
	AttackAnswered  int64         `json:"attack_answered"`
	AttackCodes     map[int]int64 `json:"attack_codes"`
	AttackErrors    int64         `json:"attack_errors"`
	CPUPerSecond    float64       `json:"gateway_cpu_seconds_per_second"`
	BcryptWorkers   int           `json:"bcrypt_workers"`
	BcryptChecks    float64       `json:"bcrypt_checks"`
	BaselineLegitMs float64       `json:"baseline_legit_p50_ms"`
	LegitEveryMs    float64       `json:"legit_every_ms"`
}

func (b *bench) flood(gw *gatewayProc, raw string) *floodResult {
	dur := 20 * time.Second
	if b.quick {
		dur = 2 * time.Second
	}
	const attackers = 64
	res := &floodResult{Seconds: dur.Seconds(), Attackers: attackers, AttackCodes: map[int]int64{},
		BcryptWorkers: max(1, runtime.NumCPU()/2)}
	target := gw.url + smallPath

	// The legitimate client connects from 127.0.0.2 and has used its token
	// before (it is cached, as it is for any client that already worked).
	legit := &http.Client{Transport: newTransport(1, net.ParseIP("127.0.0.2")), Timeout: 10 * time.Second}
	if code, err := getStatus(context.Background(), legit, target, raw); code != 200 {
		b.logf("  legit warm-up: %d %v", code, err)
	}

	checks0 := metric(gw.metricsURL, "comfyui_auth_bcrypt_checks_total")
	cpu0, t0 := cpuSeconds(gw.pid()), time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var answered, errs atomic.Int64
	tr := newTransport(attackers, nil)
	attack := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var seq atomic.Int64
	prefix := randomToken()[:12]
	for range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// Never-repeating wrong raw tokens, 32 characters.
				tok := fmt.Sprintf("%s%020d", prefix, seq.Add(1))
				code, err := getStatus(context.Background(), attack, target, tok)
				if err != nil {
					errs.Add(1)
					continue
				}
				answered.Add(1)
				mu.Lock()
				res.AttackCodes[code]++
				mu.Unlock()
			}
		}()
	}
	h := newHist()
	// The goal's 100 ms gives 200 samples in 20 s, so the p99 is the
	// second-worst request; -legit-every 20ms gives 1,000 for a steadier one.
	res.LegitEveryMs = float64(b.legitEvery) / float64(time.Millisecond)
	tick := time.NewTicker(b.legitEvery)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			t := time.Now()
			code, _ := getStatus(context.Background(), legit, target, raw)
			h.record(time.Since(t))
			res.LegitRequests++
			if code == 200 {
				res.LegitOK++
			}
		}
	}
	tick.Stop()
	wall := time.Since(t0).Seconds()
	res.CPUPerSecond = (cpuSeconds(gw.pid()) - cpu0) / wall
	wg.Wait() // attackers in flight finish (bounded by the 2 s bcrypt wait)
	tr.CloseIdleConnections()
	res.BcryptChecks = metric(gw.metricsURL, "comfyui_auth_bcrypt_checks_total") - checks0
	res.AttackAnswered, res.AttackErrors = answered.Load(), errs.Load()
	res.LegitP50, res.LegitP99, res.LegitMax = h.quantile(0.5), h.quantile(0.99), h.quantile(1)
	b.logf("  legit %d/%d ok p50 %s p99 %s max %s; attack %d answered %v; cpu %.2f s/s; bcrypt %v",
		res.LegitOK, res.LegitRequests, res.LegitP50, res.LegitP99, res.LegitMax, res.AttackAnswered, res.AttackCodes, res.CPUPerSecond, res.BcryptChecks)
	return res
}

// ---- 3. reload ----

type reloadResult struct {
	Mode     string        `json:"mode"`
	Trials   int           `json:"trials"`
	Failed   int           `json:"failed"`
	P50      time.Duration `json:"p50_ns"`
	Max      time.Duration `json:"max_ns"`
	Poll     time.Duration `json:"poll_interval_ns"`
	EventOK  bool          `json:"event_driven"`
	ErrorMsg string        `json:"error,omitempty"`
}

func (b *bench) reload(upURL string) []reloadResult {
	trials := 20
	if b.quick {
		trials = 3
	}
	var out []reloadResult
	for _, mode := range []string{"in-place write", "rename over", "symlink swap"} {
		r := reloadResult{Mode: mode, Trials: trials, Poll: 2 * time.Second, EventOK: true}
		if err := b.reloadMode(upURL, mode, trials, &r); err != nil {
			r.ErrorMsg = err.Error()
		}
		b.logf("  %-15s p50 %s max %s failed %d %s", mode, r.P50, r.Max, r.Failed, r.ErrorMsg)
		out = append(out, r)
	}
	return out
}

func minCostHash() (string, string) {
	tok := randomToken()
	h, _ := bcrypt.GenerateFromPassword([]byte(tok), bcrypt.MinCost)
	return tok, string(h)
}

func (b *bench) reloadMode(upURL, mode string, trials int, r *reloadResult) error {
	dir := filepath.Join(b.dir, "reload-"+strings.ReplaceAll(mode, " ", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(dir, "token")
	// The hashes are minimum cost: the hash itself is the probe token
	// (no bcrypt), and the refused old hash costs one cheap bcrypt check,
	// so the time measured is the reload's.
	_, cur := minCostHash()
	version := 0
	write := func(content string) error {
		switch mode {
		case "in-place write":
			f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = f.WriteString(content + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		case "rename over":
			tmp := file + ".tmp"
			if err := os.WriteFile(tmp, []byte(content+"\n"), 0o600); err != nil {
				return err
			}
			return os.Rename(tmp, file)
		default: // Kubernetes secret volume: token -> ..data/token, ..data -> ..vN
			version++
			vdir := filepath.Join(dir, fmt.Sprintf("..v%d", version))
			if err := os.Mkdir(vdir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(vdir, "token"), []byte(content+"\n"), 0o600); err != nil {
				return err
			}
			tmpLink := filepath.Join(dir, "..data_tmp")
			_ = os.Remove(tmpLink)
			if err := os.Symlink(filepath.Base(vdir), tmpLink); err != nil {
				return err
			}
			if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
				return err
			}
			if version == 1 {
				return os.Symlink(filepath.Join("..data", "token"), file)
			}
			return nil
		}
	}
	if err := write(cur); err != nil {
		return err
	}
	// The probe sends the retired raw token every 2 ms until it is
	// refused; the per-client throttle would lock the prober out after five
	// such refusals and hide the reload behind 429s.
	gw, err := b.startGateway("gateway-reload-"+strings.ReplaceAll(mode, " ", "-"), upURL, file, "--max-login-attempts", "0")
	if err != nil {
		return err
	}
	defer gw.stop()
	client := &http.Client{Transport: newTransport(4, nil), Timeout: 5 * time.Second}
	h := newHist()
	for range trials {
		_, next := minCostHash()
		if err := write(next); err != nil {
			return err
		}
		t0 := time.Now()
		ok := b.waitStatus(client, gw.url+"/queue", next, 200) && b.waitStatus(client, gw.url+"/queue", cur, 401)
		d := time.Since(t0)
		if !ok {
			r.Failed++
		} else {
			h.record(d)
		}
		cur = next
	}
	r.P50, r.Max = h.quantile(0.5), h.quantile(1)
	return nil
}

// waitStatus probes every 2 ms until url answers want to token, for 5 s.
func (b *bench) waitStatus(client *http.Client, url, token string, want int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := getStatus(context.Background(), client, url, token); code == want {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// ---- 4. websockets ----

type wsResult struct {
	Conns        int           `json:"connections"`
	Opened       int           `json:"opened"`
	RSSBase      int64         `json:"gateway_rss_base_bytes"`
	RSSOpen      int64         `json:"gateway_rss_open_bytes"`
	RSSPerConn   float64       `json:"gateway_rss_per_connection_bytes"`
	Frames       int64         `json:"frames_received"`
	Broadcasts   int           `json:"broadcasts"`
	P50          time.Duration `json:"delivery_p50_ns"`
	P99          time.Duration `json:"delivery_p99_ns"`
	Max          time.Duration `json:"delivery_max_ns"`
	ListenedSecs float64       `json:"listened_seconds"`
}

func (b *bench) websockets() (*wsResult, error) {
	conns, listen := 1000, 5*time.Second
	if b.quick {
		conns, listen = 50, 2*time.Second
	}
	up, upURL, err := b.startUpstream("upstream-ws", "--fake-broadcast-every", "1s")
	if err != nil {
		return nil, err
	}
	defer up.stop()
	_, hash := minCostHash()
	file := filepath.Join(b.dir, "token-ws")
	if err := os.WriteFile(file, []byte(hash), 0o600); err != nil {
		return nil, err
	}
	gw, err := b.startGateway("gateway-ws", upURL, file)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	// Warm the proxy's paths, then take the baseline.
	client := &http.Client{Transport: newTransport(4, nil)}
	for range 50 {
		_, _ = getStatus(context.Background(), client, gw.url+smallPath, hash)
	}
	res := &wsResult{Conns: conns, RSSBase: rssBytes(gw.pid())}

	wsURL := "ws" + strings.TrimPrefix(gw.url, "http") + "/ws?token=" + url.QueryEscape(hash) + "&clientId="
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: nil, ReadBufferSize: 1024, WriteBufferSize: 1024}
	var mu sync.Mutex
	var opened []*websocket.Conn
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var dialErr atomic.Value
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := dialer.Dial(wsURL+fmt.Sprintf("bench-%d", i), http.Header{"Origin": {gw.url}})
			if err != nil {
				dialErr.Store(err)
				return
			}
			mu.Lock()
			opened = append(opened, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Opened = len(opened)
	defer func() {
		for _, c := range opened {
			c.Close()
		}
	}()
	if res.Opened == 0 {
		return res, fmt.Errorf("no websocket opened: %v", dialErr.Load())
	}

	var frames atomic.Int64
	hs := make([]*hist, len(opened))
	stopAt := time.Now().Add(listen)
	var rwg sync.WaitGroup
	for i, c := range opened {
		hs[i] = newHist()
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			_ = c.SetReadDeadline(stopAt)
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				var ev struct {
					Type string `json:"type"`
					Data struct {
						Sent int64 `json:"sent_unix_nano"`
					} `json:"data"`
				}
				if json.Unmarshal(msg, &ev) == nil && ev.Type == "bench_tick" {
					hs[i].record(time.Duration(now - ev.Data.Sent))
					frames.Add(1)
				}
			}
		}()
	}
	time.Sleep(listen / 2)
	res.RSSOpen = rssBytes(gw.pid())
	rwg.Wait()
	res.ListenedSecs = listen.Seconds()
	res.RSSPerConn = float64(res.RSSOpen-res.RSSBase) / float64(res.Opened)
	all := newHist()
	for _, h := range hs {
		all.merge(h)
	}
	res.Frames = frames.Load()
	res.Broadcasts = int(listen / time.Second)
	res.P50, res.P99, res.Max = all.quantile(0.5), all.quantile(0.99), all.quantile(1)
	b.logf("  %d/%d open; RSS %.1f MiB -> %.1f MiB (%.1f KiB/conn); %d frames p50 %s p99 %s",
		res.Opened, conns, float64(res.RSSBase)/(1<<20), float64(res.RSSOpen)/(1<<20), res.RSSPerConn/1024, res.Frames, res.P50, res.P99)
	return res, nil
}

// ---- 5. start-up ----

type startupResult struct {
	Trials int           `json:"trials"`
	P50    time.Duration `json:"p50_ns"`
	Max    time.Duration `json:"max_ns"`
}

func (b *bench) startup(upURL, hashFile string, first time.Duration) *startupResult {
	trials := 10
	if b.quick {
		trials = 2
	}
	h := newHist()
	for i := range trials {
		gw, err := b.startGateway(fmt.Sprintf("gateway-start-%d", i), upURL, hashFile)
		if err != nil {
			b.logf("  start-up trial %d: %v", i, err)
			continue
		}
		h.record(gw.startup)
		gw.stop()
	}
	r := &startupResult{Trials: int(h.n), P50: h.quantile(0.5), Max: h.quantile(1)}
	b.logf("  start-up p50 %s max %s (first start of the run: %s)", r.P50, r.Max, first)
	return r
}

// ---- machine ----

func machine() map[string]string {
	m := map[string]string{
		"go":         runtime.Version(),
		"nproc":      strconv.Itoa(runtime.NumCPU()),
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
		"date":       time.Now().UTC().Format(time.RFC3339),
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "Model name:"); ok {
				m["cpu"] = strings.TrimSpace(v)
			}
		}
	}
	if out, err := exec.Command("nginx", "-v").CombinedOutput(); err == nil {
		m["nginx"] = strings.TrimSpace(strings.TrimPrefix(string(out), "nginx version: "))
	}
	return m
}
