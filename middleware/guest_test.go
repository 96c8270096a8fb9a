package middleware

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGuestRulesFollowThePromise(t *testing.T) {
	tests := []struct {
		verb, path string
		want       guestRule
	}{
		{"GET", "/", guestRead},
		{"GET", "/settings", guestSettingsRead},
		{"HEAD", "/api/settings", guestSettingsRead},
		{"GET", "/api/settings/Comfy.X", guestSettingRead},
		{"GET", "/settings/Comfy.x.json", guestSettingRead},
		{"GET", "/settings/a%2Fb", guestSettingRead},
		{"GET", "/api/settings/Comfy%2Ex", guestSettingRead},
		{"GET", "/settings/", guestSettingRead},
		{"HEAD", "/view", guestRead},
		{"GET", "/api/object_info/KSampler", guestRead},
		{"GET", "/assets/index-abc.js", guestRead},
		{"GET", "/extensions/core/x.js", guestRead},
		{"GET", "/ws", guestWebsocket},
		{"GET", "/api/ws", guestWebsocket},
		{"GET", "/queue", guestRedacted},
		{"GET", "/api/history", guestRedacted},
		{"GET", "/history/abc", guestRedacted},
		{"POST", "/prompt", guestPrompt},
		{"POST", "/api/prompt", guestPrompt},
		{"POST", "/upload/image", guestUpload},
		{"POST", "/api/upload/image", guestUpload},
		{"POST", "/settings", guestSettingsWrite},
		{"POST", "/api/settings/Comfy.X", guestSettingsWrite},
		{"GET", "/internal/logs", guestRefused},
		{"GET", "/userdata", guestRefused},
		{"GET", "/api/userdata/workflows%2Fa.json", guestRefused},
		{"GET", "/api/v2/userdata", guestRefused},
		{"GET", "/manager/reboot", guestRefused},
		{"GET", "/api/manager/reboot", guestRefused},
		{"GET", "/api/x.js", guestRefused},
		{"POST", "/upload/mask", guestRefused},
		{"POST", "/api/interrupt", guestRefused},
		{"POST", "/queue", guestRefused},
		{"POST", "/history", guestRefused},
		{"POST", "/free", guestRefused},
		{"POST", "/users", guestRefused},
		{"POST", "/api/prompt/", guestRefused},
		{"POST", "/settings/a/b", guestRefused},
		{"GET", "/api/settings/a/b", guestRefused},
		{"DELETE", "/settings", guestRefused},
		{"DELETE", "/userdata/a.json", guestRefused},
		{"PUT", "/api/prompt", guestRefused},
		{"PATCH", "/internal/logs/subscribe", guestRefused},
		{"GET", "/history/../userdata", guestRefused},
	}
	for _, tc := range tests {
		if got, reason := guestRuleFor(tc.verb, tc.path); got != tc.want || (got == guestRefused) != (reason != "") {
			t.Errorf("%s %s: rule %d (%q), want %d", tc.verb, tc.path, got, reason, tc.want)
		}
	}
}

func TestGuestPolicyLeavesOtherMethodsAlone(t *testing.T) {
	reached := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	policy := GuestPolicy(GuestOptions{SessionID: func(*http.Request) ([16]byte, bool) { return [16]byte{}, true }})(reached)
	for _, m := range []Method{MethodSession, MethodHashToken, MethodRawToken} {
		rec := httptest.NewRecorder()
		asMethod(m, policy).ServeHTTP(rec, httptest.NewRequest("DELETE", "/userdata/a.json", nil))
		if rec.Code != 299 {
			t.Errorf("%s: %d, want the request passed on", m, rec.Code)
		}
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
