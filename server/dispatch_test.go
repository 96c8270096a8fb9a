package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
)

// routerTakes builds a router with the gateway's routes, each handler
// naming itself, and reports whether r reaches the catch-all.
func routerTakes(t testing.TB, r *http.Request) bool {
	t.Helper()
	mux := chi.NewRouter()
	own := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Route", "own") })
	mux.Handle("/healthz", own)
	mux.Handle("/readyz", own)
	mux.Get(loginPath, own)
	mux.Head(loginPath, own)
	mux.Post(loginPath, own)
	mux.Get(logoutPath, own)
	mux.Get(guestModePath, own)
	mux.Get(assetPrefix+"*", own)
	mux.Head(assetPrefix+"*", own)
	mux.Handle("/*", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Route", "comfy") }))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, r)
	return rec.Header().Get("X-Route") == "comfy"
}

// TestProxiedPathsAreTheRoutersCatchAll proves the shortcut past the router
// sends to the protected chain only what the router itself would send
// there: every gateway page, in every method and spelling, still goes
// through the router; and that ComfyUI's paths do take the shortcut.
func TestProxiedPathsAreTheRoutersCatchAll(t *testing.T) {
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PROPFIND", "get"}
	targets := []string{
		"/", "/prompt", "/api/prompt", "/view?filename=x.png", "/login", "/login/", "/LOGIN", "/log%69n",
		"/logout", "/guest_mode", "/guest_mode/x", "/healthz", "/healthz/", "/readyz", "/readyz?x=1",
		"/comfyui-auth", "/comfyui-auth/", "/comfyui-auth/login.css", "/comfyui-auth%2Flogin.css",
		"//login", "/./login", "/api/../login", "/extensions", "/ws?clientId=1", "*",
	}
	for _, m := range methods {
		for _, target := range targets {
			r := httptest.NewRequest("GET", "/", nil)
			if target == "*" {
				r.URL.Path, r.URL.RawPath = "*", ""
			} else {
				r = httptest.NewRequest("GET", target, nil)
			}
			r.Method = m
			got, want := forComfyUI(r), routerTakes(t, r)
			if got && !want {
				t.Errorf("%s %s: the shortcut takes a request the router gives to a gateway page", m, target)
			}
			if !got && want && comfyPaths[target] && standard[m] {
				t.Errorf("%s %s: a request for ComfyUI misses the shortcut", m, target)
			}
		}
	}
}

var standard = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true, "OPTIONS": true}

// comfyPaths are targets that are not the gateway's: the shortcut must
// take them (anything else still reaches them, through the router).
var comfyPaths = map[string]bool{"/": true, "/prompt": true, "/api/prompt": true, "/view?filename=x.png": true,
	"/login/": true, "/LOGIN": true, "/log%69n": true, "/guest_mode/x": true, "/healthz/": true,
	"/comfyui-auth": true, "/comfyui-auth%2Flogin.css": true, "//login": true, "/./login": true,
	"/api/../login": true, "/extensions": true, "/ws?clientId=1": true}

// FuzzProxiedPathsAreTheRoutersCatchAll checks the same over any path.
func FuzzProxiedPathsAreTheRoutersCatchAll(f *testing.F) {
	for _, s := range []string{"/login", "/comfyui-auth/x", "/prompt", "/healthz", "/log%69n", "//", ""} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Method = method
		r.URL.Path = path
		if got, want := forComfyUI(r), routerTakes(t, r); got && !want {
			t.Fatalf("%q %q: the shortcut takes a request the router gives to a gateway page", method, path)
		}
	})
}
