package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// TestViewSecondAnnotationDoesNotReachAnotherUsersOutput: ComfyUI reads
// one "[output]", "[input]" or "[temp]" annotation off a /view filename.
// The gateway cuts the last one and forwards the rest as the filename, so
// a name annotated twice ("x.png [output] [input]") or whose last path
// element carries one ("x.png [output]/") must not reach ComfyUI as
// "x.png [output]" under type=input: ComfyUI would cut that annotation in
// turn and serve alice's output to bob as an upload.
func TestViewSecondAnnotationDoesNotReachAnotherUsersOutput(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queue(t, c.alice, "A")
	a2 := c.queueImage(t, c.alice, "alice/pic")
	g1 := c.queueImage(t, c.guest, "")
	c.runAll(t, a1, a2, g1)
	aRoot, aSub, gTemp := c.outputsOf(t, a1)[0], c.outputsOf(t, a2)[0], c.outputsOf(t, g1)[0]
	esc := url.QueryEscape
	for _, q := range []string{
		"filename=" + esc(aRoot.Filename+" [output] [input]"),
		"filename=" + esc(aRoot.Filename+" [output] [temp]"),
		"filename=" + esc(aRoot.Filename+" [output]") + "%2F&type=input",
		"filename=" + esc("x/"+aRoot.Filename+" [output]/") + "&type=input",
		"filename=" + esc(aSub.Filename+" [output] [input]") + "&subfolder=alice",
		"filename=" + esc(aSub.Filename+" [output]x[input]") + "&subfolder=alice",
		"filename=" + esc(gTemp.Filename+" [temp] [input]"),
	} {
		for _, p := range []string{"/view?", "/api/view?"} {
			st, code, body := c.view(t, "GET", p+q, c.bob)
			if st != 404 || code != middleware.CodeNotYourOutput {
				t.Errorf("bob: GET %s%s: %d %s %.40q, want 404 %s", p, q, st, code, body, middleware.CodeNotYourOutput)
			}
		}
	}
}

// maskForm is the mask editor's POST /upload/mask form: the mask image,
// then original_ref (the image it edits), type and subfolder.
func maskForm(t *testing.T, originalRef string) (body []byte, contentType string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, err := mw.CreateFormFile("image", "clipspace-mask-1.png")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(pngMagic)
	for _, kv := range [][2]string{{"original_ref", originalRef}, {"type", "input"}, {"subfolder", "clipspace"}} {
		if err := mw.WriteField(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

// uploadMask posts a mask form as who and returns the status, the
// refusal code and ComfyUI's answer.
func (c class) uploadMask(t *testing.T, who, originalRef string) (int, middleware.RefusalCode, string) {
	t.Helper()
	body, ct := maskForm(t, originalRef)
	resp := c.do(t, "POST", "/api/upload/mask", body, who, "Content-Type: "+ct, "Origin: "+c.URL)
	b, _ := io.ReadAll(resp.Body)
	var code middleware.RefusalCode
	if resp.StatusCode >= 400 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		code = refusalCode(t, "application/json", b)
	}
	return resp.StatusCode, code, string(b)
}

// TestMaskUploadDoesNotCopyAnotherUsersOutput: ComfyUI's POST
// /upload/mask reads the image its original_ref names (output by
// default) and saves it, with the mask's alpha and its PNG text (the
// prompt and workflow), as a new input file, which every user views. Bob
// naming alice's output there is refused 403 not_your_file and ComfyUI
// saves nothing; his own output, and an input file, are masked as before.
func TestMaskUploadDoesNotCopyAnotherUsersOutput(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queueImage(t, c.alice, "alice/pic")
	b1 := c.queueImage(t, c.bob, "bob/pic")
	c.runAll(t, a1, b1)
	aSub, bSub := c.outputsOf(t, a1)[0], c.outputsOf(t, b1)[0]
	ref := func(f outputFile) string {
		b, _ := json.Marshal(map[string]string{"filename": f.Filename, "subfolder": f.Subfolder, "type": f.Type})
		return string(b)
	}
	for _, r := range []string{
		ref(aSub),
		`{"filename":"` + aSub.Filename + `","subfolder":"alice"}`,
		`{"filename":"alice/` + aSub.Filename + `"}`,
		`{"filename":"alice/` + aSub.Filename + ` [output]","type":"input"}`,
		`{"filename":"` + aSub.Filename + `","subfolder":"bob/../alice","type":"output"}`,
		`{"filename":"x","filename":"` + aSub.Filename + `","subfolder":"alice"}`,
		`{"filename":"alice\/` + aSub.Filename + `"}`,
	} {
		before := len(c.Fake.Uploads())
		st, code, body := c.uploadMask(t, c.bob, r)
		if st != 403 || code != middleware.CodeNotYourFile {
			t.Errorf("bob masks alice's output with original_ref %s: %d %s %.80q, want 403 %s", r, st, code, body, middleware.CodeNotYourFile)
		}
		if n := len(c.Fake.Uploads()); n != before {
			t.Errorf("original_ref %s: ComfyUI saved %d files: %+v", r, n-before, c.Fake.Uploads()[before:])
		}
	}
	for _, r := range []string{ref(bSub), `{"filename":"size-10.png","type":"input"}`} {
		if st, code, body := c.uploadMask(t, c.bob, r); st != 200 {
			t.Errorf("bob masks with original_ref %s: %d %s %.80q, want 200", r, st, code, body)
		}
	}
	if st, code, body := c.uploadMask(t, c.operator, ref(aSub)); st != 200 {
		t.Errorf("the operator masks alice's output: %d %s %.80q, want 200", st, code, body)
	}
}

// TestPromptCannotListAnotherUsersOutputAsItsOwn: ComfyUI's Preview3D
// node echoes its camera_info input, an object the prompt gives as it
// likes, into its history entry's outputs. A camera_info shaped as an
// output item ({"filename", "subfolder", "type"}) would make bob's entry
// list alice's file: alice could no longer view it (two users' entries
// list it), and once her entry has left the history (deleted, or ComfyUI
// restarted) bob would view it as his own. Such a prompt of bob's is
// refused 403 not_your_file; naming his own output is allowed.
func TestPromptCannotListAnotherUsersOutputAsItsOwn(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queueImage(t, c.alice, "alice/pic")
	b1 := c.queueImage(t, c.bob, "bob/pic")
	c.runAll(t, a1, b1)
	aSub, bSub := c.outputsOf(t, a1)[0], c.outputsOf(t, b1)[0]
	claim := func(camera string) string {
		return `{"prompt":{"1":{"class_type":"Preview3D","inputs":{"model_file":"x.glb","camera_info":` + camera + `}}}}`
	}
	item := func(f outputFile) string {
		b, _ := json.Marshal(f)
		return strings.ToLower(string(b))
	}
	var queued []string
	for _, camera := range []string{
		`{"filename":"` + aSub.Filename + `","subfolder":"alice","type":"output"}`,
		`{"__value__":[{"filename":"` + aSub.Filename + `","subfolder":"alice"}]}`,
		`{"filename":"` + bSub.Filename + `","FILENAME":"` + aSub.Filename + `","subfolder":"alice","Subfolder":"alice"}`,
		`{"position":{"x":1},"target":[{"filename":"alice/` + aSub.Filename + `"}]}`,
	} {
		st, body := c.post(t, "/prompt", claim(camera), c.bob)
		if st != 403 || !strings.Contains(body, string(middleware.CodeNotYourFile)) {
			t.Errorf("bob's Preview3D with camera_info %s: %d %.120q, want 403 %s", camera, st, body, middleware.CodeNotYourFile)
			if st == 200 {
				queued = append(queued, promptID(t, body))
			}
		}
	}
	c.runAll(t, queued...)
	if st, code, _ := c.view(t, "GET", "/view?"+aSub.query(), c.alice); st != 200 {
		t.Errorf("alice views her output after bob's claims: %d %s, want 200", st, code)
	}
	if st, b := c.post(t, "/history", `{"delete":["`+a1+`"]}`, c.alice); st != 200 {
		t.Fatalf("alice deletes her history entry: %d %s", st, b)
	}
	// A miss makes the gateway read the whole history, which replaces
	// its index: the file is then listed by bob's entries alone.
	if st, code, _ := c.view(t, "GET", "/view?filename=none-such.png", c.bob); st != 404 {
		t.Errorf("bob views a file nobody made: %d %s, want 404", st, code)
	}
	if st, _, body := c.view(t, "GET", "/view?"+aSub.query(), c.bob); st == 200 {
		t.Errorf("bob views alice's output once her entry is gone: %d %.40q", st, body)
	}
	// His own output, in the same shape: allowed.
	if st, body := c.post(t, "/prompt", claim(item(bSub)), c.bob); st != 200 {
		t.Errorf("bob's Preview3D naming his own output: %d %.120q, want 200", st, body)
	}
}

// TestEscapedOrRepeatedPromptIDIsStillTaken: bob's prompt naming alice's
// prompt id in JSON spellings ComfyUI's json module reads as that id (every
// character \u-escaped, the key escaped, the id repeated after another) is
// refused 409 prompt_id_taken, as the plain id is.
func TestEscapedOrRepeatedPromptIDIsStillTaken(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.MaxQueuedPrompts = 10 })
	a1 := c.queue(t, c.alice, "A")
	var esc strings.Builder
	for _, r := range a1 {
		fmt.Fprintf(&esc, `\u%04x`, r)
	}
	node := `"prompt":{"1":{"class_type":"B","inputs":{}}}`
	for _, body := range []string{
		`{` + node + `,"prompt_id":"` + a1 + `"}`,
		`{` + node + `,"prompt_id":"` + esc.String() + `"}`,
		`{` + node + `,"prompt_\u0069d":"` + a1 + `"}`,
		`{` + node + `,"prompt_id":"fresh-id","prompt_id":"` + a1 + `"}`,
	} {
		st, b := c.post(t, "/prompt", body, c.bob)
		if st != 409 || !strings.Contains(b, string(middleware.CodePromptIDTaken)) {
			t.Errorf("bob's prompt %s: %d %.120q, want 409 %s", body, st, b, middleware.CodePromptIDTaken)
		}
	}
	if got := ids(t, c.gateway); len(got) != 1 || got[0] != a1 {
		t.Errorf("queue %v, want alice's prompt alone", got)
	}
}
