package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// wrk 4.1's report, as printed with --latency (a run against an HTTP
// server answering 404, so every answer is non-2xx).
const wrkNon2xx = `Running 1s test @ http://127.0.0.1:18999/nonexistent
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.25ms   27.57ms 182.38ms   90.95%
    Req/Sec   328.40    166.11   495.00     70.00%
  Latency Distribution
     50%    3.64ms
     75%   12.57ms
     90%   38.67ms
     99%  156.29ms
  336 requests in 1.10s, 170.62KB read
  Non-2xx or 3xx responses: 336
Requests/sec:    306.65
Transfer/sec:    155.72KB
`

// The same layout with socket errors, microsecond latencies and a
// duration in minutes.
const wrkSocketErrors = `Running 1m test @ http://127.0.0.1:8188/system_stats
  1 threads and 16 connections
  Latency Distribution
     50%  820.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.01s
  780000 requests in 1.00m, 300.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
Requests/sec:  13000.00
Transfer/sec:      5.00MB
`

func TestParseWrkReadsCountsRateLatencyAndErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want wrkResult
	}{
		{"non-2xx", wrkNon2xx, wrkResult{Requests: 336, Seconds: 1.1, RPS: 306.65, P50us: 3640, P99us: 156290, NonOK: 336}},
		{"socket errors", wrkSocketErrors, wrkResult{Requests: 780000, Seconds: 60, RPS: 13000, P50us: 820, P99us: 2.01e6, SocketErrors: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if !approxEqual(got.Seconds, tc.want.Seconds) || !approxEqual(got.P50us, tc.want.P50us) || !approxEqual(got.P99us, tc.want.P99us) {
				t.Errorf("durations: got %+v, want %+v", got, tc.want)
			}
			got.Seconds, got.P50us, got.P99us = tc.want.Seconds, tc.want.P50us, tc.want.P99us
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func approxEqual(a, b float64) bool { d := a - b; return d < 1e-6*max(1, b) && -d < 1e-6*max(1, b) }

func TestParseWrkRefusesAReportWithoutTotals(t *testing.T) {
	for _, out := range []string{
		"unable to connect to 127.0.0.1:18999 Connection refused\n",
		strings.Replace(wrkNon2xx, "Requests/sec:", "Requests per second:", 1),
		strings.Replace(wrkNon2xx, "336 requests in", "many requests in", 1),
		strings.Replace(wrkNon2xx, "3.64ms", "3.64parsecs", 1),
	} {
		if r, err := parseWrk(out); err == nil {
			t.Errorf("parseWrk accepted a broken report as %+v:\n%s", r, out)
		}
	}
}

// A real /proc/<pid>/stat line, its command name holding a space and a
// parenthesis: fields must be counted from the last ')'.
const statLine = "4242 (nginx: work) er) S 4200 4200 4200 0 -1 4194624 1000 0 0 0 " +
	"1234 567 89 10 20 0 1 0 100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

func TestParseProcStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	got, err := parseProcStat(statLine)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{ppid: 4200, utime: 1234, stime: 567, cutime: 89, cstime: 10}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "4242 nginx S 1", "4242 (nginx) S 1 2 3"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) accepted a short line", bad)
		}
	}
}

// fakeProc writes a /proc layout: pid → (ppid, utime, stime, cutime, cstime).
func fakeProc(t *testing.T, procs map[int][5]int64) string {
	t.Helper()
	root := t.TempDir()
	for pid, f := range procs {
		dir := filepath.Join(root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%d (p %d) S %d 1 1 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 100 0 0\n", pid, pid, f[0], f[1], f[2], f[3], f[4])
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Entries that are not processes are skipped.
	_ = os.MkdirAll(filepath.Join(root, "self"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "loadavg"), []byte("1 1 1 1/1 1\n"), 0o644)
	return root
}

func TestProcTreeTicksSumsTheProxyAndItsWorkersOnly(t *testing.T) {
	root := fakeProc(t, map[int][5]int64{
		1:   {0, 5000, 5000, 0, 0}, // init: not ours
		100: {1, 10, 5, 7, 3},      // nginx master, with reaped children's 7+3
		101: {100, 300, 200, 0, 0}, // worker
		102: {100, 250, 150, 1, 1}, // worker, which reaped a helper
		103: {102, 40, 60, 0, 0},   // a worker's child
		200: {1, 999, 999, 0, 0},   // a sibling: the load generator
	})
	for _, tc := range []struct {
		pid  int
		want int64
	}{
		{100, 10 + 5 + 7 + 3 + 300 + 200 + 250 + 150 + 1 + 1 + 40 + 60},
		{102, 250 + 150 + 1 + 1 + 40 + 60},
		{200, 999 + 999},
		{0, 0},
	} {
		got, err := procTreeTicks(root, tc.pid)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("procTreeTicks(%d) = %d, want %d", tc.pid, got, tc.want)
		}
	}
	if _, err := procTreeTicks(root, 999); err == nil {
		t.Error("a process that is gone was counted as 0 CPU")
	}
}

func TestProcTreeTicksReadsThisProcess(t *testing.T) {
	// The real /proc: this test process has used some CPU by now, and a
	// second reading is never lower than the first.
	a, err := procTreeTicks("/proc", os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	b, err := procTreeTicks("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b < a {
		t.Errorf("CPU went backwards: %d then %d", a, b)
	}
}

func TestTicksToMicroseconds(t *testing.T) {
	if got := ticksToUS(150); got != 1.5e6 {
		t.Errorf("150 ticks = %v µs, want 1.5e6", got)
	}
}

func TestRotatedOrderPutsEachTargetFirstOnce(t *testing.T) {
	firsts := map[int]bool{}
	for round := 0; round < 4; round++ {
		o := rotatedOrder(4, round)
		firsts[o[0]] = true
		seen := map[int]bool{}
		for _, i := range o {
			seen[i] = true
		}
		if len(seen) != 4 {
			t.Errorf("round %d order %v misses a target", round, o)
		}
	}
	if len(firsts) != 4 {
		t.Errorf("over 4 rounds the first targets were %v, want all 4", firsts)
	}
	if got := rotatedOrder(3, 1); !reflect.DeepEqual(got, []int{1, 2, 0}) {
		t.Errorf("rotatedOrder(3, 1) = %v", got)
	}
}

// The ratios pair each round with the same round's nginx and floor 1: a
// round when the whole machine was slow moves both sides together.
func TestSummarizePeersTakesRatiosWithinEachRound(t *testing.T) {
	rounds := func(rps, cpu []float64) []peerRound {
		rs := make([]peerRound, len(rps))
		for i := range rps {
			rs[i] = peerRound{RPS: rps[i], USPerReq: cpu[i], Errors: 1, NonOK: 2}
		}
		return rs
	}
	cells := []peerCell{
		{Target: "direct", Rounds: rounds([]float64{200, 100, 200}, []float64{0, 0, 0})},
		{Target: "nginx", isNginx: true, hasProxy: true, Rounds: rounds([]float64{100, 50, 100}, []float64{40, 80, 40})},
		{Target: "gw", hasProxy: true, Rounds: rounds([]float64{60, 30, 50}, []float64{110, 220, 100})},
		{Target: "floor", isFloor1: true, hasProxy: true, Rounds: rounds([]float64{70, 35, 70}, []float64{100, 200, 100})},
	}
	summarizePeers(cells)
	gw := cells[2]
	// Per round: × nginx 0.6, 0.6, 0.5; × floor 1.1, 1.1, 1.0.
	if !approxEqual(gw.VsNginx, 0.6) || !approxEqual(gw.VsFloor1, 1.1) {
		t.Errorf("gw × nginx %v (want 0.6), × floor %v (want 1.1)", gw.VsNginx, gw.VsFloor1)
	}
	if gw.RPS != 50 || gw.USPerReq != 110 || gw.Errors != 3 || gw.NonOK != 6 {
		t.Errorf("gw medians and sums: %+v", gw)
	}
	if cells[0].USPerReq != 0 || cells[0].VsFloor1 != 0 || cells[0].VsNginx != 2 {
		t.Errorf("direct has no proxy CPU and is 2× nginx: %+v", cells[0])
	}
	if cells[3].VsFloor1 != 1 || cells[1].VsNginx != 1 {
		t.Errorf("the references are 1× themselves: floor %v nginx %v", cells[3].VsFloor1, cells[1].VsNginx)
	}
	md := peersTable(&peersResult{LoadGen: "wrk", Conc: 16, Rounds: 3, RoundSecs: 5, Cells: append(cells, peerCell{Target: "Caddy", NA: "caddy missing"})})
	for _, want := range []string{"| gw | 50 | 0.60 | 110.0 | 1.10× | 110, 220, 100 |", "| Caddy | – |", "not measured: caddy missing", "| direct | 200 | 2.00 | – | – |"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

func TestHtpasswdSHAIsApachesFormat(t *testing.T) {
	// htpasswd -nbs user password
	if got, want := htpasswdSHA("user", "password"), "user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPeersGoalsCountRoundsAndSayMissed(t *testing.T) {
	mk := func(name string, rps, cpu, vsF []float64) peerCell {
		c := peerCell{Target: name, hasProxy: true}
		for i := range rps {
			c.Rounds = append(c.Rounds, peerRound{RPS: rps[i], USPerReq: cpu[i], VsFloor1: vsF[i]})
		}
		c.RPS, c.USPerReq, c.VsFloor1 = median(rps), median(cpu), median(vsF)
		return c
	}
	cells := []peerCell{
		mk("comfyui-auth", []float64{100, 90, 80}, []float64{110, 130, 125}, []float64{1.1, 1.3, 1.25}),
		mk("comfyui-auth (baseline)", []float64{100, 90, 80}, []float64{100, 130, 100}, []float64{1, 1, 1}),
		mk("floor 1", []float64{100, 100, 100}, []float64{100, 100, 100}, []float64{1, 1, 1}),
		mk("Caddy", []float64{50, 95, 40}, []float64{200, 120, 200}, []float64{2, 1.2, 2}),
		{Target: "oauth2-proxy", NA: "not installed"},
	}
	got := strings.Join(peersGoals(cells), "\n")
	for _, want := range []string{
		"within 1.2× floor 1: 1.25× (median of rounds; 1 of 3 rounds within): **MISSED**",
		"ahead of Caddy: CPU/req 125.0 vs 200.0 µs (2 of 3 rounds), req/s 90 vs 50 (2 of 3 rounds): met",
		"round by round: +10 %, +0 %, +25 % (median +10.0 %)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("goals lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "oauth2-proxy") {
		t.Errorf("a peer not measured was judged:\n%s", got)
	}
}
