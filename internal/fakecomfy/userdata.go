package fakecomfy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

type userFile struct {
	data []byte
	mod  time.Time
}

// userStore is ComfyUI's user directory for the single "default" user, plus
// comfy.settings.json.
type userStore struct {
	mu       sync.Mutex
	files    map[string]userFile // keyed by the cleaned relative path, e.g. "workflows/a.json"
	dirs     map[string]bool     // directories that exist even when empty
	settings map[string]any
}

func (u *userStore) init() {
	u.files = map[string]userFile{}
	u.dirs = map[string]bool{"workflows": true}
	u.settings = map[string]any{}
}

// UserData returns the content of a user data file by its decoded relative
// path ("workflows/a.json") and whether it exists.
func (s *Server) UserData(name string) ([]byte, bool) {
	s.user.mu.Lock()
	defer s.user.mu.Unlock()
	f, ok := s.user.files[name]
	return bytes.Clone(f.data), ok
}

// userPath is get_request_user_filepath: it decodes once more if a "%"
// survived the router's decoding (so a double-encoded %252F also means "/"),
// then refuses paths that leave the user directory.
func userPath(file string) (string, bool) {
	if strings.Contains(file, "%") {
		if d, err := url.PathUnescape(file); err == nil {
			file = d
		}
	}
	if strings.HasPrefix(file, "/") {
		return "", false
	}
	c := path.Clean(file)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}

func fileInfo(name string, f userFile) map[string]any {
	secs := float64(f.mod.UnixNano()) / 1e9
	return map[string]any{"path": name, "size": len(f.data), "modified": secs, "created": secs}
}

// handleListUserdata is GET /userdata?dir=&recurse=&full_info=&split=.
func (s *Server) handleListUserdata(w http.ResponseWriter, r *http.Request, _ params) {
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		http.Error(w, "Directory not provided", http.StatusBadRequest)
		return
	}
	dir, ok := userPath(dir)
	if !ok {
		http.Error(w, "Invalid directory", http.StatusForbidden)
		return
	}
	recurse := strings.EqualFold(q.Get("recurse"), "true")
	fullInfo := strings.EqualFold(q.Get("full_info"), "true")
	split := strings.EqualFold(q.Get("split"), "true")

	u := &s.user
	u.mu.Lock()
	prefix := dir + "/"
	if dir == "." {
		prefix = ""
	}
	exists := u.dirs[dir] || dir == "."
	var names []string
	for name := range u.files {
		rel, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		exists = true
		if recurse || !strings.Contains(rel, "/") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	results := []any{}
	for _, name := range names {
		rel := strings.TrimPrefix(name, prefix)
		switch {
		case fullInfo:
			results = append(results, fileInfo(rel, u.files[name]))
		case split:
			results = append(results, append([]string{rel}, strings.Split(rel, "/")...))
		default:
			results = append(results, rel)
		}
	}
	u.mu.Unlock()
	if !exists {
		http.Error(w, "Directory not found", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, results)
}

// The {file} of the /userdata routes was matched on the escaped path, so it
// arrives here already decoded from one segment: "workflows%2Fa.json" is the
// file "workflows/a.json", while "workflows/a.json" unencoded never reaches
// these handlers (GET falls to the static 404, POST and DELETE get 405).

func (s *Server) handleGetUserdata(w http.ResponseWriter, _ *http.Request, p params) {
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	s.user.mu.Lock()
	f, exists := s.user.files[name]
	s.user.mu.Unlock()
	if !exists {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", viewContentType(name))
	w.Header().Set("Last-Modified", f.mod.UTC().Format(http.TimeFormat))
	_, _ = w.Write(f.data)
}

func (s *Server) handlePostUserdata(w http.ResponseWriter, r *http.Request, p params) {
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	overwrite := q.Get("overwrite") != "false"
	fullInfo := strings.EqualFold(q.Get("full_info"), "true")

	s.user.mu.Lock()
	_, exists := s.user.files[name]
	s.user.mu.Unlock()
	if !overwrite && exists {
		http.Error(w, "File already exists", http.StatusConflict)
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		textError(w, http.StatusBadRequest)
		return
	}
	f := userFile{data: data, mod: time.Now()}
	s.user.mu.Lock()
	s.user.files[name] = f
	s.user.mu.Unlock()
	if fullInfo {
		writeJSON(w, http.StatusOK, fileInfo(name, f))
		return
	}
	writeJSON(w, http.StatusOK, name)
}

func (s *Server) handleDeleteUserdata(w http.ResponseWriter, _ *http.Request, p params) {
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	s.user.mu.Lock()
	_, exists := s.user.files[name]
	delete(s.user.files, name)
	s.user.mu.Unlock()
	if !exists {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleMoveUserdata is POST /userdata/{file}/move/{dest}.
func (s *Server) handleMoveUserdata(w http.ResponseWriter, r *http.Request, p params) {
	src, ok1 := userPath(p["file"])
	dst, ok2 := userPath(p["dest"])
	if !ok1 || !ok2 {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	overwrite := q.Get("overwrite") != "false"
	u := &s.user
	u.mu.Lock()
	f, exists := u.files[src]
	_, dstExists := u.files[dst]
	switch {
	case !exists:
		u.mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
		return
	case dstExists && !overwrite:
		u.mu.Unlock()
		http.Error(w, "File already exists", http.StatusConflict)
		return
	}
	delete(u.files, src)
	u.files[dst] = f
	u.mu.Unlock()
	if strings.EqualFold(q.Get("full_info"), "true") {
		writeJSON(w, http.StatusOK, fileInfo(dst, f))
		return
	}
	writeJSON(w, http.StatusOK, dst)
}

func (s *Server) handleGetSettings(w http.ResponseWriter, _ *http.Request, _ params) {
	s.user.mu.Lock()
	b, err := json.Marshal(s.user.settings)
	s.user.mu.Unlock()
	if err != nil {
		serverError(w)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

func (s *Server) handleGetSetting(w http.ResponseWriter, _ *http.Request, p params) {
	s.user.mu.Lock()
	v := s.user.settings[p["id"]]
	s.user.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handlePostSettings(w http.ResponseWriter, r *http.Request, _ params) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		serverError(w)
		return
	}
	s.user.mu.Lock()
	for k, v := range body {
		s.user.settings[k] = v
	}
	s.user.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handlePostSetting(w http.ResponseWriter, r *http.Request, p params) {
	var v any
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		serverError(w)
		return
	}
	s.user.mu.Lock()
	s.user.settings[p["id"]] = v
	s.user.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleGetUsers(w http.ResponseWriter, _ *http.Request, _ params) {
	writeJSON(w, http.StatusOK, map[string]any{"storage": "server", "migrated": true})
}

// unsafeUserChars is add_user's re.sub pattern for turning a name into an id.
var unsafeUserChars = regexp.MustCompile(`[^a-zA-Z0-9-_]+`)

func (s *Server) handlePostUsers(w http.ResponseWriter, r *http.Request, _ params) {
	var body struct {
		Username string `json:"username"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || strings.TrimSpace(body.Username) == "" {
		serverError(w)
		return
	}
	id := unsafeUserChars.ReplaceAllString(strings.TrimSpace(body.Username), "-")
	writeJSON(w, http.StatusOK, id+"_"+newUUID())
}
