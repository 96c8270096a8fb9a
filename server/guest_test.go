package server

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/gorilla/websocket"
)

// guestGateway starts a gateway with guest mode on and returns it with a
// guest's cookie header.
func guestGateway(t *testing.T, fake fakecomfy.Options) (*gateway, string) {
	t.Helper()
	content := lowCostHash(t, testPassword)
	g := startGateway(t, gatewayOpts{hashContent: &content, fake: fake, configure: func(c *Config) { c.GuestMode = true }})
	resp := g.do(t, "POST", "/login", form(url.Values{"guest_mode": {"1"}}), formType)
	for _, c := range resp.Cookies() {
		if c.Name == middleware.SessionCookie && c.Value != "" {
			return g, cookieHeader(c.Value)
		}
	}
	t.Fatal("no guest cookie")
	return nil, ""
}

var pngBytes = func() []byte {
	var b bytes.Buffer
	_ = png.Encode(&b, image.NewGray(image.Rect(0, 0, 2, 2)))
	return b.Bytes()
}()

const svgWithScript = `<svg xmlns="http://www.w3.org/2000/svg"><script>fetch('/api/userdata/x',{method:'POST'})</script></svg>`

// uploadForm builds an /upload/image body: the image part first, as the
// frontend sends it, then the fields in order.
func uploadForm(t *testing.T, filename string, data []byte, fields ...string) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, err := mw.CreateFormFile("image", filename)
	must(t, err)
	_, _ = fw.Write(data)
	for i := 0; i+1 < len(fields); i += 2 {
		must(t, mw.WriteField(fields[i], fields[i+1]))
	}
	must(t, mw.Close())
	return b.Bytes(), "Content-Type: " + mw.FormDataContentType()
}

// operatorHash is the hash in force, sent as a token: the operator.
func (g *gateway) operatorHash() string { return g.Server.Store().Snapshot().Creds.Hashes[0] }

func (g *gateway) storedFile(typ, sub, name string) (fakecomfy.Upload, bool) {
	for _, u := range g.Fake.Uploads() {
		if u.Type == typ && u.Subfolder == sub && u.Name == name {
			return u, true
		}
	}
	return fakecomfy.Upload{}, false
}

// TestGuestUploadsOnlyNewInputImages: a guest can add an input image, and
// nothing else: no overwriting an input or output file (overwrite, type,
// subfolder), no SVG or HTML that /view would serve from the gateway's
// origin. Each refusal is a 403 with a reason, and ComfyUI stores nothing.
func TestGuestUploadsOnlyNewInputImages(t *testing.T) {
	g, guest := guestGateway(t, fakecomfy.Options{})
	origin := "Origin: " + g.URL
	bearer := "Authorization: Bearer " + g.operatorHash()
	// The operator's files a guest would like to replace.
	for _, typ := range []string{"input", "output"} {
		body, ct := uploadForm(t, "victim.png", pngBytes, "type", typ)
		if resp := g.do(t, "POST", "/upload/image", body, bearer, ct); resp.StatusCode != 200 {
			t.Fatalf("operator upload to %s: %d", typ, resp.StatusCode)
		}
	}
	before := len(g.Fake.Uploads())
	other := append(append([]byte{}, pngBytes...), 0) // another PNG's bytes

	refused := []struct {
		name     string
		filename string
		data     []byte
		fields   []string
	}{
		{"overwrite an input", "victim.png", other, []string{"overwrite", "true"}},
		{"overwrite with 1", "victim.png", other, []string{"overwrite", "1"}},
		{"write into output", "victim.png", other, []string{"type", "output", "overwrite", "true"}},
		{"write into temp", "new.png", other, []string{"type", "temp"}},
		{"subfolder escape", "victim.png", other, []string{"subfolder", "../output", "overwrite", "true"}},
		{"other subfolder", "new.png", other, []string{"subfolder", "x"}},
		{"svg with script", "x.svg", []byte(svgWithScript), nil},
		{"svg named png", "x.png", []byte(svgWithScript), nil},
		{"html", "x.html", []byte("<script>alert(1)</script>"), nil},
		{"jpeg bytes named png", "x.png", []byte("\xff\xd8\xff\xe0 not really"), nil},
		{"path in the name", "../output/victim.png", other, nil},
		{"extra field", "new.png", other, []string{"original_ref", `{"filename":"victim.png"}`}},
		{"type twice", "new.png", other, []string{"type", "input", "type", "output"}},
	}
	for _, tc := range refused {
		body, ct := uploadForm(t, tc.filename, tc.data, tc.fields...)
		for _, p := range []string{"/upload/image", "/api/upload/image"} {
			resp := g.do(t, "POST", p, body, guest, origin, ct)
			b := readBody(t, resp)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "upload refused") {
				t.Errorf("%s via %s: %d %s, want 403 with the reason", tc.name, p, resp.StatusCode, b)
			}
		}
	}
	if after := g.Fake.Uploads(); len(after) != before {
		t.Fatalf("refused guest uploads stored %d files: %+v", len(after)-before, after[before:])
	}
	for _, typ := range []string{"input", "output"} {
		if u, _ := g.storedFile(typ, "", "victim.png"); u.Size != int64(len(pngBytes)) {
			t.Errorf("the %s file was changed by a guest", typ)
		}
	}

	// What the promise allows: a new input image, pasted or not; a name
	// already taken gets ComfyUI's " (1)" suffix instead of replacing it.
	for _, tc := range []struct{ filename, sub, want string }{
		{"mine.png", "", "mine.png"}, {"victim.png", "", "victim (1).png"}, {"clip.png", "pasted", "clip.png"},
	} {
		body, ct := uploadForm(t, tc.filename, other, "type", "input", "subfolder", tc.sub, "overwrite", "false")
		resp := g.do(t, "POST", "/api/upload/image", body, guest, origin, ct)
		if b := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"name":"`+tc.want+`"`) {
			t.Errorf("guest upload of %s: %d %s, want 200 naming %s", tc.filename, resp.StatusCode, b, tc.want)
		}
		if _, ok := g.storedFile("input", tc.sub, tc.want); !ok {
			t.Errorf("guest upload of %s was not stored as %s", tc.filename, tc.want)
		}
	}
}

// TestViewAnswersCannotRunScript: /view serves uploaded and generated files
// from the gateway's origin; an SVG there must not run script for whoever
// opens it (every user's session cookie works on this origin).
func TestViewAnswersCannotRunScript(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	bearer := "Authorization: Bearer " + seedHash
	body, ct := uploadForm(t, "drawing.svg", []byte(svgWithScript))
	if resp := g.do(t, "POST", "/upload/image", body, bearer, ct); resp.StatusCode != 200 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	for _, p := range []string{"/view", "/api/view"} {
		resp := g.do(t, "GET", p+"?filename=drawing.svg&type=input", nil, bearer)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/svg+xml") {
			t.Fatalf("%s: %d %s (the fake no longer serves SVG as ComfyUI does?)", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != "sandbox" {
			t.Errorf("%s: Content-Security-Policy %q, want sandbox", p, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no X-Content-Type-Options: nosniff", p)
		}
	}
	// An SVG from another route (a user file) is sandboxed as well.
	if resp := g.do(t, "POST", "/api/userdata/drawing.svg", []byte(svgWithScript), bearer, "Origin: "+g.URL); resp.StatusCode != 200 {
		t.Fatalf("userdata upload: %d", resp.StatusCode)
	}
	resp := g.do(t, "GET", "/api/userdata/drawing.svg", nil, bearer)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != "sandbox" {
		t.Errorf("GET /api/userdata/drawing.svg: %d, %s, CSP %q; want sandbox", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}

// TestGuestCannotReadLogsUserdataOrCustomRoutes: logs, saved workflows and
// user files, and routes that are not ComfyUI's reads are refused to guests
// with a reason, and never reach ComfyUI.
func TestGuestCannotReadLogsUserdataOrCustomRoutes(t *testing.T) {
	g, guest := guestGateway(t, fakecomfy.Options{})
	for _, p := range []string{
		"/internal/logs", "/internal/logs/raw", "/internal/folder_paths", "/internal/files/input",
		"/userdata?dir=workflows", "/api/userdata?dir=workflows", "/api/userdata/workflows%2Fa.json", "/api/v2/userdata",
		"/manager/reboot", "/api/manager/reboot", "/slow?ms=1",
	} {
		g.Fake.Reset()
		resp := g.do(t, "GET", p, nil, guest)
		if b := readBody(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "guests may look") {
			t.Errorf("guest GET %s = %d %s, want 403 with the reason", p, resp.StatusCode, b)
		}
		if n := len(g.Fake.Requests()); n != 0 {
			t.Errorf("guest GET %s reached ComfyUI", p)
		}
	}
	// Writes other than prompts and uploads are refused the same way.
	for _, p := range []string{"/api/interrupt", "/api/queue", "/api/history", "/api/free", "/api/users", "/api/upload/mask", "/api/userdata/a.json"} {
		g.Fake.Reset()
		resp := g.do(t, "POST", p, []byte(`{"clear":true}`), guest, "Origin: "+g.URL)
		if resp.StatusCode != http.StatusForbidden || len(g.Fake.Requests()) != 0 {
			t.Errorf("guest POST %s = %d (reached ComfyUI: %v), want 403", p, resp.StatusCode, len(g.Fake.Requests()) != 0)
		}
	}
	// A visitor's page still loads.
	for _, p := range []string{"/", "/api/system_stats", "/api/object_info", "/api/settings", "/api/extensions", "/scripts/app.js"} {
		if resp := g.do(t, "GET", p, nil, guest); resp.StatusCode != 200 {
			t.Errorf("guest GET %s = %d, want 200", p, resp.StatusCode)
		}
	}
}

type wsFrame struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func readFrame(t *testing.T, c *websocket.Conn) (wsFrame, bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	mt, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("websocket read: %v", err)
	}
	if mt != websocket.TextMessage {
		return wsFrame{Type: "binary"}, true
	}
	var f wsFrame
	_ = json.Unmarshal(b, &f)
	return f, true
}

// TestGuestCannotLearnOrTakeOverAnotherClient: a guest does not see other
// clients' ids in /queue or /history, cannot open a websocket under another
// client's id to receive its progress and previews, and cannot point its
// own prompt at another client.
func TestGuestCannotLearnOrTakeOverAnotherClient(t *testing.T) {
	g, guest := guestGateway(t, fakecomfy.Options{StepDelay: 100 * time.Millisecond})
	const victim = "operator-client-7f3a9c"
	bearer := http.Header{"Authorization": {"Bearer " + g.operatorHash()}, "Origin": {g.URL}}
	admin, resp, err := dialWS(t, g, "/ws?clientId="+victim, bearer)
	if err != nil {
		t.Fatalf("operator websocket: %v %v", err, resp)
	}
	defer admin.Close()
	if f, _ := readFrame(t, admin); f.Type != "status" || !strings.Contains(string(f.Data), victim) {
		t.Fatalf("operator's first frame %s %s", f.Type, f.Data)
	}

	// The guest tries the operator's id, twice in the query.
	gh := http.Header{"Cookie": {strings.TrimPrefix(guest, "Cookie: ")}, "Origin": {g.URL}}
	gws, resp, err := dialWS(t, g, "/api/ws?clientId="+victim+"&clientId="+victim, gh)
	if err != nil {
		t.Fatalf("guest websocket: %v %v", err, resp)
	}
	defer gws.Close()
	f, _ := readFrame(t, gws)
	if f.Type != "status" || strings.Contains(string(f.Data), victim) {
		t.Fatalf("guest's status frame %s: the guest was given the operator's client id", f.Data)
	}
	if rec, _ := g.Fake.LastRequest("/api/ws"); strings.Contains(rec.RawQuery, victim) {
		t.Fatalf("ComfyUI saw the guest's websocket as %q", rec.RawQuery)
	}

	// The operator queues a prompt for its websocket; the guest looks at
	// the queue while it runs, then at the history.
	prompt := []byte(`{"prompt":{"1":{"class_type":"SaveImage","inputs":{}}},"client_id":"` + victim + `","extra_data":{"api_key_comfy_org":"comfyui-secret-key-123"}}`)
	rememberSecret("comfyui-secret-key-123")
	resp = g.do(t, "POST", "/api/prompt", prompt, "Authorization: Bearer "+g.operatorHash(), "Content-Type: application/json")
	var queued struct {
		PromptID string `json:"prompt_id"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&queued))
	q := readBody(t, g.do(t, "GET", "/api/queue", nil, guest))
	if strings.Contains(q, victim) || strings.Contains(q, "comfyui-secret-key-123") {
		t.Errorf("the guest reads the operator's client id or API key in /queue: %s", q)
	}
	// The operator's own websocket gets its run; the guest's gets nothing of it.
	for done := false; !done; {
		f, _ := readFrame(t, admin)
		done = f.Type == "executing" && strings.Contains(string(f.Data), `"node":null`)
	}
	g.Fake.Broadcast(map[string]any{"type": "marker", "data": map[string]any{}})
	for {
		f, _ := readFrame(t, gws)
		if f.Type == "marker" {
			break
		}
		if f.Type == "binary" || strings.Contains(string(f.Data), queued.PromptID) && f.Type != "status" {
			t.Fatalf("the guest received the operator's %s frame", f.Type)
		}
	}
	for _, p := range []string{"/history", "/api/history", "/history/" + queued.PromptID} {
		h := readBody(t, g.do(t, "GET", p, nil, guest))
		if !strings.Contains(h, queued.PromptID) || strings.Contains(h, victim) {
			t.Errorf("guest GET %s: %s; want the entry without the operator's client id", p, h)
		}
	}
	if h := readBody(t, g.do(t, "GET", "/history", nil, "Authorization: Bearer "+g.operatorHash())); !strings.Contains(h, victim) {
		t.Errorf("the operator no longer sees its own client id in /history")
	}

	// The guest's prompt names the operator's id and tries to jump the
	// queue: it runs for the guest, at the back.
	g.Fake.Reset()
	resp = g.do(t, "POST", "/api/prompt", []byte(`{"prompt":{"1":{"class_type":"SaveImage","inputs":{}}},"client_id":"`+victim+`","front":true,"number":-5,"prompt_id":"`+queued.PromptID+`"}`),
		guest, "Origin: "+g.URL, "Content-Type: application/json")
	var mine struct {
		PromptID string  `json:"prompt_id"`
		Number   float64 `json:"number"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&mine))
	if mine.PromptID == queued.PromptID || mine.Number < 0 {
		t.Errorf("guest prompt answered %+v: it chose its prompt_id or jumped the queue", mine)
	}
	for done := false; !done; {
		f, _ := readFrame(t, gws)
		done = f.Type == "executing" && strings.Contains(string(f.Data), `"node":null`)
	}
	g.Fake.Broadcast(map[string]any{"type": "marker", "data": map[string]any{}})
	for {
		f, _ := readFrame(t, admin)
		if f.Type == "marker" {
			break
		}
		if f.Type == "binary" || strings.Contains(string(f.Data), mine.PromptID) && f.Type != "status" {
			t.Fatalf("the operator's websocket received the guest's %s frame", f.Type)
		}
	}
}

// TestLoginPageStatesWhatGuestsMayDo: the guest button's text is the
// promise the gateway enforces, word for word with GuestPolicy's reasons.
func TestLoginPageStatesWhatGuestsMayDo(t *testing.T) {
	g, _ := guestGateway(t, fakecomfy.Options{})
	page := readBody(t, g.do(t, "GET", "/login", nil))
	for _, want := range []string{
		"Guests may look (workflows, queue, history, outputs), queue prompts and upload new input images (PNG, JPEG, WebP, GIF).",
		"Nothing else: no saving settings or workflows, no replacing or deleting files, no cancelling prompts, no logs.",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the login page does not say %q", want)
		}
	}
	if strings.Contains(page, "cannot change settings or files") {
		t.Error("the login page still makes the old, broader promise")
	}
}

// TestGuestEncodedPathsAreJudgedAsComfyUIMatchesThem: ComfyUI's router
// (aiohttp 3.11) decodes every escape but %2F and %25 before matching, so
// /userdat%61/comfy.settings.json is its /userdata route. A guest's path is
// judged decoded the same way: closed routes stay closed under any spelling.
func TestGuestEncodedPathsAreJudgedAsComfyUIMatchesThem(t *testing.T) {
	g, guest := guestGateway(t, fakecomfy.Options{})
	for _, p := range []string{
		"/userdat%61/comfy.settings.json", "/%75serdata/workflows%2Fa.json", "/%61pi/userdata/workflows%2Fa.json",
		"/api/userdat%61/comfy.settings.json", "/int%65rnal/logs.json", "/api/%69nternal/logs",
		"/scripts/%2e%2e/userdata/a.json",
	} {
		g.Fake.Reset()
		resp := g.do(t, "GET", p, nil, guest)
		if b := readBody(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "guests may look") {
			t.Errorf("guest GET %s = %d %s, want 403 with the reason", p, resp.StatusCode, b)
		}
		if n := len(g.Fake.Requests()); n != 0 {
			t.Errorf("guest GET %s reached ComfyUI", p)
		}
	}
	// Encoded spellings of allowed reads still work, /queue still redacted.
	for _, p := range []string{"/api/system_st%61ts", "/%61pi/queue", "/scripts/%61pp.js"} {
		if resp := g.do(t, "GET", p, nil, guest); resp.StatusCode == http.StatusForbidden {
			t.Errorf("guest GET %s = 403, want it passed", p)
		}
	}
}

// TestGuestPromptCannotSmuggleKeysThroughACharset: ComfyUI (aiohttp) decodes
// a JSON body with the charset its Content-Type names, so under
// charset=utf-7 the key "+AGY-ront" is "front" and "prompt+AF8-id" is
// "prompt_id" to ComfyUI while the gateway, reading UTF-8, sees other keys.
// The gateway forwards the prompt it checked as plain UTF-8 JSON, and an
// upload's rewrite without the guest's Content-Encoding.
func TestGuestPromptCannotSmuggleKeysThroughACharset(t *testing.T) {
	g, guest := guestGateway(t, fakecomfy.Options{})
	for _, ct := range []string{"application/json; charset=utf-7", "text/plain; charset=UTF-16", "application/json;charset=latin-1"} {
		g.Fake.Reset()
		resp := g.do(t, "POST", "/api/prompt", []byte(`{"prompt":{"1":{"class_type":"SaveImage","inputs":{}}},"+AGY-ront":true,"prompt+AF8-id":"chosen"}`),
			guest, "Origin: "+g.URL, "Content-Type: "+ct)
		readBody(t, resp)
		rec, ok := g.Fake.LastRequest("/api/prompt")
		if !ok {
			continue // refused before ComfyUI: nothing smuggled
		}
		got := rec.Header.Get("Content-Type")
		if _, params, err := mime.ParseMediaType(got); err != nil || params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8") {
			t.Errorf("guest prompt sent as %q reached ComfyUI as %q: ComfyUI would decode it in another charset than the gateway checked", ct, got)
		}
	}
	// An upload is rewritten as the gateway checked it, in plain bytes:
	// a Content-Encoding the guest named must not make ComfyUI inflate it.
	g.Fake.Reset()
	body, ct := uploadForm(t, "encoded.png", pngBytes)
	readBody(t, g.do(t, "POST", "/upload/image", body, guest, "Origin: "+g.URL, ct, "Content-Encoding: deflate"))
	if rec, ok := g.Fake.LastRequest("/upload/image"); ok && rec.Header.Get("Content-Encoding") != "" {
		t.Errorf("guest upload reached ComfyUI with Content-Encoding %q over the gateway's plain rewrite", rec.Header.Get("Content-Encoding"))
	}
}

// TestGuestsDoNotSeeTheOperatorsSettings: without ComfyUI's multi-user
// mode, ComfyUI's settings are the operator's (extensions keep API keys
// there). A guest's GET /settings is answered {} and GET /settings/{id}
// null, as ComfyUI answers a user without settings, so the frontend loads
// on its defaults; no settings read of a guest reaches ComfyUI, under any
// spelling, while the operator still reads theirs. In the gateway's
// multi-user mode guests get the same answers.
func TestGuestsDoNotSeeTheOperatorsSettings(t *testing.T) {
	const secret = "sk-operator-0123456789"
	for _, mode := range []struct {
		name  string
		start func(t *testing.T) (g *gateway, guest, operator string)
	}{
		{"single-user", func(t *testing.T) (*gateway, string, string) {
			g, guest := guestGateway(t, fakecomfy.Options{})
			_, operator := g.login(t, testPassword)
			return g, guest, operator
		}},
		{"multi-user", func(t *testing.T) (*gateway, string, string) {
			g := multiUserGateway(t, nil, nil)
			return g, guestCookie(t, g), bearer
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			g, guest, operator := mode.start(t)
			origin := "Origin: " + g.URL
			saved := []byte(`{"Comfy.ColorPalette":"dark","SomeNode.ApiKey":"` + secret + `"}`)
			if resp := g.do(t, "POST", "/settings", saved, operator, origin); resp.StatusCode != 200 {
				t.Fatalf("the operator's settings write: %d", resp.StatusCode)
			}
			if body := readBody(t, g.do(t, "GET", "/api/settings", nil, operator)); !strings.Contains(body, secret) {
				t.Fatalf("control: the operator's settings = %s, want theirs", body)
			}
			g.Fake.Reset()
			for _, tc := range []struct{ method, path, want string }{
				{"GET", "/settings", "{}"},
				{"GET", "/api/settings", "{}"},
				{"HEAD", "/api/settings", ""},
				{"GET", "/settings/SomeNode.ApiKey", "null"},
				{"GET", "/api/settings/SomeNode.ApiKey", "null"},
				{"GET", "/api/settings/SomeNode%2EApiKey", "null"},
				{"GET", "/settings/SomeNode.ApiKey.json", "null"},
				{"GET", "/api/%73ettings", "{}"},
			} {
				resp := g.do(t, tc.method, tc.path, nil, guest)
				body := readBody(t, resp)
				if resp.StatusCode != 200 || body != tc.want || strings.Contains(body, secret) ||
					!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("guest %s %s = %d %q (%s, Cache-Control %q), want 200 %q as JSON, not stored",
						tc.method, tc.path, resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), tc.want)
				}
			}
			if reqs := g.Fake.Requests(); len(reqs) != 0 {
				t.Errorf("%d guest settings reads reached ComfyUI, first %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
			}
		})
	}
}
