package middleware

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// asMethod stands in for Auth: it records how the request was let in.
func asMethod(m Method, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &Info{Method: m}
		next.ServeHTTP(w, r.WithContext(WithInfo(r.Context(), info)))
	})
}

var ok200 = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })

func TestCSRFAppliesToCookieSessionsOnly(t *testing.T) {
	public, _ := url.Parse("https://comfy.example.com")
	tests := []struct {
		name    string
		method  Method
		public  *url.URL
		verb    string
		headers map[string]string
		want    int
	}{
		{"session GET without origin", MethodSession, nil, "GET", nil, 200},
		{"session HEAD", MethodSession, nil, "HEAD", nil, 200},
		{"session OPTIONS", MethodSession, nil, "OPTIONS", nil, 200},
		{"session POST same origin", MethodSession, nil, "POST", map[string]string{"Origin": "http://gw.test:8188"}, 200},
		{"session POST https origin, same host", MethodSession, nil, "POST", map[string]string{"Origin": "https://gw.test:8188"}, 200},
		{"session POST no origin", MethodSession, nil, "POST", nil, 403},
		{"session POST foreign origin", MethodSession, nil, "POST", map[string]string{"Origin": "http://evil.test"}, 403},
		{"session POST null origin", MethodSession, nil, "POST", map[string]string{"Origin": "null"}, 403},
		{"session POST other port", MethodSession, nil, "POST", map[string]string{"Origin": "http://gw.test:9999"}, 403},
		{"session POST sec-fetch-site same-origin", MethodSession, nil, "POST", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
		{"session POST sec-fetch-site cross-site", MethodSession, nil, "POST", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"session DELETE foreign", MethodSession, nil, "DELETE", map[string]string{"Origin": "http://evil.test"}, 403},
		{"session websocket foreign", MethodSession, nil, "GET", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://evil.test"}, 403},
		{"session websocket same origin", MethodSession, nil, "GET", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://gw.test:8188"}, 200},
		{"guest POST foreign", MethodGuest, nil, "POST", map[string]string{"Origin": "http://evil.test"}, 403},
		{"token POST foreign is not subject", MethodHashToken, nil, "POST", map[string]string{"Origin": "http://evil.test"}, 200},
		{"raw token POST without origin", MethodRawToken, nil, "POST", nil, 200},
		{"public URL matches", MethodSession, public, "POST", map[string]string{"Origin": "https://comfy.example.com"}, 200},
		{"public URL: Host-derived origin no longer enough", MethodSession, public, "POST", map[string]string{"Origin": "http://gw.test:8188"}, 403},
		{"public URL: wrong scheme", MethodSession, public, "POST", map[string]string{"Origin": "http://comfy.example.com"}, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := asMethod(tc.method, CSRF(tc.public)(ok200))
			r := httptest.NewRequest(tc.verb, "http://gw.test:8188/api/prompt", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 403 && (!strings.Contains(rec.Header().Get("Content-Type"), "json") || !strings.Contains(rec.Body.String(), `"reason"`)) {
				t.Errorf("403 without a JSON reason: %s", rec.Body)
			}
		})
	}
}
