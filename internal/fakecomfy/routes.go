package fakecomfy

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// webRoot is the fake frontend: index.html, scripts/app.js and the extension
// scripts /extensions lists.
var webRoot = func() fs.FS {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err)
	}
	return sub
}()

func (s *Server) routeTable() []route {
	get, post, del, patch := http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPatch
	r := func(method, pattern string, api bool, h handlerFunc) route {
		return route{method: method, pattern: splitPath(pattern), api: api, handle: h}
	}
	return []route{
		// PromptServer routes, each with an /api twin.
		r(get, "/ws", true, s.handleWS),
		r(get, "/", true, s.handleIndex),
		r(get, "/embeddings", true, jsonHandler([]string{})),
		r(get, "/models", true, jsonHandler(modelFolders)),
		r(get, "/models/{folder}", true, s.handleModelFolder),
		r(get, "/extensions", true, s.handleExtensions),
		r(post, "/upload/image", true, s.handleUpload(false)),
		r(post, "/upload/mask", true, s.handleUpload(true)),
		r(get, "/view", true, s.handleView),
		r(get, "/system_stats", true, s.handleSystemStats),
		r(get, "/features", true, s.handleFeatures),
		r(get, "/prompt", true, s.handleGetPrompt),
		r(get, "/object_info", true, s.handleObjectInfo),
		r(get, "/object_info/{node_class}", true, s.handleObjectInfoNode),
		r(get, "/history", true, s.handleGetHistory),
		r(get, "/history/{prompt_id}", true, s.handleGetHistoryID),
		r(get, "/queue", true, s.handleGetQueue),
		r(post, "/prompt", true, s.handlePostPrompt),
		r(post, "/queue", true, s.handlePostQueue),
		r(post, "/interrupt", true, s.handleInterrupt),
		r(post, "/free", true, s.handleFree),
		r(post, "/history", true, s.handlePostHistory),
		// UserManager and AppSettings.
		r(get, "/settings", true, s.handleGetSettings),
		r(get, "/settings/{id}", true, s.handleGetSetting),
		r(post, "/settings", true, s.handlePostSettings),
		r(post, "/settings/{id}", true, s.handlePostSetting),
		r(get, "/users", true, s.handleGetUsers),
		r(post, "/users", true, s.handlePostUsers),
		r(get, "/userdata", true, s.handleListUserdata),
		r(get, "/userdata/{file}", true, s.handleGetUserdata),
		r(post, "/userdata/{file}", true, s.handlePostUserdata),
		r(del, "/userdata/{file}", true, s.handleDeleteUserdata),
		r(post, "/userdata/{file}/move/{dest}", true, s.handleMoveUserdata),
		// The /internal sub-application: no /api twin.
		r(get, "/internal/logs", false, jsonHandler("fake ComfyUI log\n")),
		r(get, "/internal/logs/raw", false, jsonHandler(map[string]any{
			"entries": []map[string]string{{"t": "2025-10-12 00:00:00.000", "m": "fake ComfyUI log\n"}},
			"size":    map[string]int{"cols": 80, "rows": 24},
		})),
		r(patch, "/internal/logs/subscribe", false, s.handleLogsSubscribe),
		r(get, "/internal/folder_paths", false, s.handleFolderPaths),
		r(get, "/internal/files/{directory_type}", false, s.handleInternalFiles),
		// Fake-only knobs for fault and streaming tests.
		r(get, "/slow", true, s.handleSlow),
		r(get, "/stream", true, s.handleStream),
	}
}

func jsonHandler(v any) handlerFunc {
	return func(w http.ResponseWriter, _ *http.Request, _ params) { writeJSON(w, http.StatusOK, v) }
}

// handleIndex is GET /: index.html, never cached, as PromptServer.get_root serves it.
func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request, _ params) {
	b, err := fs.ReadFile(webRoot, "index.html")
	if err != nil {
		serverError(w)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "0")
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// serveStatic is web.static('/', web_root): GET and HEAD of any path, a file
// from the fake frontend or 404. It matches the decoded path, as aiohttp's
// static resource does. .js and .css get cache_control's "no-cache".
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	b, err := fs.ReadFile(webRoot, name)
	if name == "" || err != nil {
		textError(w, http.StatusNotFound)
		return
	}
	h := w.Header()
	switch path.Ext(name) {
	case ".js":
		h.Set("Content-Type", "application/javascript; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	case ".css":
		h.Set("Content-Type", "text/css; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	case ".html":
		h.Set("Content-Type", "text/html; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// handleExtensions lists every .js under web/extensions as a URL, as
// get_extensions globs web_root/extensions/**/*.js.
func (s *Server) handleExtensions(w http.ResponseWriter, _ *http.Request, _ params) {
	urls := []string{}
	_ = fs.WalkDir(webRoot, "extensions", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".js") {
			urls = append(urls, "/"+p)
		}
		return nil
	})
	sort.Strings(urls)
	writeJSON(w, http.StatusOK, urls)
}

var modelFolders = []string{
	"checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
	"style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
	"custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
}

func (s *Server) handleModelFolder(w http.ResponseWriter, _ *http.Request, p params) {
	for _, f := range modelFolders {
		if f == p["folder"] {
			files := []string{}
			if f == "checkpoints" {
				files = append(files, "v1-5-pruned-emaonly-fp16.safetensors")
			}
			writeJSON(w, http.StatusOK, files)
			return
		}
	}
	w.WriteHeader(http.StatusNotFound)
}

func (s *Server) featureFlags() map[string]any {
	return map[string]any{"supports_preview_metadata": true, "max_upload_size": s.opts.MaxUploadSize}
}

func (s *Server) handleFeatures(w http.ResponseWriter, _ *http.Request, _ params) {
	writeJSON(w, http.StatusOK, s.featureFlags())
}

// handleSystemStats answers with the shape of a CUDA machine's /system_stats.
func (s *Server) handleSystemStats(w http.ResponseWriter, _ *http.Request, _ params) {
	const gib = 1 << 30
	writeJSON(w, http.StatusOK, map[string]any{
		"system": map[string]any{
			"os":                          "posix",
			"ram_total":                   int64(64 * gib),
			"ram_free":                    int64(48 * gib),
			"comfyui_version":             ComfyUIVersion,
			"required_frontend_version":   "1.27.10",
			"installed_templates_version": "0.1.94",
			"required_templates_version":  "0.1.94",
			"python_version":              "3.12.3 (main, Aug 14 2025, 17:47:21) [GCC 13.3.0]",
			"pytorch_version":             "2.8.0+cu128",
			"embedded_python":             false,
			"argv":                        s.opts.Argv,
		},
		"devices": []map[string]any{{
			"name":             "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
			"type":             "cuda",
			"index":            0,
			"vram_total":       int64(24 * gib),
			"vram_free":        int64(23 * gib),
			"torch_vram_total": 0,
			"torch_vram_free":  0,
		}},
	})
}

// objectInfo is a few nodes in node_info's shape; enough for a frontend to
// parse, far from the several MB a real install returns.
var objectInfo = map[string]any{
	"CheckpointLoaderSimple": nodeInfo("CheckpointLoaderSimple", "Load Checkpoint", "loaders",
		map[string]any{"required": map[string]any{"ckpt_name": []any{[]string{"v1-5-pruned-emaonly-fp16.safetensors"}}}},
		[]string{"MODEL", "CLIP", "VAE"}, false),
	"KSampler": nodeInfo("KSampler", "KSampler", "sampling",
		map[string]any{"required": map[string]any{
			"model":    []any{"MODEL"},
			"seed":     []any{"INT", map[string]any{"default": 0, "min": 0, "max": uint64(1<<64 - 1)}},
			"steps":    []any{"INT", map[string]any{"default": 20, "min": 1, "max": 10000}},
			"positive": []any{"CONDITIONING"},
			"negative": []any{"CONDITIONING"},
		}},
		[]string{"LATENT"}, false),
	"SaveImage": nodeInfo("SaveImage", "Save Image", "image",
		map[string]any{"required": map[string]any{
			"images":          []any{"IMAGE"},
			"filename_prefix": []any{"STRING", map[string]any{"default": "ComfyUI"}},
		}},
		[]string{}, true),
}

func nodeInfo(name, display, category string, input map[string]any, output []string, outputNode bool) map[string]any {
	order := map[string][]string{}
	for kind, fields := range input {
		var keys []string
		for k := range fields.(map[string]any) {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		order[kind] = keys
	}
	isList := make([]bool, len(output))
	return map[string]any{
		"input": input, "input_order": order, "output": output, "output_is_list": isList,
		"output_name": output, "name": name, "display_name": display, "description": "",
		"python_module": "nodes", "category": category, "output_node": outputNode,
	}
}

func (s *Server) handleObjectInfo(w http.ResponseWriter, _ *http.Request, _ params) {
	writeJSON(w, http.StatusOK, objectInfo)
}

func (s *Server) handleObjectInfoNode(w http.ResponseWriter, _ *http.Request, p params) {
	out := map[string]any{}
	if info, ok := objectInfo[p["node_class"]]; ok {
		out[p["node_class"]] = info
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleLogsSubscribe(w http.ResponseWriter, r *http.Request, _ params) {
	var body struct {
		ClientID *string `json:"clientId"`
		Enabled  *bool   `json:"enabled"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ClientID == nil || body.Enabled == nil {
		serverError(w) // json_data["clientId"] raises KeyError
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleFolderPaths(w http.ResponseWriter, _ *http.Request, _ params) {
	out := map[string][]string{}
	for _, f := range modelFolders {
		out[f] = []string{"/opt/ComfyUI/models/" + f}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleInternalFiles(w http.ResponseWriter, _ *http.Request, p params) {
	typ := p["directory_type"]
	if !validType(typ) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Invalid directory type"})
		return
	}
	names := []string{}
	for _, u := range s.Uploads() {
		if u.Type == typ && u.Subfolder == "" {
			names = append(names, u.Name)
		}
	}
	// Newest first, as ComfyUI sorts by -mtime.
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	writeJSON(w, http.StatusOK, names)
}

// handleSlow is GET /slow?ms=N: it answers 200 "slow" after N milliseconds,
// or gives up silently when the client goes away first.
func (s *Server) handleSlow(w http.ResponseWriter, r *http.Request, _ params) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	if !sleepCtx(r.Context(), time.Duration(ms)*time.Millisecond) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("slow"))
}

// handleStream is GET /stream?chunks=N&interval_ms=M: N lines "chunk i\n",
// each flushed at once, M milliseconds apart, for tests that check a proxy
// passes a response through without buffering it.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, _ params) {
	q := r.URL.Query()
	chunks, err := strconv.Atoi(q.Get("chunks"))
	if err != nil || chunks < 0 {
		chunks = 3
	}
	interval, _ := strconv.Atoi(q.Get("interval_ms"))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i := 0; i < chunks; i++ {
		if i > 0 && !sleepCtx(r.Context(), time.Duration(interval)*time.Millisecond) {
			return
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
