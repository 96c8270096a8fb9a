package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/rs/zerolog"
)

// registryMaxAge is how long the gateway trusts its copy of ComfyUI's user
// registry before reading it again. ComfyUI forgets users only by
// restarting without its users.json; a request that meets "Unknown user"
// makes the next one re-read at once (see forget), and this bounds the
// time a restart can go unnoticed to one GET /users every 10 s at most.
const registryMaxAge = 10 * time.Second

// maxRegistryBytes bounds ComfyUI's GET /users answer the gateway reads:
// about 40,000 users.
const maxRegistryBytes = 4 << 20

// comfyRegistry finds, and when missing creates, each gateway user's id in
// ComfyUI's --multi-user registry (app/user_manager.py). The registry is
// keyed by display name: the gateway's user "alice" is the ComfyUI user
// whose name is "alice", the first such id in users.json order when an
// operator made several; POST /users creates it otherwise.
type comfyRegistry struct {
	base   *url.URL
	client *http.Client
	logger zerolog.Logger

	mu      sync.RWMutex
	ids     map[string]string // display name → id, from the last GET /users
	checked time.Time         // when ids was read; zero: read again

	// slow admits one registry read or write at a time, so that the
	// first requests of a new user, arriving together, create one entry.
	slow chan struct{}
	// warned spaces out the warning of a registry that cannot be used,
	// which every request would otherwise repeat.
	warned onceEvery
}

func newComfyRegistry(base *url.URL, client *http.Client, logger zerolog.Logger) *comfyRegistry {
	return &comfyRegistry{base: base, client: client, logger: logger, ids: map[string]string{}, slow: make(chan struct{}, 1),
		warned: onceEvery{every: time.Minute}}
}

// registryError is why a user has no id: the status, code and sentence the
// request is refused with.
type registryError struct {
	status int
	code   middleware.RefusalCode
	reason string
}

func (e *registryError) Error() string { return e.reason }

// cached returns name's id while the copy of the registry is fresh.
func (c *comfyRegistry) cached(name string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	id, ok := c.ids[name]
	return id, ok && !c.checked.IsZero() && time.Since(c.checked) < registryMaxAge
}

// forget makes the next request read the registry again: ComfyUI said
// "Unknown user" or could not be reached, so it may have restarted
// without its users.json.
func (c *comfyRegistry) forget() {
	c.mu.Lock()
	c.checked = time.Time{}
	c.mu.Unlock()
}

// id returns name's ComfyUI user id, registering name when ComfyUI has no
// user of that name.
func (c *comfyRegistry) id(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", &registryError{http.StatusBadGateway, middleware.CodeUserRegistry, "the request has no authenticated user to name to ComfyUI"}
	}
	if id, ok := c.cached(name); ok {
		return id, nil
	}
	select {
	case c.slow <- struct{}{}:
		defer func() { <-c.slow }()
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if id, ok := c.cached(name); ok {
		return id, nil // read by the request that held the turn
	}
	ids, err := c.read(ctx)
	if err != nil {
		// An id once read stays that user's: ComfyUI never gives it to
		// another name. While the registry cannot be read, the user keeps
		// it, and the proxy reports ComfyUI's state as for any request.
		c.mu.RLock()
		id, known := c.ids[name]
		c.mu.RUnlock()
		if known && ctx.Err() == nil {
			return id, nil
		}
		return "", err
	}
	if id, ok := ids[name]; ok {
		return id, nil
	}
	id, err := c.create(ctx, name)
	var dup errDuplicate
	if errors.As(err, &dup) {
		// Made since the read, by someone else: read again.
		if ids, err = c.read(ctx); err != nil {
			return "", err
		}
		if id, ok := ids[name]; ok {
			return id, nil
		}
		return "", &registryError{http.StatusBadGateway, middleware.CodeUserRegistry,
			fmt.Sprintf("ComfyUI says a user named %q exists but lists none under an id the gateway can send; check users.json in ComfyUI's user directory", name)}
	}
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.ids[name] = id
	c.mu.Unlock()
	c.logger.Info().Str("user", name).Str("comfy_user", id).Msg("registered the user in ComfyUI's user registry")
	return id, nil
}

// read is GET /users; it replaces the cached copy.
func (c *comfyRegistry) read(ctx context.Context) (map[string]string, error) {
	status, body, err := c.call(ctx, http.MethodGet, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, registryAnswer(fmt.Sprintf("GET /users answered %d", status))
	}
	ids, err := parseComfyUsers(body)
	if err != nil {
		return nil, registryAnswer(err.Error())
	}
	c.mu.Lock()
	c.ids, c.checked = ids, time.Now()
	c.mu.Unlock()
	return ids, nil
}

type errDuplicate struct{}

func (errDuplicate) Error() string { return "duplicate username" }

// create is POST /users {"username": name}.
func (c *comfyRegistry) create(ctx context.Context, name string) (string, error) {
	req, _ := json.Marshal(map[string]string{"username": name})
	status, body, err := c.call(ctx, http.MethodPost, req)
	if err != nil {
		return "", err
	}
	if status == http.StatusBadRequest && bytes.Contains(body, []byte("Duplicate username")) {
		return "", errDuplicate{}
	}
	var id string
	if status != http.StatusOK || json.Unmarshal(body, &id) != nil || !sendableID(id) {
		return "", registryAnswer(fmt.Sprintf("POST /users for %q answered %d %.100q", name, status, body))
	}
	return id, nil
}

func registryAnswer(what string) error {
	return &registryError{http.StatusBadGateway, middleware.CodeUserRegistry,
		"ComfyUI's user registry could not be used (" + what + "); is ComfyUI started with --multi-user? --comfy-multi-user needs it"}
}

func (c *comfyRegistry) call(ctx context.Context, method string, body []byte) (int, []byte, error) {
	u := *c.base
	u.Path = "/users"
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, upstreamCallError(err, "to find the user in its user registry")
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistryBytes+1))
	if err != nil {
		return 0, nil, upstreamCallError(err, "to find the user in its user registry")
	}
	if len(b) > maxRegistryBytes {
		return 0, nil, registryAnswer(fmt.Sprintf("GET /users is over %d MiB", maxRegistryBytes>>20))
	}
	return resp.StatusCode, b, nil
}

// upstreamCallError is a failed request of the gateway's own to ComfyUI,
// refused as the proxy refuses a failed proxied one: 504 upstream_timeout
// or 502 upstream_down.
func upstreamCallError(err error, purpose string) error {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &registryError{http.StatusGatewayTimeout, middleware.CodeUpstreamTimeout, "ComfyUI did not answer in time " + purpose + "."}
	}
	return &registryError{http.StatusBadGateway, middleware.CodeUpstreamDown, "ComfyUI could not be reached " + purpose + "; it may still be starting."}
}

// parseComfyUsers reads GET /users of a --multi-user ComfyUI,
// {"storage": "server", "users": {id: name, ...}}, into name → id. The
// first id of a name in the answer's order wins (users.json order); ids
// that cannot be sent as a header value are skipped. An answer without
// "users" is a ComfyUI without --multi-user.
func parseComfyUsers(raw []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("GET /users is not a JSON object")
	}
	var ids map[string]string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("GET /users: %w", err)
		}
		if k, _ := t.(string); k != "users" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("GET /users: %w", err)
			}
			continue
		}
		if ids, err = readUserMap(dec); err != nil {
			return nil, fmt.Errorf("GET /users: users: %w", err)
		}
	}
	if ids == nil {
		return nil, errors.New(`GET /users has no "users": ComfyUI runs without --multi-user`)
	}
	return ids, nil
}

func readUserMap(dec *json.Decoder) (map[string]string, error) {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	ids := map[string]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		id, _ := t.(string)
		var name string
		if err := dec.Decode(&name); err != nil {
			return nil, err
		}
		if _, seen := ids[name]; !seen && sendableID(id) {
			ids[name] = id
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return ids, nil
}

// sendableID reports whether id can go in a header and names a directory
// under ComfyUI's user/ (it refuses ids that leave it, as ComfyUI does).
func sendableID(id string) bool {
	if id == "" || len(id) > 256 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

// comfyUserKey carries the request's ComfyUI user id from bindComfyUser to
// the proxy's Rewrite.
type comfyUserKey struct{}

// comfyUserOf is the ComfyUI user id bindComfyUser chose for r.
func comfyUserOf(r *http.Request) (string, bool) {
	id, ok := r.Context().Value(comfyUserKey{}).(string)
	return id, ok && id != ""
}

// bindComfyUser is --comfy-multi-user. Every request past it carries its
// user's ComfyUI id to the proxy, which sends it as Comfy-User in place of
// anything the client sent; a request whose user has no id (ComfyUI down,
// or not in --multi-user mode) is refused, never passed on without one.
//
// The gateway answers ComfyUI's /users itself, so that no browser can pick
// or create another user in the frontend's user-selection screen: GET
// answers `{"storage": "server", "migrated": true}`, the single-user shape,
// on which the frontend (userStore.isMultiUserServer is `'users' in
// config`) shows no selection screen and sends no Comfy-User of its own;
// the gateway supplies it. Any other method, POST /users creating a user
// first, is refused 403 users_managed.
func (s *Server) bindComfyUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/users" || p == "/api/users" {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				middleware.WriteJSON(w, http.StatusOK, map[string]any{"storage": "server", "migrated": true})
				return
			}
			middleware.Refuse(w, r, http.StatusForbidden, middleware.CodeUsersManaged, "Users are managed by the gateway.",
				"the gateway gives each login its own ComfyUI user (--comfy-multi-user); ComfyUI users cannot be created or chosen here: add a user to the credential file instead")
			return
		}
		info := middleware.InfoFrom(r)
		id, err := s.comfyUsers.id(r.Context(), info.User)
		if err != nil {
			if r.Context().Err() != nil {
				info.Reason = "client closed the request"
				w.WriteHeader(499)
				return
			}
			var re *registryError
			if !errors.As(err, &re) {
				re = registryAnswer(err.Error()).(*registryError)
			}
			info.Reason = "comfy user: " + re.reason
			if s.comfyUsers.warned.allow() {
				s.logger.Warn().Str("user", info.User).Str("code", string(re.code)).Msg(re.reason + " (said once a minute)")
			}
			w.Header().Set("Retry-After", "5")
			if re.code != middleware.CodeUserRegistry && strings.Contains(r.Header.Get("Accept"), "text/html") {
				// A browser waiting for ComfyUI to start gets the page that
				// retries by itself, as from the proxy.
				middleware.NoteCode(r, re.code)
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(re.status)
				_, _ = io.WriteString(w, upstreamDownPage(re.reason, re.code))
				return
			}
			middleware.Refuse(w, r, re.status, re.code, "No ComfyUI user for this login.",
				re.reason+" The request was not passed to ComfyUI.")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), comfyUserKey{}, id)))
	})
}

// setComfyUser removes every Comfy-User a client sent, in any case and
// with '_' for '-', however often, and sets id when there is one.
func setComfyUser(h http.Header, id string) {
	for k := range h {
		if len(k) == len("Comfy-User") && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "Comfy-User") {
			delete(h, k)
		}
	}
	if id != "" {
		h.Set("Comfy-User", id)
	}
}

// userScoped reports whether a ComfyUI path answers per user, so that a
// 401, 403 or 500 from it to a request with Comfy-User can be ComfyUI's
// "Unknown user" (AppSettings answers 401, /v2/userdata 403, /userdata
// lets the KeyError become 500).
func userScoped(p string) bool {
	p = strings.TrimPrefix(p, "/api")
	for _, prefix := range []string{"/settings", "/userdata", "/v2/userdata"} {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	return false
}

// noteUnknownUser re-reads the registry on the next request when ComfyUI's
// answer may be "Unknown user".
func (s *Server) noteUnknownUser(resp *http.Response) {
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusInternalServerError:
	default:
		return
	}
	if resp.Request != nil && resp.Request.Header.Get("Comfy-User") != "" && userScoped(resp.Request.URL.Path) {
		s.comfyUsers.forget()
	}
}

// newUpstreamClient is the client of the gateway's own requests to ComfyUI
// (its user registry, its queue), apart from the proxy's pool.
func newUpstreamClient(headerTimeout time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout:  headerTimeout,
			MaxIdleConnsPerHost:    4,
			IdleConnTimeout:        90 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: maxUpstreamHeaderBytes,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
