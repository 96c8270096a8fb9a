package fakecomfy_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// TestFrontendLoadsExtensionsAndOpensTheWebsocket runs the fake frontend in a
// real headless Chromium, directly against the fake, so a later failure
// through the gateway is the gateway's and not app.js's.
func TestFrontendLoadsExtensionsAndOpensTheWebsocket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	var browser string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		// .ci/setup installs Chromium: under CI a skip would hide a broken setup.
		if os.Getenv("CI") == "true" {
			t.Fatal("no Chromium on PATH (run .ci/setup as root)")
		}
		t.Skip("no Chromium on PATH (run .ci/setup as root)")
	}
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 30*time.Second)
	defer cancelTimeout()

	err := chromedp.Do(ctx,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ws-status="received"]`)),
		chromedp.WaitVisible(chromedp.CSS(`body[data-extensions-loaded="1"]`)),
		chromedp.WaitVisible(chromedp.ID("example-extension-button")),
	)
	if err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	stats, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.systemStats`))
	if err != nil || stats != "200" {
		t.Fatalf("dataset.systemStats = %q, %v; want 200", stats, err)
	}
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.queuePrompt()`, chromedp.EvalAwaitPromise))
	if err != nil || status != 200 {
		t.Fatalf("queuePrompt() = %d, %v; want 200", status, err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`body[data-execution="done"]`))); err != nil {
		t.Fatalf("waiting for the execution frames: %v", err)
	}
	if fake.OpenWebsockets() != 1 {
		t.Errorf("OpenWebsockets() = %d, want 1", fake.OpenWebsockets())
	}
}
