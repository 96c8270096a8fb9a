package middleware

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

const fuzzBoundary = "fuzzboundary0123456789"

func fuzzForm(filename string, data []byte, fields ...string) []byte {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.SetBoundary(fuzzBoundary)
	fw, _ := mw.CreateFormFile("image", filename)
	_, _ = fw.Write(data)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = mw.WriteField(fields[i], fields[i+1])
	}
	_ = mw.Close()
	return b.Bytes()
}

// FuzzGuestUpload feeds arbitrary bytes to the guest upload checker. It
// must not panic, and whatever it passes on must be a form ComfyUI reads as
// a new input image: one image part whose bytes are a PNG, JPEG, WebP or GIF
// matching a plain file name, and only type=input, an empty or "pasted"
// subfolder and no overwrite.
func FuzzGuestUpload(f *testing.F) {
	png := []byte("\x89PNG\r\n\x1a\n0000")
	f.Add(fuzzForm("a.png", png))
	f.Add(fuzzForm("a.png", png, "type", "input", "subfolder", "pasted", "overwrite", "false"))
	f.Add(fuzzForm("a.png", png, "overwrite", "true"))
	f.Add(fuzzForm("../a.png", png))
	f.Add(fuzzForm("a.svg", []byte("<svg/>")))
	f.Add(fuzzForm("a.png", png, "type", "output"))
	f.Add([]byte("--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''a.png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--" + fuzzBoundary + "--\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		var out bytes.Buffer
		err := rewriteUpload(bytes.NewReader(body), fuzzBoundary, &out)
		if err != nil {
			var ge *guestErr
			if !errors.As(err, &ge) {
				t.Fatalf("refusal without a status: %v", err)
			}
			return
		}
		mr := multipart.NewReader(&out, fuzzBoundary)
		images := 0
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("passed on a form that does not parse: %v", err)
			}
			v, _ := io.ReadAll(p)
			switch p.FormName() {
			case "image":
				images++
				if p.FileName() == "" || checkImageName(p.FileName()) != nil || sniffImage(v) == "" {
					t.Fatalf("passed on image %q starting %q", p.FileName(), v[:min(len(v), 12)])
				}
			case "type":
				if s := string(v); s != "" && s != "input" {
					t.Fatalf("passed on type %q", s)
				}
			case "subfolder":
				if s := string(v); s != "" && s != "pasted" {
					t.Fatalf("passed on subfolder %q", s)
				}
			case "overwrite":
				if s := string(v); s == "true" || s == "1" {
					t.Fatalf("passed on overwrite %q", s)
				}
			default:
				t.Fatalf("passed on field %q", p.FormName())
			}
		}
		if images != 1 {
			t.Fatalf("passed on %d images", images)
		}
	})
}

// FuzzGuestPrompt feeds arbitrary bodies to a guest's POST /prompt. It must
// not panic; a body passed on is a JSON object whose client_id is the
// guest's own and that has no number, front or prompt_id.
func FuzzGuestPrompt(f *testing.F) {
	f.Add([]byte(`{"prompt":{"1":{"class_type":"X","inputs":{}}},"client_id":"abc"}`))
	f.Add([]byte(`{"prompt":{},"front":true,"number":-1,"prompt_id":"p","client_id":"a","client_id":"b"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"a":1} {"b":2}`))
	f.Add([]byte(`{"extra_data":{"client_id":"victim"}}`))
	g := guestClient{prefix: guestPrefix([]byte("fuzz key"), [16]byte{1})}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []byte
		next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = io.ReadAll(r.Body) })
		r := httptest.NewRequest("POST", "/prompt", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		servePrompt(rec, r, next, g)
		if got == nil {
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("refused with %d", rec.Code)
			}
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("passed on %q: %v", got, err)
		}
		var id string
		_ = json.Unmarshal(m["client_id"], &id)
		if !g.owns(id) || !strings.HasPrefix(id, "guest-") {
			t.Fatalf("client_id %q is not the guest's", id)
		}
		for _, k := range []string{"number", "front", "prompt_id"} {
			if _, ok := m[k]; ok {
				t.Fatalf("%s passed on", k)
			}
		}
	})
}

// FuzzComfyPath: comfyPath agrees with url.PathUnescape wherever no %2F or
// %25 is involved, keeps those two encoded, and never panics.
func FuzzComfyPath(f *testing.F) {
	for _, s := range []string{"/userdat%61/a.json", "/userdata/a%2fb.json", "/%2561", "/%", "/%6", "/%zz", "/plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		got, ok := comfyPath(escaped)
		want, err := url.PathUnescape(escaped)
		if ok != (err == nil) {
			t.Fatalf("comfyPath(%q) ok=%v, PathUnescape err=%v", escaped, ok, err)
		}
		if !ok {
			return
		}
		upper := strings.ToUpper(escaped)
		if !strings.Contains(upper, "%2F") && !strings.Contains(upper, "%25") && got != want {
			t.Fatalf("comfyPath(%q) = %q, want %q", escaped, got, want)
		}
		if back, _ := url.PathUnescape(got); back != want {
			t.Fatalf("comfyPath(%q) = %q does not unescape to %q", escaped, got, want)
		}
	})
}
