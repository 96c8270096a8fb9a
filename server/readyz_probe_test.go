package server

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// A /readyz whose client hangs up while the upstream probe is in flight
// must not leave "ComfyUI is down" in the probe's cache: the probe finishes
// on its own, and the next /readyz reads its real answer.
func TestAbortedReadyzIsNotCachedAsUpstreamDown(t *testing.T) {
	arrived := make(chan struct{})
	var first sync.Once
	g := startGateway(t, gatewayOpts{fake: fakecomfy.Options{Delay: func(r *http.Request) time.Duration {
		if r.URL.Path != "/" {
			return 0
		}
		d := time.Duration(0)
		first.Do(func() {
			close(arrived)
			// Slow enough that the gateway sees its client leave first,
			// and within the probe's own 2 s bound.
			d = 1500 * time.Millisecond
		})
		return d
	}}})
	// One probe for the whole test: whatever the first one concludes is
	// what every later /readyz reads.
	g.Server.probe.probeTTL = time.Hour

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", g.URL+"/readyz", nil)
	aborted := make(chan error, 1)
	go func() {
		resp, err := noRedirect.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		aborted <- err
	}()
	<-arrived
	cancel()
	if err := <-aborted; err == nil {
		t.Fatal("the aborted /readyz got an answer")
	}
	eventually(t, 10*time.Second, "/readyz reports the upstream's real answer", func() bool {
		resp := g.do(t, "GET", "/readyz", nil)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
