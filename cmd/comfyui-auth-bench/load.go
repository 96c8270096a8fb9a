package main

import (
	"context"
	"io"
	"math/bits"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram in the manner of HdrHistogram:
// 2^subBits linear sub-buckets per power of two, so any recorded value is
// reported within 1/2^subBits (under 0.8 %) of itself, in bounded memory
// whatever the request count.
type hist struct {
	counts []uint64
	n      uint64
	max    int64
}

const subBits = 7

func newHist() *hist { return &hist{counts: make([]uint64, 64<<subBits)} }

func bucketOf(v int64) int {
	if v < 1<<subBits {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1
	return (e+1)<<subBits + int(v>>e) - 1<<subBits
}

// valueOf is the middle of bucket i.
func valueOf(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := i>>subBits - 1
	m := int64(i&(1<<subBits-1) + 1<<subBits)
	return m<<e + (int64(1)<<e)/2
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1); the exact maximum for 1.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	target := uint64(q*float64(h.n) + 0.5)
	target = max(target, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= target {
			return time.Duration(min(valueOf(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// loadSpec is one closed-loop load run: conc clients, each sending its next
// request as soon as the previous answer is read, for dur or until maxReq.
type loadSpec struct {
	url    string
	header http.Header
	conc   int
	dur    time.Duration
	maxReq int64
	// local, when set, is the source address (127.0.0.2 for the flood's
	// legitimate client).
	local net.IP
}

type loadResult struct {
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	Codes    map[int]int64 `json:"codes"`
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
	MiBps    float64       `json:"mib_per_s"`
}

func newTransport(conc int, local net.IP) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		MaxConnsPerHost:     conc,
		MaxIdleConnsPerHost: conc,
		MaxIdleConns:        conc,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
}

// runLoad warms one request per client (connections, the raw-token cache),
// then measures.
func runLoad(spec loadSpec) loadResult {
	tr := newTransport(spec.conc, spec.local)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	do := func(req *http.Request) (int, int64, error) {
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, n, err
	}
	newReq := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, spec.url, nil)
		req.Header = spec.header.Clone()
		if req.Header == nil {
			req.Header = http.Header{}
		}
		return req
	}
	var wg sync.WaitGroup
	for range spec.conc {
		wg.Add(1)
		go func() { defer wg.Done(); _, _, _ = do(newReq()) }()
	}
	wg.Wait()

	var sent atomic.Int64
	type part struct {
		h     *hist
		codes map[int]int64
		errs  int64
		bytes int64
	}
	parts := make([]*part, spec.conc)
	start := time.Now()
	deadline := start.Add(spec.dur)
	for i := range spec.conc {
		p := &part{h: newHist(), codes: map[int]int64{}}
		parts[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newReq()
			for time.Now().Before(deadline) && sent.Add(1) <= spec.maxReq {
				t := time.Now()
				code, n, err := do(req)
				p.h.record(time.Since(t))
				if err != nil {
					p.errs++
					continue
				}
				p.codes[code]++
				p.bytes += n
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := newHist()
	res := loadResult{Codes: map[int]int64{}}
	var bytes int64
	for _, p := range parts {
		all.merge(p.h)
		res.Errors += p.errs
		bytes += p.bytes
		for c, n := range p.codes {
			res.Codes[c] += n
		}
	}
	res.Requests = int64(all.n)
	res.RPS = float64(all.n) / elapsed.Seconds()
	res.MiBps = float64(bytes) / (1 << 20) / elapsed.Seconds()
	res.P50, res.P99, res.Max = all.quantile(0.5), all.quantile(0.99), all.quantile(1)
	return res
}

// getStatus sends one GET and returns the status, for probes.
func getStatus(ctx context.Context, client *http.Client, url, auth string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
