package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestHealthEndpointsAnswerOtherMethodsThemselves: /healthz and /readyz are
// unauthenticated, so any method other than GET and HEAD is answered 405 by
// the gateway, with Allow, and never reaches ComfyUI with its body.
func TestHealthEndpointsAnswerOtherMethodsThemselves(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfyNoOriginCheck})
	for _, p := range []string{"/healthz", "/readyz"} {
		for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS", "PATCH"} {
			g.Fake.Reset()
			resp := g.do(t, m, p, []byte(`{"clear":true}`), "Content-Type: application/json")
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" || body["reason"] == "" {
				t.Errorf("%s %s = %d, Allow %q, body %v; want 405 with Allow: GET, HEAD and a reason", m, p, resp.StatusCode, resp.Header.Get("Allow"), body)
			}
			if n := len(g.Fake.Requests()); n != 0 {
				t.Errorf("%s %s reached ComfyUI (%d requests)", m, p, n)
			}
		}
		for _, m := range []string{"GET", "HEAD"} {
			if resp := g.do(t, m, p, nil); resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s = %d, want 200", m, p, resp.StatusCode)
			}
		}
	}
}

// TestComfyUIRoutesEndingLikeAssetsNeedCredentials: nothing of ComfyUI is
// exempt from authentication, so its dynamic routes whose last segment the
// client chooses cannot be read by ending it in .js, .css or .ico; neither
// can a real static file (the login page needs only the gateway's own).
func TestComfyUIRoutesEndingLikeAssetsNeedCredentials(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfyNoOriginCheck})
	for _, p := range []string{
		"/settings/Comfy.x.js", "/api/settings/Comfy.x.css", "/object_info/KSampler.css", "/history/abc.ico",
		"/models/checkpoints.js", "/view_metadata/checkpoints.js?filename=a.safetensors", "/extensions/core/logout.js",
		"/scripts/app.js", "/favicon.ico", "/x.css.map",
	} {
		for _, m := range []string{"GET", "HEAD"} {
			g.Fake.Reset()
			resp := g.do(t, m, p, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s without credentials = %d, want 401", m, p, resp.StatusCode)
			}
			if n := len(g.Fake.Requests()); n != 0 {
				t.Errorf("%s %s without credentials reached ComfyUI", m, p)
			}
		}
	}
	// The login page and its own files still load without credentials.
	for _, p := range []string{"/login", "/comfyui-auth/login.css", "/comfyui-auth/logout.js"} {
		if resp := g.do(t, "GET", p, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", p, resp.StatusCode)
		}
	}
	page := readBody(t, g.do(t, "GET", "/login", nil))
	for _, ref := range []string{`href="/`, `src="/`} {
		for _, part := range strings.Split(page, ref)[1:] {
			if !strings.HasPrefix(part, "comfyui-auth/") {
				t.Errorf("the login page refers to /%s, outside /comfyui-auth/", strings.SplitN(part, `"`, 2)[0])
			}
		}
	}
}
