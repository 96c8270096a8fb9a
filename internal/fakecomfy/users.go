package fakecomfy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
)

// defaultUser is UserManager's default_user: the only user without
// --multi-user, and the id a request without comfy-user asks for with it.
const defaultUser = "default"

// userRegistry is UserManager.users (user id → display name, users.json)
// and the user directories under user/. Directories outlive the registry,
// as they do on disk when users.json is lost.
type userRegistry struct {
	mu    sync.Mutex
	order []string          // ids in users.json order (Python dicts keep it)
	names map[string]string // id → display name
	dirs  map[string]*userStore
}

// init loads users, the users.json of a --multi-user start ({} when nil);
// without multiUser the registry is {"default": "default"}, as UserManager
// sets it whatever users.json holds.
func (u *userRegistry) init(multiUser bool, users []User) {
	u.names = map[string]string{}
	u.dirs = map[string]*userStore{}
	if !multiUser {
		users = []User{{ID: defaultUser, Name: defaultUser}}
	}
	for _, x := range users {
		u.add(x.ID, x.Name)
	}
}

func (u *userRegistry) add(id, name string) {
	if _, ok := u.names[id]; !ok {
		u.order = append(u.order, id)
	}
	u.names[id] = name
}

// dir returns the directory of user id, creating it empty.
func (u *userRegistry) dir(id string) *userStore {
	u.mu.Lock()
	defer u.mu.Unlock()
	d, ok := u.dirs[id]
	if !ok {
		d = &userStore{}
		d.init()
		u.dirs[id] = d
	}
	return d
}

// User is one entry of ComfyUI's users.json: a user id (the directory name
// under user/) and the display name it was created with.
type User struct {
	ID   string
	Name string
}

// Users returns the registry in users.json order.
func (s *Server) Users() []User {
	s.users.mu.Lock()
	defer s.users.mu.Unlock()
	out := make([]User, 0, len(s.users.order))
	for _, id := range s.users.order {
		out = append(out, User{ID: id, Name: s.users.names[id]})
	}
	return out
}

// ForgetUsers empties the registry, as a --multi-user ComfyUI restarted
// after users.json was lost; the user directories stay.
func (s *Server) ForgetUsers() {
	s.users.mu.Lock()
	defer s.users.mu.Unlock()
	s.users.order = nil
	s.users.names = map[string]string{}
}

// requestUser is get_request_user_id: comfy-user names the user in
// --multi-user mode (the first value when sent twice, as aiohttp's
// headers[] returns it), "default" otherwise; an id missing from the
// registry is ComfyUI's KeyError "Unknown user: X".
func (s *Server) requestUser(r *http.Request) (*userStore, string, bool) {
	id := defaultUser
	if s.opts.MultiUser {
		if v, ok := r.Header["Comfy-User"]; ok && len(v) > 0 {
			id = v[0]
		}
	}
	s.users.mu.Lock()
	_, known := s.users.names[id]
	s.users.mu.Unlock()
	if !known {
		s.logf("fakecomfy: Unknown user: %s", id)
		return nil, id, false
	}
	return s.users.dir(id), id, true
}

// userdataUser is the user of a /userdata request. ComfyUI lets the
// KeyError of an unknown user escape there, which aiohttp answers 500.
func (s *Server) userdataUser(w http.ResponseWriter, r *http.Request) (*userStore, bool) {
	u, _, ok := s.requestUser(r)
	if !ok {
		serverError(w)
	}
	return u, ok
}

// settingsUser is the user of a /settings request: AppSettings turns the
// KeyError into HTTPUnauthorized, 401.
func (s *Server) settingsUser(w http.ResponseWriter, r *http.Request) (*userStore, bool) {
	u, _, ok := s.requestUser(r)
	if !ok {
		textError(w, http.StatusUnauthorized)
	}
	return u, ok
}

// handleGetUsers is GET /users: the whole registry with --multi-user,
// otherwise whether the default user's directory exists (always, here).
func (s *Server) handleGetUsers(w http.ResponseWriter, _ *http.Request, _ params) {
	if !s.opts.MultiUser {
		writeJSON(w, http.StatusOK, map[string]any{"storage": "server", "migrated": true})
		return
	}
	// Written by hand: users.json order, which a Go map would lose.
	var b bytes.Buffer
	b.WriteString(`{"storage": "server", "users": {`)
	for i, u := range s.Users() {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(u.ID)
		v, _ := json.Marshal(u.Name)
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteString("}}")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// unsafeUserChars is add_user's re.sub pattern for turning a name into an id.
var unsafeUserChars = regexp.MustCompile(`[^a-zA-Z0-9-_]+`)

// handlePostUsers is POST /users {"username": NAME}: 400 "Duplicate
// username." when a user already has that display name, else a new id
// `<name with unsafe characters as '-'>_<uuid4>`, as a JSON string. A body
// without a username is a KeyError or ValueError there: 500.
func (s *Server) handlePostUsers(w http.ResponseWriter, r *http.Request, _ params) {
	var body struct {
		Username *string `json:"username"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Username == nil {
		serverError(w)
		return
	}
	name := *body.Username
	u := &s.users
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.names {
		if n == name {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Duplicate username."})
			return
		}
	}
	name = strings.TrimSpace(name)
	if name == "" {
		serverError(w)
		return
	}
	id := unsafeUserChars.ReplaceAllString(name, "-") + "_" + newUUID()
	u.add(id, name)
	writeJSON(w, http.StatusOK, id)
}
