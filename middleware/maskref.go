package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxMaskRefBytes bounds the original_ref field of a mask upload: the
// frontend's is a JSON object of three short names.
const maxMaskRefBytes = 64 << 10

// MaskOriginal is the file ComfyUI 0.3.64's POST /upload/mask reads for
// the form field original_ref, resolved as it does: a JSON object whose
// filename may end in an "[output]", "[input]" or "[temp]" annotation
// (which names the directory), else type names it ("output" when absent);
// a subfolder when not empty; the filename joined as it is, path and all.
// The error says why the gateway cannot tell the file: not such an object,
// a name that is not a string, that ComfyUI would refuse (empty, a
// leading "/", a ".."), that leaves its directory, is not UTF-8, or whose
// last element still ends in an annotation.
func MaskOriginal(raw []byte) (OutputFile, error) {
	var f OutputFile
	ms, err := readObject(raw)
	if err != nil {
		return f, errors.New("original_ref is not a JSON object")
	}
	var name, typ, sub *string
	for _, m := range ms {
		var dst **string
		switch m.key {
		case "filename":
			dst = &name
		case "type":
			dst = &typ
		case "subfolder":
			dst = &sub
		default:
			continue
		}
		var s string
		if json.Unmarshal(m.val, &s) != nil {
			return f, errors.New("original_ref's " + m.key + " is not a string")
		}
		*dst = &s
	}
	if name == nil {
		return f, errors.New("original_ref has no filename")
	}
	n := *name
	for _, t := range []string{"output", "input", "temp"} {
		if base, cut := strings.CutSuffix(n, "["+t+"]"); cut {
			_, size := utf8.DecodeLastRuneInString(base)
			n, f.Type = base[:len(base)-size], t
			break
		}
	}
	if n == "" || n[0] == '/' || strings.Contains(n, "..") {
		return f, errors.New("original_ref's filename is empty, absolute or holds \"..\"")
	}
	if f.Type == "" {
		f.Type = "output"
		if typ != nil {
			f.Type = *typ
		}
		if f.Type != "output" && f.Type != "temp" && f.Type != "input" {
			return f, errors.New("original_ref's type is not output, input or temp")
		}
	}
	s := ""
	if sub != nil {
		s = *sub
	}
	if strings.HasPrefix(s, "/") {
		return f, errors.New("original_ref's subfolder is absolute")
	}
	rel := path.Clean(path.Join(s, n))
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return f, errors.New("original_ref names no file inside its directory")
	}
	f.Subfolder, f.Filename = path.Dir(rel), path.Base(rel)
	if f.Subfolder == "." {
		f.Subfolder = ""
	}
	if !plainName(f.Subfolder) || !plainName(f.Filename) || annotated(f.Filename) {
		return f, errors.New("original_ref's names are not plain UTF-8 file names")
	}
	return f, nil
}

// maskRefusal is a refusal met while a mask form streams to ComfyUI.
type maskRefusal struct {
	status int
	code   RefusalCode
	reason string
	failed error // ComfyUI's history could not be read: o.Failed answers
}

func (e *maskRefusal) Error() string { return e.reason }

// serveMask passes a named user's or guest's POST /upload/mask on only
// when the image its original_ref names is an input file or an output or
// temp file of the caller's own prompts (Outputs decides): ComfyUI saves
// that image, with the mask's alpha and its PNG text (the prompt and the
// workflow), as a new input file, which every user views. The form is
// rewritten as it streams, like a guest's upload (guardUpload): parts
// under canonical headers, original_ref written out as the gateway read
// it, so ComfyUI reads the file checked. A refusal cuts the form short,
// and ComfyUI, which reads the whole form first, saves nothing.
func (o OwnPromptsOptions) serveMask(w http.ResponseWriter, r *http.Request, next http.Handler, user string) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" ||
		multipart.NewWriter(io.Discard).SetBoundary(params["boundary"]) != nil {
		o.refuseMask(w, r, &maskRefusal{status: http.StatusBadRequest, code: CodePromptUnreadable,
			reason: "a mask upload must be multipart/form-data with a valid boundary, as the mask editor sends it"})
		return
	}
	serveRewrittenForm(w, r, next,
		func(dst io.Writer) error { return o.rewriteMask(r.Context(), user, r.Body, params["boundary"], dst) },
		func(w http.ResponseWriter, mr *maskRefusal) { o.refuseMask(w, r, mr) })
}

func (o OwnPromptsOptions) refuseMask(w http.ResponseWriter, r *http.Request, mr *maskRefusal) {
	if mr.failed != nil {
		o.Failed(w, r, mr.failed)
		return
	}
	InfoFrom(r).Reason = "own outputs: mask upload: " + mr.reason
	errText := "The mask upload could not be read."
	if mr.status == http.StatusForbidden {
		errText = "The mask upload names a file that is not yours."
	}
	Refuse(w, r, mr.status, mr.code, errText, mr.reason)
}

// rewriteMask copies a mask form from src to dst under canonical part
// headers, checking its original_ref; it returns a *maskRefusal for a
// form it refuses.
func (o OwnPromptsOptions) rewriteMask(ctx context.Context, user string, src io.Reader, boundary string, dst io.Writer) error {
	unreadable := func(reason string) error {
		return &maskRefusal{status: http.StatusBadRequest, code: CodePromptUnreadable, reason: reason}
	}
	mr := multipart.NewReader(src, boundary)
	mw := multipart.NewWriter(dst)
	_ = mw.SetBoundary(boundary)
	seenRef := false
	for {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return unreadable("the form is not valid multipart: " + err.Error())
		}
		disp, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if err != nil || disp != "form-data" {
			return unreadable("a form part has no valid Content-Disposition: form-data")
		}
		name := params["name"]
		dp := map[string]string{"name": name}
		filename, isFile := params["filename"]
		if isFile {
			dp["filename"] = filename
		}
		cd := mime.FormatMediaType("form-data", dp)
		if cd == "" {
			return unreadable("a form part's name or file name cannot be written out plainly")
		}
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", cd)
		if name == "original_ref" {
			if seenRef || isFile {
				return unreadable("original_ref must be one plain form field")
			}
			seenRef = true
			v, err := io.ReadAll(io.LimitReader(clientReader{part}, maxMaskRefBytes+1))
			if err != nil {
				return unreadable("the form could not be read: " + err.Error())
			}
			if len(v) > maxMaskRefBytes {
				return unreadable("original_ref is over " + strconv.Itoa(maxMaskRefBytes>>10) + " KiB")
			}
			f, err := MaskOriginal(v)
			if err != nil {
				return unreadable(err.Error() + "; send {\"filename\", \"subfolder\", \"type\"} as the mask editor does")
			}
			if f.Type != "input" {
				mine, err := o.Outputs.Owns(ctx, user, f)
				if err != nil {
					return &maskRefusal{failed: err, reason: err.Error()}
				}
				if !mine {
					return &maskRefusal{status: http.StatusForbidden, code: CodeNotYourFile,
						reason: "original_ref names the " + f.Type + " file " + strconv.Quote(path.Join(f.Subfolder, f.Filename)) +
							", which no prompt of " + whose(user) + " in ComfyUI's history lists; mask your own outputs or an uploaded image"}
				}
			}
			v, _ = json.Marshal(map[string]string{"filename": f.Filename, "subfolder": f.Subfolder, "type": f.Type})
			pw, err := mw.CreatePart(h)
			if err != nil {
				return err
			}
			if _, err := pw.Write(v); err != nil {
				return err
			}
			continue
		}
		if ct := part.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
		pw, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if _, err := io.Copy(pw, clientReader{part}); err != nil {
			var ge *guestErr
			if errors.As(err, &ge) {
				return unreadable(ge.reason)
			}
			return err
		}
	}
	return mw.Close()
}
