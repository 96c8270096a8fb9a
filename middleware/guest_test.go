package middleware

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGuestPolicyAllowsReadsPromptsAndUploadsOnly(t *testing.T) {
	reached := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	tests := []struct {
		method     Method
		verb, path string
		want       int // 299: reached ComfyUI; 200: answered {} here
	}{
		{MethodGuest, "GET", "/settings", 299},
		{MethodGuest, "HEAD", "/view?filename=x", 299},
		{MethodGuest, "POST", "/prompt", 299},
		{MethodGuest, "POST", "/api/prompt", 299},
		{MethodGuest, "POST", "/upload/image", 299},
		{MethodGuest, "POST", "/api/upload/image", 299},
		{MethodGuest, "POST", "/settings", 200},
		{MethodGuest, "POST", "/api/settings/Comfy.X", 200},
		{MethodGuest, "POST", "/upload/mask", 200},
		{MethodGuest, "POST", "/api/interrupt", 200},
		{MethodGuest, "DELETE", "/userdata/a.json", 200},
		{MethodGuest, "PUT", "/api/prompt", 200},
		{MethodGuest, "POST", "/api/prompt/", 200},
		{MethodSession, "POST", "/settings", 299},
		{MethodHashToken, "DELETE", "/userdata/a.json", 299},
	}
	for _, tc := range tests {
		t.Run(string(tc.method)+" "+tc.verb+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			asMethod(tc.method, GuestPolicy(reached)).ServeHTTP(rec, httptest.NewRequest(tc.verb, tc.path, nil))
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want == 200 && rec.Body.String() != "{}" {
				t.Errorf("body %q, want {}", rec.Body)
			}
		})
	}
}

func TestSafeNextPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/queue?x=1": true, "/a/b%2Fc": true,
		"": false, "//evil.test": false, "/\\evil.test": false, "http://evil.test": false,
		"evil": false, "/a\\b": false, "/a\nb": false, "javascript:alert(1)": false,
	} {
		if got := SafeNextPath(p); got != want {
			t.Errorf("SafeNextPath(%q) = %v, want %v", p, got, want)
		}
	}
}
