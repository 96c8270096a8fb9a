package fakecomfy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

type userFile struct {
	data []byte
	mod  time.Time
}

// userStore is one user's directory under ComfyUI's user/ (the "default"
// user's, or one per user id in --multi-user mode), plus its
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

// UserData returns the content of one of the "default" user's data files
// by its decoded relative path ("workflows/a.json") and whether it exists.
func (s *Server) UserData(name string) ([]byte, bool) {
	return s.UserDataOf(defaultUser, name)
}

// UserDataOf is UserData for the user directory of id (a user id in
// --multi-user mode).
func (s *Server) UserDataOf(id, name string) ([]byte, bool) {
	u := s.users.dir(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	f, ok := u.files[name]
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
	u, ok := s.userdataUser(w, r)
	if !ok {
		return
	}
	dir, ok = userPath(dir)
	if !ok {
		http.Error(w, "Invalid directory", http.StatusForbidden)
		return
	}
	recurse := strings.EqualFold(q.Get("recurse"), "true")
	fullInfo := strings.EqualFold(q.Get("full_info"), "true")
	split := strings.EqualFold(q.Get("split"), "true")

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

func (s *Server) handleGetUserdata(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.userdataUser(w, r)
	if !ok {
		return
	}
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	u.mu.Lock()
	f, exists := u.files[name]
	u.mu.Unlock()
	if !exists {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", viewContentType(name))
	w.Header().Set("Last-Modified", f.mod.UTC().Format(http.TimeFormat))
	_, _ = w.Write(f.data)
}

func (s *Server) handlePostUserdata(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.userdataUser(w, r)
	if !ok {
		return
	}
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	overwrite := q.Get("overwrite") != "false"
	fullInfo := strings.EqualFold(q.Get("full_info"), "true")

	u.mu.Lock()
	_, exists := u.files[name]
	u.mu.Unlock()
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
	u.mu.Lock()
	u.files[name] = f
	u.mu.Unlock()
	if fullInfo {
		writeJSON(w, http.StatusOK, fileInfo(name, f))
		return
	}
	writeJSON(w, http.StatusOK, name)
}

func (s *Server) handleDeleteUserdata(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.userdataUser(w, r)
	if !ok {
		return
	}
	name, ok := userPath(p["file"])
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	u.mu.Lock()
	_, exists := u.files[name]
	delete(u.files, name)
	u.mu.Unlock()
	if !exists {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleMoveUserdata is POST /userdata/{file}/move/{dest}.
func (s *Server) handleMoveUserdata(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.userdataUser(w, r)
	if !ok {
		return
	}
	src, ok1 := userPath(p["file"])
	dst, ok2 := userPath(p["dest"])
	if !ok1 || !ok2 {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	overwrite := q.Get("overwrite") != "false"
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

func (s *Server) handleGetSettings(w http.ResponseWriter, r *http.Request, _ params) {
	u, ok := s.settingsUser(w, r)
	if !ok {
		return
	}
	u.mu.Lock()
	b, err := json.Marshal(u.settings)
	u.mu.Unlock()
	if err != nil {
		serverError(w)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

func (s *Server) handleGetSetting(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.settingsUser(w, r)
	if !ok {
		return
	}
	u.mu.Lock()
	v := u.settings[p["id"]]
	u.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handlePostSettings(w http.ResponseWriter, r *http.Request, _ params) {
	u, ok := s.settingsUser(w, r)
	if !ok {
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		serverError(w)
		return
	}
	u.mu.Lock()
	for k, v := range body {
		u.settings[k] = v
	}
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handlePostSetting(w http.ResponseWriter, r *http.Request, p params) {
	u, ok := s.settingsUser(w, r)
	if !ok {
		return
	}
	var v any
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		serverError(w)
		return
	}
	u.mu.Lock()
	u.settings[p["id"]] = v
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}
