package fakecomfy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fileKey names a file under one of ComfyUI's input, output or temp directories.
type fileKey struct{ typ, subfolder, name string }

type storedFile struct {
	data   []byte // nil when the upload was too large to keep
	size   int64
	sha256 string
	stored bool
	mod    time.Time
}

// fileStore is the input/output/temp directories, in memory.
type fileStore struct {
	mu    sync.Mutex
	start time.Time
	files map[fileKey]*storedFile
	order []fileKey
}

func (fs *fileStore) init(start time.Time) {
	fs.start = start
	fs.files = map[fileKey]*storedFile{}
}

func (fs *fileStore) put(k fileKey, data []byte) {
	sum := sha256.Sum256(data)
	fs.set(k, &storedFile{data: data, size: int64(len(data)), sha256: hex.EncodeToString(sum[:]), stored: true})
}

func (fs *fileStore) set(k fileKey, f *storedFile) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	// Whole seconds, like an HTTP Last-Modified, so If-Range dates compare equal.
	f.mod = time.Now().UTC().Truncate(time.Second)
	if _, ok := fs.files[k]; !ok {
		fs.order = append(fs.order, k)
	}
	fs.files[k] = f
}

func (fs *fileStore) get(k fileKey) (*storedFile, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f, ok := fs.files[k]
	return f, ok
}

// Upload describes a file received by /upload/image or /upload/mask.
type Upload struct {
	Type      string // "input", "temp" or "output"
	Subfolder string
	Name      string // the name ComfyUI answered with, after de-duplication
	Size      int64
	SHA256    string // hex
	// Stored reports whether the bytes were kept (size <= MaxStoredFileSize),
	// so that /view can serve them back.
	Stored bool
}

// Uploads lists the files uploaded so far (and images produced by prompts),
// oldest first.
func (s *Server) Uploads() []Upload {
	fs := &s.files
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]Upload, 0, len(fs.order))
	for _, k := range fs.order {
		f := fs.files[k]
		out = append(out, Upload{Type: k.typ, Subfolder: k.subfolder, Name: k.name, Size: f.size, SHA256: f.sha256, Stored: f.stored})
	}
	return out
}

func validType(t string) bool { return t == "input" || t == "output" || t == "temp" }

// cleanSubfolder is os.path.normpath plus ComfyUI's commonpath guard: it
// reports false for a subfolder that leaves the directory.
func cleanSubfolder(sub string) (string, bool) {
	if sub == "" {
		return "", true
	}
	if strings.HasPrefix(sub, "/") {
		return "", false
	}
	c := path.Clean(sub)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	if c == "." {
		c = ""
	}
	return c, true
}

// handleUpload is POST /upload/image and /upload/mask. The body is streamed
// part by part with r.MultipartReader and never held whole: the image is
// hashed as it arrives and kept only if it is at most MaxStoredFileSize.
// A body over MaxUploadSize gets 413, as aiohttp's client_max_size does.
func (s *Server) handleUpload(mask bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ params) {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUploadSize)
		mr, err := r.MultipartReader()
		if err != nil {
			textError(w, http.StatusBadRequest)
			return
		}
		var (
			filename string
			haveFile bool
			file     *storedFile
			fields   = map[string]string{}
		)
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				uploadReadError(w, err)
				return
			}
			name := part.FormName()
			if name == "image" && part.FileName() != "" && !haveFile {
				haveFile = true
				filename = part.FileName()
				file, err = s.readFilePart(part)
				if err != nil {
					uploadReadError(w, err)
					return
				}
				continue
			}
			var b bytes.Buffer
			if _, err := io.Copy(&b, io.LimitReader(part, 1<<20)); err != nil {
				uploadReadError(w, err)
				return
			}
			if _, ok := fields[name]; !ok {
				fields[name] = b.String()
			}
			// Drain anything past the 1 MiB we keep of a form field.
			if _, err := io.Copy(io.Discard, part); err != nil {
				uploadReadError(w, err)
				return
			}
		}
		if !haveFile || filename == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if mask {
			// ComfyUI json.loads original_ref; anything else raises, hence 500.
			var ref map[string]any
			if err := json.Unmarshal([]byte(fields["original_ref"]), &ref); err != nil {
				serverError(w)
				return
			}
			// ComfyUI saves the original image with the mask's alpha; the
			// fake saves the original's bytes, and nothing when there is
			// no original, as ComfyUI does.
			file = s.maskOriginal(ref)
		}
		typ := fields["type"]
		if typ == "" {
			typ = "input"
		}
		if !validType(typ) {
			serverError(w) // get_dir_by_type leaves type_dir unbound
			return
		}
		sub, ok := cleanSubfolder(fields["subfolder"])
		if !ok || strings.Contains(filename, "/") || filename == ".." {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		overwrite := fields["overwrite"] == "true" || fields["overwrite"] == "1"
		final := filename
		if !overwrite && file != nil {
			ext := path.Ext(filename)
			base := strings.TrimSuffix(filename, ext)
			for i := 1; ; i++ {
				existing, exists := s.files.get(fileKey{typ, sub, final})
				if !exists || existing.sha256 == file.sha256 {
					break // a duplicate with the same hash is not saved again
				}
				final = fmt.Sprintf("%s (%d)%s", base, i, ext)
			}
		}
		if file != nil {
			s.files.set(fileKey{typ, sub, final}, file)
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": final, "subfolder": fields["subfolder"], "type": typ})
	}
}

// maskOriginal is the file /upload/mask's original_ref names, resolved
// as ComfyUI 0.3.64's upload_mask does (an annotation, else type, default
// output; a subfolder when not empty; the filename joined as it is), or
// nil.
func (s *Server) maskOriginal(ref map[string]any) *storedFile {
	name, _ := ref["filename"].(string)
	name, typ := annotatedFilepath(name)
	if name == "" || name[0] == '/' || strings.Contains(name, "..") {
		return nil
	}
	if typ == "" {
		typ = "output"
		if t, ok := ref["type"].(string); ok {
			typ = t
		}
	}
	sub, _ := ref["subfolder"].(string)
	sub, ok := cleanSubfolder(path.Join(sub, path.Dir(name)))
	if !validType(typ) || !ok {
		return nil
	}
	f, ok := s.files.get(fileKey{typ, sub, path.Base(name)})
	if !ok || !f.stored {
		return nil
	}
	return &storedFile{data: f.data, size: f.size, sha256: f.sha256, stored: true}
}

func uploadReadError(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		textError(w, http.StatusRequestEntityTooLarge)
		return
	}
	textError(w, http.StatusBadRequest)
}

// readFilePart hashes a file part as it streams in and keeps its bytes only
// while they fit under MaxStoredFileSize.
func (s *Server) readFilePart(part io.Reader) (*storedFile, error) {
	h := sha256.New()
	keep := &cappedBuffer{limit: s.opts.MaxStoredFileSize}
	n, err := io.Copy(io.MultiWriter(h, keep), part)
	if err != nil {
		return nil, err
	}
	f := &storedFile{size: n, sha256: hex.EncodeToString(h.Sum(nil))}
	if !keep.overflow {
		f.data, f.stored = keep.buf.Bytes(), true
		if f.data == nil {
			f.data = []byte{}
		}
	}
	return f, nil
}

// cappedBuffer keeps writes until limit bytes, then drops everything.
type cappedBuffer struct {
	buf      bytes.Buffer
	limit    int64
	overflow bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if !c.overflow {
		if int64(c.buf.Len()+len(p)) > c.limit {
			c.overflow = true
			c.buf = bytes.Buffer{}
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

// syntheticName matches the /view names the fake makes up on demand, e.g.
// size-1048576.bin: that many bytes of SyntheticByte, for download benchmarks
// and Range tests without storing anything.
var syntheticName = regexp.MustCompile(`^size-([0-9]{1,15})(\.[A-Za-z0-9]+)?$`)

// SyntheticByte is the byte at offset in every synthetic /view file, so a
// test can check any range it downloaded.
func SyntheticByte(offset int64) byte { return byte(offset % 251) }

// syntheticReader is an io.ReadSeeker over size bytes of SyntheticByte.
type syntheticReader struct{ off, size int64 }

func (r *syntheticReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	fillSynthetic(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

// syntheticPeriod is one period of SyntheticByte, copied rather than computed
// byte by byte so multi-GB downloads stay cheap.
var syntheticPeriod = func() []byte {
	b := make([]byte, 251)
	for i := range b {
		b[i] = SyntheticByte(int64(i))
	}
	return b
}()

// fillSynthetic fills p with the synthetic bytes starting at offset off.
func fillSynthetic(p []byte, off int64) {
	for start := int(off % 251); len(p) > 0; start = 0 {
		n := copy(p, syntheticPeriod[start:])
		p = p[n:]
	}
}

func (r *syntheticReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("fakecomfy: negative seek")
	}
	r.off = offset
	return offset, nil
}

// contentTypes covers what Python's mimetypes knows and Go's table may not.
var contentTypes = map[string]string{
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
	".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
	".wav": "audio/x-wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".json": "application/json",
	".txt": "text/plain", ".bin": "application/octet-stream",
}

// forcedDownload are the types ComfyUI's /view serves as octet-stream so a
// browser never renders them in ComfyUI's origin.
var forcedDownload = map[string]bool{
	"text/html": true, "text/html-sandboxed": true, "application/xhtml+xml": true,
	"text/javascript": true, "text/css": true,
}

func viewContentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	ct, ok := contentTypes[ext]
	if !ok {
		ct = mime.TypeByExtension(ext)
	}
	if base, _, _ := strings.Cut(ct, ";"); forcedDownload[strings.TrimSpace(base)] || ct == "" {
		return "application/octet-stream"
	}
	return ct
}

// handleView is GET /view. It serves through http.ServeContent, so Range,
// If-Range, If-Modified-Since and HEAD behave as they do for aiohttp's
// FileResponse; the ETag has FileResponse's "<mtime ns hex>-<size hex>" shape.
func (s *Server) handleView(w http.ResponseWriter, r *http.Request, _ params) {
	q := r.URL.Query()
	if !q.Has("filename") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	filename, typ := annotatedFilepath(q.Get("filename"))
	if filename == "" || filename[0] == '/' || strings.Contains(filename, "..") {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if typ == "" {
		typ = "output"
		if q.Has("type") {
			typ = q.Get("type")
		}
	}
	if !validType(typ) {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	sub, ok := cleanSubfolder(q.Get("subfolder"))
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	filename = path.Base(filename)

	var (
		content io.ReadSeeker
		size    int64
		mod     time.Time
	)
	if f, ok := s.files.get(fileKey{typ, sub, filename}); ok && f.stored {
		content, size, mod = bytes.NewReader(f.data), f.size, f.mod
	} else if m := syntheticName.FindStringSubmatch(filename); m != nil {
		size, _ = strconv.ParseInt(m[1], 10, 64)
		content, mod = &syntheticReader{size: size}, s.started
	} else {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", viewContentType(filename))
	h.Set("Content-Disposition", `filename="`+filename+`"`)
	h.Set("Etag", fmt.Sprintf("%q", fmt.Sprintf("%x-%x", mod.UnixNano(), size)))
	http.ServeContent(w, r, filename, mod, content)
}

// annotatedFilepath strips a trailing " [input]", " [output]" or " [temp]",
// returning the directory type it names.
func annotatedFilepath(name string) (string, string) {
	for _, t := range []string{"output", "input", "temp"} {
		if base, ok := strings.CutSuffix(name, " ["+t+"]"); ok {
			return base, t
		}
	}
	return name, ""
}

// outputPNG is the 8x8 image every fake execution "produces".
var outputPNG = func() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 32), uint8(y * 32), 128, 255})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}()

// previewJPEG is the live preview sent as a binary frame during execution.
var previewJPEG = func() []byte {
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	var b bytes.Buffer
	_ = jpeg.Encode(&b, img, nil)
	return b.Bytes()
}()
