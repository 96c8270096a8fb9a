package server

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

// TestRotationInPlaceRefusesNoRequest rotates the hash file under a running
// gateway the way `comfyui-auth token rotate` does (append in place, then
// retire in place) while a client loops with whichever token is current. The
// in-place rewrite is briefly empty or partial; the gateway must keep the
// last good credentials through it, so the client never sees a 401.
func TestRotationInPlaceRefusesNoRequest(t *testing.T) {
	const oldTok, newTok = "rotate-old-0123456789abcdefghijk", "rotate-new-0123456789abcdefghijk"
	oldHash, newHash := lowCostHash(t, oldTok), lowCostHash(t, newTok)
	g := startGateway(t, gatewayOpts{hashContent: ptr(oldHash + "\n")})
	store := g.Server.Store()
	hashCount := func() int {
		if s := store.Snapshot(); s != nil {
			return len(s.Creds.Hashes)
		}
		return 0
	}

	var current atomic.Value
	current.Store(oldTok)
	var (
		ok, total atomic.Int64
		mu        sync.Mutex
		refused   []string
		stop      = make(chan struct{})
		done      = make(chan struct{})
	)
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			tok := current.Load().(string)
			req, _ := http.NewRequest(http.MethodGet, g.URL+"/system_stats", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			total.Add(1)
			if err != nil {
				mu.Lock()
				refused = append(refused, err.Error())
				mu.Unlock()
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			} else {
				mu.Lock()
				refused = append(refused, fmt.Sprintf("%d for the %s token", resp.StatusCode, map[string]string{oldTok: "old", newTok: "new"}[tok]))
				mu.Unlock()
			}
		}
	}()
	// waitRequests lets the loop run n more requests, so each phase is
	// actually exercised.
	waitRequests := func(n int64) {
		target := total.Load() + n
		eventually(t, 10*time.Second, "the client loop to make progress", func() bool { return total.Load() >= target })
	}

	waitRequests(20)
	if _, err := hashstore.AppendHash(g.HashFile, newHash); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the gateway to load the appended hash", func() bool { return hashCount() == 2 })
	waitRequests(20)
	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+newTok); resp.StatusCode != http.StatusOK {
		t.Fatalf("new token during the overlap: %d", resp.StatusCode)
	}

	current.Store(newTok)
	waitRequests(20)
	if _, _, err := hashstore.RetireOld(g.HashFile); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the gateway to drop the retired hash", func() bool { return hashCount() == 1 })
	waitRequests(20)
	close(stop)
	<-done

	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+oldTok); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old token after retiring: %d, want 401", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(refused) > 0 {
		t.Fatalf("%d of %d looping requests failed during the rotation; first: %v", len(refused), total.Load(), refused[:min(5, len(refused))])
	}
	t.Logf("%d requests, all 200, across append and retire", ok.Load())
}
