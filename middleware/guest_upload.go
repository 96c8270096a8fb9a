package middleware

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"path"
	"strings"
	"unicode/utf8"
)

// guestImageTypes maps the extensions a guest may upload to the image
// format their first bytes must show.
var guestImageTypes = map[string]string{
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
}

// maxGuestUploadParts bounds the parts of a guest's upload form: the image
// and the three fields ComfyUI reads.
const maxGuestUploadParts = 4

// guardUpload lets a guest's POST /upload/image through only as a new input
// image: fields `image` (once, a PNG, JPEG, WebP or GIF whose bytes match its
// extension, with a plain file name), `type` empty or `input`, `subfolder`
// empty or `pasted` (where the frontend puts pasted images), `overwrite`
// empty, `false` or `0`; no other field. Anything else would let a guest
// overwrite any input or output file (overwrite, type, subfolder) or store
// HTML or SVG that /view would serve from the gateway's origin.
//
// The form is not buffered: it is parsed as it streams in, and rewritten
// onward with the same boundary and canonical part headers (so ComfyUI's
// parser cannot read another file name than the one checked). A violation
// met mid-stream cuts the body before its end, so ComfyUI, which reads the
// whole form before writing anything, stores nothing; the guest gets the
// 403 with the reason instead of the proxy's error.
func guardUpload(w http.ResponseWriter, r *http.Request, next http.Handler) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeGuestErr(w, r, &guestErr{http.StatusBadRequest, "an upload must be multipart/form-data"})
		return
	}
	boundary := params["boundary"]
	mw := multipart.NewWriter(io.Discard)
	if mw.SetBoundary(boundary) != nil {
		writeGuestErr(w, r, &guestErr{http.StatusBadRequest, "the upload's multipart boundary is not valid"})
		return
	}
	serveRewrittenForm(w, r, next, func(dst io.Writer) error { return rewriteUpload(r.Body, boundary, dst) },
		func(w http.ResponseWriter, ge *guestErr) { writeGuestErr(w, r, ge) })
}

func refuseUpload(format string, args ...any) error {
	return &guestErr{http.StatusForbidden, "upload refused: " + fmt.Sprintf(format, args...)}
}

// rewriteUpload reads a guest's multipart form from src, checks it, and
// writes it to dst; it returns a *guestErr for a form it refuses.
func rewriteUpload(src io.Reader, boundary string, dst io.Writer) error {
	mr := multipart.NewReader(src, boundary)
	mw := multipart.NewWriter(dst)
	_ = mw.SetBoundary(boundary)
	seen := map[string]bool{}
	for n := 0; ; n++ {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &guestErr{http.StatusBadRequest, "the upload is not a valid multipart form: " + err.Error()}
		}
		if n == maxGuestUploadParts {
			return refuseUpload("more than %d form fields", maxGuestUploadParts)
		}
		cd := part.Header.Get("Content-Disposition")
		disp, params, err := mime.ParseMediaType(cd)
		if err != nil || disp != "form-data" {
			return &guestErr{http.StatusBadRequest, "a form part has no valid Content-Disposition: form-data"}
		}
		name := params["name"]
		if seen[name] {
			return refuseUpload("the field %q appears twice", name)
		}
		seen[name] = true
		if name == "image" {
			if strings.Contains(strings.ToLower(cd), "filename*") {
				return refuseUpload("the file name must be given as a plain filename parameter")
			}
			if err := copyImagePart(mw, part, params["filename"]); err != nil {
				return err
			}
			continue
		}
		if _, isFile := params["filename"]; isFile {
			return refuseUpload("only the field \"image\" may hold a file")
		}
		v, err := io.ReadAll(io.LimitReader(part, 65))
		if err != nil {
			return &guestErr{http.StatusBadRequest, "the upload could not be read: " + err.Error()}
		}
		val := string(v)
		switch name {
		case "type":
			if val != "" && val != "input" {
				return refuseUpload("guests upload to type=input only, not %q", clip(val))
			}
		case "subfolder":
			if val != "" && val != "pasted" {
				return refuseUpload("guests upload to the input folder itself (or its \"pasted\" folder), not to subfolder %q", clip(val))
			}
		case "overwrite":
			if val != "" && val != "false" && val != "0" {
				return refuseUpload("guests cannot overwrite files (overwrite=%q)", clip(val))
			}
		default:
			return refuseUpload("a guest's upload takes the fields image, type, subfolder and overwrite only, not %q", clip(name))
		}
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": name}))
		pw, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if _, err := pw.Write(v); err != nil {
			return err
		}
	}
	if !seen["image"] {
		return refuseUpload("the form has no \"image\" file")
	}
	return mw.Close()
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// copyImagePart checks the file name and the first bytes of the image, then
// streams it on under a canonical header.
func copyImagePart(mw *multipart.Writer, part io.Reader, filename string) error {
	if err := checkImageName(filename); err != nil {
		return err
	}
	want := guestImageTypes[strings.ToLower(path.Ext(filename))]
	head := make([]byte, 512)
	n, err := io.ReadFull(part, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return &guestErr{http.StatusBadRequest, "the upload could not be read: " + err.Error()}
	}
	head = head[:n]
	if got := sniffImage(head); got != want {
		if got == "" {
			return refuseUpload("%q is not a PNG, JPEG, WebP or GIF image", clip(filename))
		}
		return refuseUpload("%q holds %s data, not what its extension says", clip(filename), got)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": "image", "filename": filename}))
	h.Set("Content-Type", want)
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := pw.Write(head); err != nil {
		return err
	}
	_, err = io.Copy(pw, clientReader{part})
	return err
}

// clientReader marks errors reading the client's form (a body cut short)
// as the client's: 400, where errors writing onward are the proxy's.
type clientReader struct{ r io.Reader }

func (c clientReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = &guestErr{http.StatusBadRequest, "the upload could not be read: " + err.Error()}
	}
	return n, err
}

// checkImageName allows a plain file name with an image extension: no
// directory part, no leading dot, no control characters, valid UTF-8.
func checkImageName(name string) error {
	switch {
	case name == "":
		return refuseUpload("the image has no file name")
	case len(name) > 200 || !utf8.ValidString(name):
		return refuseUpload("the file name is too long or not UTF-8")
	case strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, "."):
		return refuseUpload("%q is not a plain file name", clip(name))
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return refuseUpload("the file name holds control characters")
		}
	}
	if _, ok := guestImageTypes[strings.ToLower(path.Ext(name))]; !ok {
		return refuseUpload("%q does not end in .png, .jpg, .jpeg, .webp or .gif", clip(name))
	}
	return nil
}

// sniffImage names the image format of a file's first bytes, "" for none
// of the four a guest may upload.
func sniffImage(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case bytes.HasPrefix(b, []byte("GIF87a")), bytes.HasPrefix(b, []byte("GIF89a")):
		return "image/gif"
	case len(b) >= 12 && bytes.HasPrefix(b, []byte("RIFF")) && string(b[8:12]) == "WEBP":
		return "image/webp"
	}
	return ""
}
