package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's browser, which .ci/setup installs.
const chromiumPath = "/usr/bin/chromium"

// requireChromium skips without the browser, except under CI=true, where a
// skip would hide a broken setup.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err == nil {
		return
	}
	msg := "Debian's chromium is not installed at " + chromiumPath + " (run .ci/setup as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// newBrowser starts a headless chromium with a fresh profile and nothing
// that reaches the network on its own, and returns a tab context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// artifactsDir is where screenshots go: $ARTIFACTS_DIR for CI to keep, else
// the test's temporary directory.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("ARTIFACTS_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// waitFor polls a JavaScript expression in the page until it is true.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			url, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.outerHTML.slice(0, 2000) : ""`))
			t.Fatalf("not within 20s: %s (%s); page %s: %s", what, err, url, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func screenshot(t *testing.T, ctx context.Context, name string, width, height int64) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height)); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactsDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the login page: %s", p)
}

func TestBrowserLogsInUsesComfyUIAndLogsOut(t *testing.T) {
	password := "correct horse battery staple"
	content := lowCostHash(t, password) + "\nalice\n"
	g := startGateway(t, gatewayOpts{hashContent: &content})
	ctx := newBrowser(t)

	// 1. An anonymous visit to / lands on the login page.
	if err := chromedp.Do(ctx, chromedp.Navigate(g.URL+"/"), chromedp.WaitVisible(chromedp.ID("password"))); err != nil {
		t.Fatal(err)
	}
	if u := location(t, ctx); u != g.URL+"/login" {
		t.Fatalf("visiting / landed on %s, want %s/login", u, g.URL)
	}
	waitFor(t, ctx, "greeting with the username", `document.body.innerText.includes("Welcome back, alice")`)
	waitFor(t, ctx, "the stylesheet applied (dark background)", `getComputedStyle(document.body).backgroundColor === "rgb(32, 32, 32)"`)
	screenshot(t, ctx, "login-desktop.png", 1280, 800)
	screenshot(t, ctx, "login-phone.png", 390, 844)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}

	// 2. A wrong password shows the message.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("password"), "not the password"),
		chromedp.Click(chromedp.ID("login")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "Wrong password shown", `location.search.includes("wrong_password=1") && document.body.innerText.includes("Wrong password")`)

	// 3. The right password lands on ComfyUI, whose script reaches the API
	// and opens the websocket through the session cookie.
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("login")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "ComfyUI page loaded", `location.pathname === "/" && !!document.getElementById("comfy-menu")`)
	waitFor(t, ctx, "API call answered 200", `document.body.dataset.systemStats === "200"`)
	waitFor(t, ctx, "websocket open", `document.body.dataset.ws === "open"`)
	waitFor(t, ctx, "extensions imported", `document.body.dataset.extensionsLoaded !== undefined && document.body.dataset.extensionsFailed === "0"`)

	// A prompt queued from the page runs (POST with Origin passes the CSRF check).
	status, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`window.queuePrompt()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 {
		t.Fatalf("queuePrompt answered %v, want 200", status)
	}

	// 4. The injected Logout button exists, in ComfyUI's menu, and logs out.
	waitFor(t, ctx, "Logout button in the menu", `!!document.querySelector("#comfy-menu #comfyui-auth-logout")`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("comfyui-auth-logout"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "back on the login page after Logout", `location.pathname === "/login" && !!document.getElementById("password")`)

	// 5. After logout, / goes back to the login page.
	if err := chromedp.Do(ctx, chromedp.Navigate(g.URL+"/"), chromedp.WaitVisible(chromedp.ID("password"))); err != nil {
		t.Fatal(err)
	}
	if u := location(t, ctx); !strings.HasPrefix(u, g.URL+"/login") {
		t.Fatalf("after logout / landed on %s", u)
	}
}

func TestBrowserGuestCanQueueButNotChangeSettings(t *testing.T) {
	content := lowCostHash(t, "guest test password")
	g := startGateway(t, gatewayOpts{hashContent: &content, configure: func(c *Config) { c.GuestMode = true }})
	ctx := newBrowser(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(g.URL+"/login"), chromedp.WaitVisible(chromedp.ID("guest"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("guest"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "guest on the ComfyUI page", `location.pathname === "/" && document.body.dataset.ws === "open"`)

	script := `(async () => {
		const prompt = await window.queuePrompt();
		const guest = await (await fetch('/guest_mode')).json();
		const before = await (await fetch('/api/settings')).text();
		const r = await fetch('/api/settings', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({"Comfy.Guest.Was.Here": true})});
		const post = {status: r.status, body: await r.text()};
		const after = await (await fetch('/api/settings')).text();
		return {prompt, guest: guest.guestMode, postStatus: post.status, postBody: post.body, unchanged: before === after};
	})()`
	res, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if res["prompt"] != float64(200) || res["guest"] != true || res["postStatus"] != float64(200) || res["postBody"] != "{}" || res["unchanged"] != true {
		t.Fatalf("guest results: %v; want prompt 200, guestMode true, POST /settings answered 200 {} and settings unchanged", res)
	}
	// The gateway gives the guest's websocket and prompt the same
	// session-bound client id, so the guest sees its own prompt run.
	waitFor(t, ctx, "the guest's own prompt reported on its websocket", `document.body.dataset.execution === "done"`)
	for _, rec := range g.Fake.Requests() {
		if rec.Method == "POST" && strings.Contains(rec.Path, "settings") {
			t.Fatalf("a guest's POST %s reached ComfyUI", rec.Path)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(g.URL+"/logout")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "guest logged out", `location.pathname === "/login"`)
}
