package fakecomfy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// queueItem is ComfyUI's (number, prompt_id, prompt, extra_data, outputs_to_execute).
type queueItem struct {
	number   any // int, or float64 when the client chose it
	id       string
	prompt   map[string]json.RawMessage
	extra    map[string]any
	outputs  []string
	clientID string
}

func (it *queueItem) tuple() []any {
	return []any{it.number, it.id, it.prompt, it.extra, it.outputs}
}

type historyEntry struct {
	id   string
	data map[string]any
}

// promptQueue is PromptQueue plus the prompt worker of main.py: one prompt
// runs at a time, in submission order, and its result lands in history
// before the final executing{node:null} frame.
type promptQueue struct {
	s         *Server
	mu        sync.Mutex
	admit     sync.Mutex // held across enqueue and its status event, so that event precedes execution_start
	number    int
	pending   []*queueItem
	running   *queueItem
	history   []historyEntry // insertion order, as Python's dict keeps it
	imageSeq  int
	counters  map[string]int // SaveImage's file counter per folder and prefix
	wake      chan struct{}
	interrupt chan struct{}
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

func (q *promptQueue) init(s *Server) {
	q.s = s
	q.wake = make(chan struct{}, 1)
	q.interrupt = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *promptQueue) close() { q.closeOnce.Do(func() { close(q.done) }) }

// info is get_queue_info: {"exec_info":{"queue_remaining":N}}.
func (q *promptQueue) info() map[string]any {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.infoLocked()
}

func (q *promptQueue) infoLocked() map[string]any {
	n := len(q.pending)
	if q.running != nil {
		n++
	}
	return map[string]any{"exec_info": map[string]any{"queue_remaining": n}}
}

func (q *promptQueue) put(it *queueItem) {
	if !q.s.opts.HoldQueue {
		q.startOnce.Do(func() { go q.worker() })
	}
	q.admit.Lock()
	q.mu.Lock()
	q.pending = append(q.pending, it)
	sort.SliceStable(q.pending, func(i, j int) bool { return toFloat(q.pending[i].number) < toFloat(q.pending[j].number) })
	q.mu.Unlock()
	q.s.queueUpdated()
	q.admit.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Advance moves a held queue (Options.HoldQueue) one step: the running
// prompt, if any, runs to its end and lands in history, then the first
// pending one starts running. It returns the id of the prompt now running,
// "" when the queue is empty.
func (s *Server) Advance() string {
	q := &s.queue
	q.mu.Lock()
	it := q.running
	q.mu.Unlock()
	if it != nil {
		q.execute(it)
	}
	q.admit.Lock()
	q.mu.Lock()
	id := ""
	if len(q.pending) > 0 {
		q.running, q.pending = q.pending[0], q.pending[1:]
		id = q.running.id
	}
	q.mu.Unlock()
	q.admit.Unlock()
	s.queueUpdated()
	return id
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case int:
		return float64(n)
	case float64:
		return n
	}
	return 0
}

func (s *Server) queueUpdated() {
	s.sendEvent("status", map[string]any{"status": s.queue.info()}, "")
}

func (q *promptQueue) worker() {
	for {
		q.admit.Lock()
		q.mu.Lock()
		var it *queueItem
		if len(q.pending) > 0 {
			it, q.pending = q.pending[0], q.pending[1:]
			q.running = it
		}
		q.mu.Unlock()
		q.admit.Unlock()
		if it == nil {
			select {
			case <-q.wake:
				continue
			case <-q.done:
				return
			}
		}
		// Drop an interrupt that arrived while nothing was running.
		select {
		case <-q.interrupt:
		default:
		}
		q.execute(it)
	}
}

// execute sends the frames a one-node workflow produces, then records
// history; a model-free image workflow runs as ComfyUI runs it.
func (q *promptQueue) execute(it *queueItem) {
	if nodes, _, ok := imageWorkflow(it.prompt); ok {
		q.executeImages(it, nodes)
		return
	}
	s, sid := q.s, it.clientID
	node := it.outputs[0]
	now := func() int64 { return time.Now().UnixMilli() }
	var messages [][]any
	add := func(event string, data map[string]any) {
		data["prompt_id"] = it.id
		data["timestamp"] = now()
		messages = append(messages, []any{event, data})
		s.sendEvent(event, data, sid)
	}
	// step pauses StepDelay and reports whether the run should go on.
	interrupted := false
	step := func() bool {
		if interrupted {
			return false
		}
		var t <-chan time.Time
		if d := s.opts.StepDelay; d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			t = timer.C
		} else {
			select {
			case <-q.interrupt:
				interrupted = true
				return false
			default:
				return true
			}
		}
		select {
		case <-t:
			return true
		case <-q.interrupt:
			interrupted = true
			return false
		case <-q.done:
			interrupted = true
			return false
		}
	}

	add("execution_start", map[string]any{})
	add("execution_cached", map[string]any{"nodes": []string{}})
	outputs := map[string]any{}
	if step() {
		s.sendEvent("executing", map[string]any{"node": node, "display_node": node, "prompt_id": it.id}, sid)
	}
	const steps = 2
	for i := 1; i <= steps && step(); i++ {
		s.sendEvent("progress", map[string]any{"value": i, "max": steps, "prompt_id": it.id, "node": node}, sid)
		if i == 1 {
			// A live preview, as a KSampler with --preview-method sends it:
			// a 4-byte image type (1 = JPEG) then the image bytes.
			s.sendBinary(BinaryPreviewImage, append([]byte{0, 0, 0, 1}, previewJPEG...), sid)
		}
	}
	if step() {
		q.mu.Lock()
		q.imageSeq++
		name := fmt.Sprintf("ComfyUI_%05d_.png", q.imageSeq)
		q.mu.Unlock()
		s.files.put(fileKey{typ: "output", name: name}, outputPNG)
		images := map[string]any{"images": []map[string]any{{"filename": name, "subfolder": "", "type": "output"}}}
		outputs[node] = images
		s.sendEvent("executed", map[string]any{"node": node, "display_node": node, "output": images, "prompt_id": it.id}, sid)
	}

	status := map[string]any{}
	if interrupted {
		add("execution_interrupted", map[string]any{"node_id": node, "node_type": classType(it.prompt[node]), "executed": []string{}})
		status["status_str"] = "error"
		status["completed"] = false
	} else {
		add("execution_success", map[string]any{})
		status["status_str"] = "success"
		status["completed"] = true
	}
	status["messages"] = messages

	q.mu.Lock()
	q.running = nil
	q.history = append(q.history, historyEntry{id: it.id, data: map[string]any{
		"prompt":  it.tuple(),
		"outputs": outputs,
		"status":  status,
		"meta": map[string]any{node: map[string]any{
			"node_id": node, "display_node": node, "parent_node": nil, "real_node_id": node,
		}},
	}})
	q.mu.Unlock()
	s.queueUpdated()
	s.sendEvent("executing", map[string]any{"node": nil, "prompt_id": it.id}, sid)
}

func classType(raw json.RawMessage) string {
	var n struct {
		ClassType string `json:"class_type"`
	}
	_ = json.Unmarshal(raw, &n)
	return n.ClassType
}

// promptError is the {"type","message","details","extra_info"} ComfyUI puts under "error".
func promptError(typ, message, details string) map[string]any {
	return map[string]any{"type": typ, "message": message, "details": details, "extra_info": map[string]any{}}
}

// handlePostPrompt is POST /prompt. Unlike ComfyUI, which lets a JSON decode
// error escape as a 500, the fake answers malformed JSON with a 400 in the
// same {"error","node_errors"} shape as a missing prompt.
func (s *Server) handlePostPrompt(w http.ResponseWriter, r *http.Request, _ params) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       promptError("invalid_json", "Invalid JSON body", err.Error()),
			"node_errors": map[string]any{},
		})
		return
	}

	q := &s.queue
	var number any
	if raw, ok := body["number"]; ok {
		var f float64
		if json.Unmarshal(raw, &f) != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": promptError("invalid_number", "Invalid number", string(raw)), "node_errors": map[string]any{}})
			return
		}
		number = f
	} else {
		q.mu.Lock()
		n := q.number
		q.number++
		q.mu.Unlock()
		var front bool
		_ = json.Unmarshal(body["front"], &front)
		if front {
			n = -n
		}
		number = n
	}

	rawPrompt, ok := body["prompt"]
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       promptError("no_prompt", "No prompt provided", "No prompt provided"),
			"node_errors": map[string]any{},
		})
		return
	}
	var prompt map[string]json.RawMessage
	if err := json.Unmarshal(rawPrompt, &prompt); err != nil || len(prompt) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       promptError("prompt_no_outputs", "Prompt has no outputs", ""),
			"node_errors": map[string]any{},
		})
		return
	}
	ids := make([]string, 0, len(prompt))
	for id, node := range prompt {
		if classType(node) == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{
				"error": promptError("invalid_prompt",
					"Cannot execute because a node is missing the class_type property.",
					fmt.Sprintf("Node ID '#%s'", id)),
				"node_errors": map[string]any{},
			})
			return
		}
		ids = append(ids, id)
	}
	sortNodeIDs(ids)

	id := newUUID()
	if raw, ok := body["prompt_id"]; ok {
		var given string
		if json.Unmarshal(raw, &given) == nil && given != "" {
			id = given
		}
	}
	extra := map[string]any{}
	_ = json.Unmarshal(body["extra_data"], &extra)
	if extra == nil {
		extra = map[string]any{}
	}
	var clientID string
	if raw, ok := body["client_id"]; ok {
		var v any
		_ = json.Unmarshal(raw, &v)
		extra["client_id"] = v
		clientID, _ = v.(string)
	}
	outputs := ids[:1]
	if _, outs, ok := imageWorkflow(prompt); ok {
		outputs = outs // ComfyUI's outputs_to_execute: the output nodes
	}
	q.put(&queueItem{number: number, id: id, prompt: prompt, extra: extra, outputs: outputs, clientID: clientID})
	writeJSON(w, http.StatusOK, map[string]any{"prompt_id": id, "number": number, "node_errors": map[string]any{}})
}

// sortNodeIDs orders numeric ids numerically ("2" before "10"), others after, lexically.
func sortNodeIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool {
		a, errA := strconv.Atoi(ids[i])
		b, errB := strconv.Atoi(ids[j])
		switch {
		case errA == nil && errB == nil:
			return a < b
		case errA == nil:
			return true
		case errB == nil:
			return false
		}
		return ids[i] < ids[j]
	})
}

func (s *Server) handleGetPrompt(w http.ResponseWriter, _ *http.Request, _ params) {
	writeJSON(w, http.StatusOK, s.queue.info())
}

func (s *Server) handleGetQueue(w http.ResponseWriter, _ *http.Request, _ params) {
	q := &s.queue
	q.mu.Lock()
	running := []any{}
	if q.running != nil {
		running = append(running, q.running.tuple())
	}
	pending := []any{}
	for _, it := range q.pending {
		pending = append(pending, it.tuple())
	}
	q.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"queue_running": running, "queue_pending": pending})
}

// clearOrDelete is the {"clear":bool,"delete":[ids]} body of POST /queue and POST /history.
type clearOrDelete struct {
	Clear  bool     `json:"clear"`
	Delete []string `json:"delete"`
}

func decodeClearOrDelete(w http.ResponseWriter, r *http.Request) (clearOrDelete, bool) {
	var body clearOrDelete
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		serverError(w)
		return body, false
	}
	return body, true
}

func (s *Server) handlePostQueue(w http.ResponseWriter, r *http.Request, _ params) {
	body, ok := decodeClearOrDelete(w, r)
	if !ok {
		return
	}
	q := &s.queue
	q.mu.Lock()
	if body.Clear {
		q.pending = nil
	}
	for _, id := range body.Delete {
		for i, it := range q.pending {
			if it.id == id {
				q.pending = append(q.pending[:i:i], q.pending[i+1:]...)
				break
			}
		}
	}
	q.mu.Unlock()
	s.queueUpdated()
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleGetHistory(w http.ResponseWriter, r *http.Request, _ params) {
	query := r.URL.Query()
	maxItems, offset := -1, -1
	for name, dst := range map[string]*int{"max_items": &maxItems, "offset": &offset} {
		if v := query.Get(name); query.Has(name) {
			n, err := strconv.Atoi(v)
			if err != nil {
				serverError(w) // int() raises ValueError
				return
			}
			*dst = n
		}
	}
	q := &s.queue
	q.mu.Lock()
	if offset < 0 && maxItems >= 0 {
		offset = len(q.history) - maxItems
	}
	var out []historyEntry
	for i, e := range q.history {
		if i >= offset {
			out = append(out, e)
			if maxItems >= 0 && len(out) >= maxItems {
				break
			}
		}
	}
	b := orderedJSON(out)
	q.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

func (s *Server) handleGetHistoryID(w http.ResponseWriter, _ *http.Request, p params) {
	q := &s.queue
	q.mu.Lock()
	var out []historyEntry
	for _, e := range q.history {
		if e.id == p["prompt_id"] {
			out = append(out, e)
		}
	}
	b := orderedJSON(out)
	q.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

// orderedJSON writes entries as one JSON object, keeping their order (Go maps would sort keys).
func orderedJSON(entries []historyEntry) []byte {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(e.id)
		v, _ := json.Marshal(e.data)
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

func (s *Server) handlePostHistory(w http.ResponseWriter, r *http.Request, _ params) {
	body, ok := decodeClearOrDelete(w, r)
	if !ok {
		return
	}
	q := &s.queue
	q.mu.Lock()
	if body.Clear {
		q.history = nil
	}
	for _, id := range body.Delete {
		for i, e := range q.history {
			if e.id == id {
				q.history = append(q.history[:i:i], q.history[i+1:]...)
				break
			}
		}
	}
	q.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// handleInterrupt is POST /interrupt: a body is optional; {"prompt_id":X}
// interrupts only if X is the running prompt.
func (s *Server) handleInterrupt(w http.ResponseWriter, r *http.Request, _ params) {
	var body struct {
		PromptID string `json:"prompt_id"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	q := &s.queue
	q.mu.Lock()
	running := q.running
	q.mu.Unlock()
	if running != nil && (body.PromptID == "" || body.PromptID == running.id) {
		select {
		case q.interrupt <- struct{}{}:
		default:
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleFree(w http.ResponseWriter, r *http.Request, _ params) {
	var body struct {
		UnloadModels bool `json:"unload_models"`
		FreeMemory   bool `json:"free_memory"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		serverError(w)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// HasHistory reports whether promptID has finished and is in history.
func (s *Server) HasHistory(promptID string) bool {
	q := &s.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.history {
		if e.id == promptID {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		serverError(w)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// serverError is what aiohttp answers when a handler raises.
func serverError(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte("500 Internal Server Error\n\nServer got itself in trouble"))
}
