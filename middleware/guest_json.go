package middleware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// MaxGuestPromptBytes bounds a guest's POST /prompt body, which the gateway
// reads whole to set its client id. Workflows with their layout are a few
// MB at most.
const MaxGuestPromptBytes = 16 << 20

// MaxGuestRedactBytes bounds a /queue or /history answer the gateway holds
// to redact for a guest; a larger one is refused with a hint to page it.
const MaxGuestRedactBytes = 32 << 20

// sensitiveExtraData are extra_data keys ComfyUI keeps on pending queue
// items (it strips them only when moving a prompt to history).
var sensitiveExtraData = []string{"auth_token_comfy_org", "api_key_comfy_org"}

// member is one key and raw value of a JSON object, in document order.
type member struct {
	key string
	val json.RawMessage
}

// readObject splits a JSON object into its members, keeping their order and
// each value's bytes; anything else is an error.
func readObject(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var out []member
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{k, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

func writeObject(ms []member) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.val)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// servePrompt rewrites a guest's POST /prompt: client_id becomes the
// guest's own (a prompt without one would have its progress and previews
// broadcast to every client), and number, front and prompt_id are dropped.
// It goes on as `Content-Type: application/json`, whatever charset the
// guest named, so ComfyUI reads the keys the gateway checked.
func servePrompt(w http.ResponseWriter, r *http.Request, next http.Handler, g guestClient) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxGuestPromptBytes+1))
	if err != nil {
		writeGuestErr(w, r, &guestErr{http.StatusBadRequest, "the prompt could not be read: " + err.Error()})
		return
	}
	if len(body) > MaxGuestPromptBytes {
		writeGuestErr(w, r, &guestErr{http.StatusRequestEntityTooLarge, fmt.Sprintf("a guest's prompt may be %d MiB at most", MaxGuestPromptBytes>>20)})
		return
	}
	ms, err := readObject(body)
	if err != nil {
		writeGuestErr(w, r, &guestErr{http.StatusBadRequest, "the prompt must be a JSON object: " + err.Error()})
		return
	}
	asked := ""
	kept := ms[:0]
	for _, m := range ms {
		switch m.key {
		case "client_id":
			_ = json.Unmarshal(m.val, &asked)
		case "number", "front", "prompt_id":
		default:
			kept = append(kept, m)
		}
	}
	id, _ := json.Marshal(g.id(asked))
	out := writeObject(append(kept, member{"client_id", id}))
	next.ServeHTTP(w, withJSONBody(r, out))
}

// withJSONBody is r with body out, the gateway's own rewrite of the JSON
// the client sent. ComfyUI decodes a body with the charset and encoding the
// headers name: under charset=utf-7, "+AGY-ront" would be "front" there. So
// the headers are made to say what out is: UTF-8 JSON of a known length,
// with no content or transfer encoding.
func withJSONBody(r *http.Request, out []byte) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(out))
	r2.ContentLength = int64(len(out))
	r2.Header.Set("Content-Length", strconv.Itoa(len(out)))
	r2.Header.Set("Content-Type", "application/json")
	r2.Header.Del("Content-Encoding")
	r2.Header.Del("Transfer-Encoding")
	r2.TransferEncoding = nil
	return r2
}

// serveRedacted passes a guest's GET /queue, /history or /history/{id} to
// ComfyUI and removes, from every prompt's extra_data, the client_id of
// other clients and comfy.org credentials. The answer is held (at most
// MaxGuestRedactBytes) and, if it cannot be parsed, not passed on.
func serveRedacted(w http.ResponseWriter, r *http.Request, next http.Handler, g guestClient) {
	r2 := r.Clone(r.Context())
	// Compressed answers could not be read; ask for identity.
	r2.Header.Del("Accept-Encoding")
	rec := &holdWriter{header: http.Header{}, status: http.StatusOK}
	next.ServeHTTP(rec, r2)
	if rec.status != http.StatusOK || r.Method == http.MethodHead {
		if rec.status == http.StatusOK {
			rec.header.Del("Content-Length")
		}
		rec.replay(w, rec.buf.Bytes())
		return
	}
	if rec.overflow {
		writeGuestErr(w, r, &guestErr{http.StatusForbidden, fmt.Sprintf("this answer is over %d MiB, more than the gateway checks for guests; ask for less with ?max_items=", MaxGuestRedactBytes>>20)})
		return
	}
	var out []byte
	var err error
	if enc := rec.header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		err = errors.New("encoded with " + enc)
	} else if p, _ := comfyPath(r.URL.EscapedPath()); p == "/queue" || p == "/api/queue" {
		out, err = redactQueue(rec.buf.Bytes(), g)
	} else {
		out, err = redactHistory(rec.buf.Bytes(), g)
	}
	if err != nil {
		writeGuestErr(w, r, &guestErr{http.StatusBadGateway, "ComfyUI's answer could not be checked before showing it to a guest (" + err.Error() + ")"})
		return
	}
	rec.header.Set("Content-Length", strconv.Itoa(len(out)))
	rec.replay(w, out)
}

func redactQueue(raw []byte, g guestClient) ([]byte, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, err
	}
	for i, m := range ms {
		if m.key != "queue_running" && m.key != "queue_pending" {
			continue
		}
		var items []json.RawMessage
		if err := json.Unmarshal(m.val, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", m.key, err)
		}
		for j := range items {
			if items[j], err = redactItem(items[j], g); err != nil {
				return nil, err
			}
		}
		ms[i].val, _ = json.Marshal(items)
	}
	return writeObject(ms), nil
}

func redactHistory(raw []byte, g guestClient) ([]byte, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, err
	}
	for i := range ms {
		entry, err := readObject(ms[i].val)
		if err != nil {
			return nil, fmt.Errorf("history entry: %w", err)
		}
		for k := range entry {
			if entry[k].key == "prompt" {
				if entry[k].val, err = redactItem(entry[k].val, g); err != nil {
					return nil, err
				}
			}
		}
		ms[i].val = writeObject(entry)
	}
	return writeObject(ms), nil
}

// redactItem edits one (number, prompt_id, prompt, extra_data, outputs)
// tuple: extra_data loses comfy.org credentials, and client_id unless it is
// the guest's own.
func redactItem(raw json.RawMessage, g guestClient) (json.RawMessage, error) {
	var tuple []json.RawMessage
	if err := json.Unmarshal(raw, &tuple); err != nil {
		return nil, fmt.Errorf("queue item: %w", err)
	}
	if len(tuple) < 4 {
		return raw, nil
	}
	extra, err := readObject(tuple[3])
	if err != nil {
		return nil, fmt.Errorf("extra_data: %w", err)
	}
	kept := extra[:0]
	for _, m := range extra {
		drop := false
		for _, s := range sensitiveExtraData {
			drop = drop || m.key == s
		}
		if m.key == "client_id" {
			var id string
			drop = json.Unmarshal(m.val, &id) != nil || !g.owns(id)
		}
		if !drop {
			kept = append(kept, m)
		}
	}
	tuple[3] = writeObject(kept)
	return json.Marshal(tuple)
}

// holdWriter keeps a response in memory, up to max bytes (0:
// MaxGuestRedactBytes).
type holdWriter struct {
	header   http.Header
	status   int
	wrote    bool
	buf      bytes.Buffer
	overflow bool
	max      int
}

func (h *holdWriter) Header() http.Header { return h.header }

func (h *holdWriter) WriteHeader(code int) {
	if !h.wrote {
		h.status, h.wrote = code, true
	}
}

func (h *holdWriter) Write(p []byte) (int, error) {
	h.wrote = true
	limit := h.max
	if limit == 0 {
		limit = MaxGuestRedactBytes
	}
	if h.overflow || h.buf.Len()+len(p) > limit {
		h.overflow = true
		h.buf.Reset()
		return 0, errors.New("answer too large to hold")
	}
	return h.buf.Write(p)
}

func (h *holdWriter) replay(w http.ResponseWriter, body []byte) {
	for k, v := range h.header {
		w.Header()[k] = v
	}
	w.WriteHeader(h.status)
	_, _ = w.Write(body)
}
