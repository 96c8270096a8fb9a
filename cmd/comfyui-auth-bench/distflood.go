package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ---- 6. distributed flood ----

// distFloodResult is the distributed-flood scenario: many attacker
// addresses against one bcrypt worker at cost 12, while first-time clients
// with never-used valid tokens try to get in.
type distFloodResult struct {
	Seconds       float64       `json:"seconds"`
	Addresses     int           `json:"attacker_addresses"`
	ConnsPerAddr  int           `json:"connections_per_address"`
	Tries         int           `json:"first_time_tries"`
	TriesOK       int           `json:"first_time_ok"`
	TriesOKFast   int           `json:"first_time_ok_within_5s"`
	TryCodes      []int         `json:"first_time_codes"`
	TryLatency    []float64     `json:"first_time_latency_ms"`
	TryAttempts   []int         `json:"first_time_attempts"`
	CachedN       int           `json:"cached_requests"`
	CachedOK      int           `json:"cached_ok"`
	CachedP99     time.Duration `json:"cached_p99_ns"`
	AttackCodes   map[int]int64 `json:"attack_codes"`
	AttackErrors  int64         `json:"attack_errors"`
	BcryptChecks  float64       `json:"bcrypt_checks"`
	LogBytes      int64         `json:"log_bytes"`
	BcryptWorkers int           `json:"bcrypt_workers"`
}

// distFlood starts its own gateway (one bcrypt worker) over a two-line hash
// file: a fresh cost-12 pair first, then the cached client's. Attackers on
// 127.0.0.10 onwards, three connections each, send never-repeating wrong
// raw tokens as fast as they are answered. Each try rotates the fresh pair
// (so its token was never verified: no cache hit), re-warms the cached
// client, and sends the fresh token from an address never seen before,
// retrying 503s after Retry-After as a real client does.
// Between tries the cached client polls every legitEvery.
func (b *bench) distFlood(upURL string) (*distFloodResult, error) {
	tries, addrs, conns := 10, 64, 3
	sample := time.Second
	if b.quick {
		tries, sample = 2, 300*time.Millisecond
	}
	res := &distFloodResult{Addresses: addrs, ConnsPerAddr: conns, Tries: tries, AttackCodes: map[int]int64{}, BcryptWorkers: 1}
	cachedTok := randomToken()
	cachedHash, err := bcrypt.GenerateFromPassword([]byte(cachedTok), 12)
	if err != nil {
		return nil, err
	}
	fresh := make([]string, tries)
	freshHash := make([][]byte, tries)
	for i := range fresh {
		fresh[i] = randomToken()
		if freshHash[i], err = bcrypt.GenerateFromPassword([]byte(fresh[i]), 12); err != nil {
			return nil, err
		}
	}
	hashFile := filepath.Join(b.dir, "distflood-token")
	write := func(i int) error {
		tmp := hashFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(string(freshHash[i])+"\n"+string(cachedHash)+"\n"), 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, hashFile)
	}
	if err := write(0); err != nil {
		return nil, err
	}
	gw, err := b.startGateway("distflood-gateway", upURL, hashFile, "--bcrypt-workers", "1", "--poll-interval", "250ms")
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	target := gw.url + smallPath
	cached := &http.Client{Transport: newTransport(1, net.ParseIP("127.0.0.2")), Timeout: 30 * time.Second}
	if code, err := getStatus(context.Background(), cached, target, cachedTok); code != 200 {
		return nil, fmt.Errorf("cached client warm-up: %d %v", code, err)
	}
	logPath := filepath.Join(b.dir, "distflood-gateway.log")
	log0 := fileSize(logPath)
	checks0 := metric(gw.metricsURL, "comfyui_auth_bcrypt_checks_total")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs, seq atomic.Int64
	prefix := randomToken()[:12]
	var transports []*http.Transport
	for a := range addrs {
		tr := newTransport(conns, net.ParseIP(fmt.Sprintf("127.0.0.%d", 10+a)))
		transports = append(transports, tr)
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					code, err := getStatus(ctx, client, target, fmt.Sprintf("%s%020d", prefix, seq.Add(1)))
					if err != nil {
						if ctx.Err() == nil {
							errs.Add(1)
						}
						continue
					}
					mu.Lock()
					res.AttackCodes[code]++
					mu.Unlock()
				}
			}()
		}
	}
	t0 := time.Now()
	h := newHist()
	poll := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			t := time.Now()
			code, _ := getStatus(context.Background(), cached, target, cachedTok)
			h.record(time.Since(t))
			res.CachedN++
			if code == 200 {
				res.CachedOK++
			}
			time.Sleep(b.legitEvery)
		}
	}
	poll(2 * time.Second) // the flood settles
	for i := range tries {
		if i > 0 {
			before := metric(gw.metricsURL, "comfyui_auth_credentials_last_success_timestamp_seconds")
			if err := write(i); err != nil {
				cancel()
				return nil, err
			}
			for d := time.Now().Add(10 * time.Second); time.Now().Before(d) &&
				metric(gw.metricsURL, "comfyui_auth_credentials_last_success_timestamp_seconds") == before; {
				time.Sleep(20 * time.Millisecond)
			}
			// The reload emptied the cache: the cached client checks its
			// token once more (unrecorded), as it would after any rotation.
			_, _ = getStatus(context.Background(), cached, target, cachedTok)
		}
		newcomer := &http.Client{Transport: newTransport(1, net.ParseIP(fmt.Sprintf("127.0.1.%d", 1+i))), Timeout: 30 * time.Second}
		// Like a real client, the newcomer retries a 503 after its
		// Retry-After (1 s), for up to 10 s; the try's latency is to the
		// first 200: the target is "answered 200 within a few seconds".
		t := time.Now()
		code, attempts := 0, 0
		for time.Since(t) < 10*time.Second {
			attempts++
			code, _ = getStatus(context.Background(), newcomer, target, fresh[i])
			if code != http.StatusServiceUnavailable {
				break
			}
			time.Sleep(time.Second)
		}
		lat := time.Since(t)
		res.TryAttempts = append(res.TryAttempts, attempts)
		newcomer.CloseIdleConnections()
		res.TryCodes = append(res.TryCodes, code)
		res.TryLatency = append(res.TryLatency, float64(lat.Microseconds())/1000)
		if code == 200 {
			res.TriesOK++
			if lat <= 5*time.Second {
				res.TriesOKFast++
			}
		}
		b.logf("  try %d: %d in %s, %d attempt(s)", i+1, code, lat.Round(time.Millisecond), attempts)
		poll(sample)
	}
	res.Seconds = time.Since(t0).Seconds()
	cancel()
	wg.Wait()
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
	res.AttackErrors = errs.Load()
	res.BcryptChecks = metric(gw.metricsURL, "comfyui_auth_bcrypt_checks_total") - checks0
	res.LogBytes = fileSize(logPath) - log0
	res.CachedP99 = h.quantile(0.99)
	b.logf("  first-time %d/%d ok (%d within 5 s); cached %d/%d p99 %s; attack %v; bcrypt %v; log %d bytes",
		res.TriesOK, res.Tries, res.TriesOKFast, res.CachedOK, res.CachedN, res.CachedP99, codes(res.AttackCodes), res.BcryptChecks, res.LogBytes)
	return res, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
