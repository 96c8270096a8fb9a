package fakecomfy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Binary websocket event types, from ComfyUI's protocol.py.
const (
	BinaryPreviewImage             uint32 = 1
	BinaryUnencodedPreviewImage    uint32 = 2
	BinaryText                     uint32 = 3
	BinaryPreviewImageWithMetadata uint32 = 4
)

// writeTimeout bounds one frame write so a stuck client cannot block a broadcast forever.
const writeTimeout = 10 * time.Second

// upgrader accepts any Origin: aiohttp's WebSocketResponse checks none, and
// the origin middleware has already run by the time we get here.
var upgrader = websocket.Upgrader{
	CheckOrigin: func(*http.Request) bool { return true },
}

type wsClient struct {
	sid  string
	conn *websocket.Conn
	wmu  sync.Mutex // gorilla allows one concurrent writer
}

func (c *wsClient) write(messageType int, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.conn.WriteMessage(messageType, data)
}

// hub mirrors PromptServer.sockets: one socket per client id, a reconnect with
// the same id replaces the old entry (the old connection stays open but gets
// nothing more). open counts every live connection, replaced ones included.
type hub struct {
	mu      sync.Mutex
	bySID   map[string]*wsClient
	open    map[*wsClient]struct{}
	changed chan struct{} // closed and replaced whenever open changes
}

func (h *hub) init() {
	h.bySID = map[string]*wsClient{}
	h.open = map[*wsClient]struct{}{}
	h.changed = make(chan struct{})
}

func (h *hub) add(c *wsClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bySID[c.sid] = c
	h.open[c] = struct{}{}
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *hub) remove(c *wsClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bySID[c.sid] == c {
		delete(h.bySID, c.sid)
	}
	delete(h.open, c)
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *hub) lookup(sid string) *wsClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bySID[sid]
}

func (h *hub) routed() []*wsClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*wsClient, 0, len(h.bySID))
	for _, c := range h.bySID {
		out = append(out, c)
	}
	return out
}

func (h *hub) closeAll(code int, text string) {
	h.mu.Lock()
	conns := make([]*wsClient, 0, len(h.open))
	for c := range h.open {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	msg := websocket.FormatCloseMessage(code, text)
	for _, c := range conns {
		c.wmu.Lock()
		_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = c.conn.Close()
	}
}

// OpenWebsockets returns how many websocket connections are open right now.
func (s *Server) OpenWebsockets() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return len(s.hub.open)
}

// WebsocketsChanged returns a channel that is closed the next time a websocket
// opens or closes, so a test can wait for OpenWebsockets to reach a value
// without sleeping: loop { ch := WebsocketsChanged(); if OpenWebsockets()==n {break}; <-ch }.
func (s *Server) WebsocketsChanged() <-chan struct{} {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.changed
}

// CloseWebsockets sends a close frame with code and text to every open
// websocket and closes it, as ComfyUI does when it shuts down or crashes.
func (s *Server) CloseWebsockets(code int, text string) { s.hub.closeAll(code, text) }

// Broadcast sends v, marshalled as JSON, as a text frame to every client, the
// way ComfyUI's send_json(event, data, sid=None) does. Use a
// {"type":...,"data":...} value to look like a real event.
func (s *Server) Broadcast(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("fakecomfy: Broadcast: " + err.Error())
	}
	for _, c := range s.hub.routed() {
		_ = c.write(websocket.TextMessage, b)
	}
}

// SendTo sends v as a JSON text frame to the client connected with
// clientId=clientID. It reports whether such a client was connected.
func (s *Server) SendTo(clientID string, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic("fakecomfy: SendTo: " + err.Error())
	}
	c := s.hub.lookup(clientID)
	if c == nil {
		return false
	}
	return c.write(websocket.TextMessage, b) == nil
}

// BroadcastBinary sends a binary frame to every client: a 4-byte big-endian
// eventType followed by payload, ComfyUI's encode_bytes framing.
func (s *Server) BroadcastBinary(eventType uint32, payload []byte) {
	msg := encodeBinary(eventType, payload)
	for _, c := range s.hub.routed() {
		_ = c.write(websocket.BinaryMessage, msg)
	}
}

func encodeBinary(eventType uint32, payload []byte) []byte {
	msg := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(msg, eventType)
	copy(msg[4:], payload)
	return msg
}

// sendEvent sends {"type":event,"data":data} to sid, or to everyone when sid
// is "" (ComfyUI's send_json with sid=None). A missing client is not an error.
func (s *Server) sendEvent(event string, data any, sid string) {
	v := map[string]any{"type": event, "data": data}
	if sid == "" {
		s.Broadcast(v)
		return
	}
	s.SendTo(sid, v)
}

func (s *Server) sendBinary(eventType uint32, payload []byte, sid string) {
	if sid == "" {
		s.BroadcastBinary(eventType, payload)
		return
	}
	if c := s.hub.lookup(sid); c != nil {
		_ = c.write(websocket.BinaryMessage, encodeBinary(eventType, payload))
	}
}

// handleWS is GET /ws. On connect it sends the status event; then it echoes
// each text frame back as {"type":"echo","data":<text>} (and each binary
// frame back unchanged) so tests can check the client-to-server direction,
// and answers a first {"type":"feature_flags"} message as ComfyUI does.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request, _ params) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has written the 400
	}
	sid := r.URL.Query().Get("clientId")
	if sid == "" {
		sid = randomHex(16)
	}
	c := &wsClient{sid: sid, conn: conn}
	s.hub.add(c)
	s.logf("fakecomfy: websocket %s connected", sid)
	defer func() {
		s.hub.remove(c)
		_ = conn.Close()
	}()

	status := map[string]any{"status": s.queue.info(), "sid": sid}
	if err := s.writeEvent(c, "status", status); err != nil {
		return
	}
	first := true
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		switch mt {
		case websocket.TextMessage:
			var msg struct {
				Type string `json:"type"`
			}
			if first && json.Unmarshal(data, &msg) == nil && msg.Type == "feature_flags" {
				_ = s.writeEvent(c, "feature_flags", s.featureFlags())
			}
			first = false
			if err := s.writeEvent(c, "echo", string(data)); err != nil {
				return
			}
		case websocket.BinaryMessage:
			if err := c.write(websocket.BinaryMessage, data); err != nil {
				return
			}
		}
	}
}

func (s *Server) writeEvent(c *wsClient, event string, data any) error {
	b, err := json.Marshal(map[string]any{"type": event, "data": data})
	if err != nil {
		return err
	}
	return c.write(websocket.TextMessage, b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID returns a random RFC 4122 version 4 UUID, as uuid.uuid4() prints it.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
