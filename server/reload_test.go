package server

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func status(t *testing.T, g *gateway, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHashFileChangesAreEnforcedWithoutRestart rewrites the credential file
// the ways deployments do and checks that the new token is accepted and the
// old one refused within the 3 s the README promises.
func TestHashFileChangesAreEnforcedWithoutRestart(t *testing.T) {
	type change func(t *testing.T, path, content string)
	inPlace := func(t *testing.T, path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	renameOver := func(t *testing.T, path, content string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	deleteRecreate := func(t *testing.T, path, content string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		inPlace(t, path, content)
	}
	tests := []struct {
		name   string
		change change
		// symlink sets the file up Kubernetes-style first.
		symlink bool
	}{
		{"in place", inPlace, false},
		{"rename over", renameOver, false},
		{"delete and recreate", deleteRecreate, false},
		{"kubernetes symlink swap", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			slug := strings.ReplaceAll(tc.name, " ", "-")
			oldTok, newTok := "old-"+slug, "new-"+slug
			oldHash, newHash := lowCostHash(t, oldTok), lowCostHash(t, newTok)
			var g *gateway
			if !tc.symlink {
				g = startGateway(t, gatewayOpts{hashContent: ptr(oldHash), configure: func(c *Config) { c.PollInterval = time.Hour }})
			} else {
				dir := t.TempDir()
				mkVersion := func(name, content string) {
					if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, name, "token"), []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				mkVersion("..v1", oldHash)
				must(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
				must(t, os.Symlink("..data/token", filepath.Join(dir, "token")))
				g = startGateway(t, gatewayOpts{configure: func(c *Config) {
					c.HashFile = filepath.Join(dir, "token")
					c.PollInterval = time.Hour
				}})
				tc.change = func(t *testing.T, _, content string) {
					mkVersion("..v2", content)
					must(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
					must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
					must(t, os.RemoveAll(filepath.Join(dir, "..v1")))
				}
			}
			if s := status(t, g, oldTok); s != 200 {
				t.Fatalf("old token before the change = %d", s)
			}
			tc.change(t, g.HashFile, newHash+"\n")
			// The poll is an hour: only fsnotify can make this pass.
			eventually(t, 3*time.Second, "new token accepted and old refused", func() bool {
				return status(t, g, newTok) == 200 && status(t, g, oldTok) == 401
			})
			if s := status(t, g, newHash); s != 200 {
				t.Fatalf("new hash as token = %d", s)
			}
		})
	}
}

func TestBadContentKeepsLastGoodCredentials(t *testing.T) {
	good := lowCostHash(t, "good-token")
	for _, bad := range []string{"", "garbage that is not a hash\n", good[:40], "$2b$12$" + "x"} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			g := startGateway(t, gatewayOpts{hashContent: ptr(good), configure: func(c *Config) { c.PollInterval = 100 * time.Millisecond }})
			if s := status(t, g, "good-token"); s != 200 {
				t.Fatalf("before: %d", s)
			}
			gen := g.Server.Store().Status().Generation
			must(t, os.WriteFile(g.HashFile, []byte(bad), 0o644))
			eventually(t, 3*time.Second, "the store notices the bad content", func() bool {
				return g.Server.Store().Status().LastError != ""
			})
			if s := status(t, g, "good-token"); s != 200 {
				t.Fatalf("last good token refused after bad content: %d", s)
			}
			if got := g.Server.Store().Status().Generation; got != gen {
				t.Fatalf("generation moved from %d to %d on bad content", gen, got)
			}
			// Fixing the file recovers without restart.
			newer := lowCostHash(t, "fixed-token")
			must(t, os.WriteFile(g.HashFile, []byte(newer), 0o644))
			eventually(t, 3*time.Second, "recovery", func() bool { return status(t, g, "fixed-token") == 200 })
		})
	}
}

func TestBcryptPoolNeverExceedsItsWorkers(t *testing.T) {
	hash := lowCostHash(t, "the-right-one")
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
		c.BcryptWorkers = 2
		c.BcryptQueue = 100
		c.BcryptMaxWait = 30 * time.Second
		c.MaxLoginAttempts = 0 // this measures the pool, not the throttle
	}})
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tok := fmt.Sprintf("wrong-%d", i)
			if i%10 == 0 {
				tok = "the-right-one"
			}
			req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			// One address per client: one address may have only two
			// checks pending at a time.
			resp, err := clientFrom(t, fmt.Sprintf("127.0.1.%d", 1+i)).Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}(i)
	}
	wg.Wait()
	close(codes)
	seen := map[int]int{}
	for c := range codes {
		seen[c]++
	}
	st := g.Server.Verifier().Stats()
	if st.MaxInFlight > 2 {
		t.Fatalf("bcrypt concurrency reached %d with 2 workers", st.MaxInFlight)
	}
	if st.MaxInFlight < 1 || st.Checks < 41 {
		t.Fatalf("pool did not run: %+v", st)
	}
	if seen[200] < 1 || seen[200]+seen[401] != 50 {
		t.Fatalf("answers %v, want 401s and at least one 200", seen)
	}
}

func TestFullPoolAnswers503Immediately(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.BcryptWorkers = 1
		c.BcryptQueue = 1
		c.BcryptMaxWait = 30 * time.Second
	}})
	// Cost-12 checks of distinct wrong tokens occupy the one worker and
	// the one queue slot; the rest must be shed with 503 + Retry-After.
	var wg sync.WaitGroup
	results := make(chan *http.Response, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
			req.Header.Set("Authorization", fmt.Sprintf("Bearer flood-%d", i))
			resp, err := clientFrom(t, fmt.Sprintf("127.0.2.%d", 1+i)).Do(req)
			if err == nil {
				resp.Body.Close()
				results <- resp
			}
		}(i)
	}
	wg.Wait()
	close(results)
	busy := 0
	for r := range results {
		if r.StatusCode == http.StatusServiceUnavailable {
			busy++
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		}
	}
	if busy == 0 || g.Server.Verifier().Stats().Shed == 0 {
		t.Fatalf("no request was shed (busy=%d)", busy)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
