package middleware

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Completed is what AccessLog knows about a request once it is answered.
// Observers (metrics) receive it instead of wrapping the writer a second
// time, so a request is timed and measured once.
type Completed struct {
	Info   *Info
	Status int
	// Bytes is what was sent to the client: the response body, or for a
	// websocket every byte written to the client after the handshake.
	Bytes int64
	// BytesIn is, for a websocket, every byte read from the client after
	// the handshake; 0 for other requests, whose bodies are not counted.
	BytesIn  int64
	Duration time.Duration
	// WebSocket is true for an upgrade; Duration is then the connection's
	// whole life.
	WebSocket bool
}

// AccessLog writes one event per request: method, path (never the query,
// which may carry ?token=), status, bytes, duration, client address, how the
// request was authenticated and a request id. The id is taken from a sane
// client X-Request-Id or generated, and echoed in the response.
//
// Each observer is called synchronously after the log event with what was
// logged; it must be cheap and must not block.
func AccessLog(logger zerolog.Logger, observers ...func(Completed)) func(http.Handler) http.Handler {
	return AccessLogWith(AccessLogOptions{Logger: logger, Observers: observers})
}

// AccessLogOptions configures AccessLogWith.
type AccessLogOptions struct {
	Logger    zerolog.Logger
	Observers []func(Completed)
	// RefusalInterval is how often the refusals not logged one by one are
	// summarised, per client; 0 means DefaultRefusalInterval.
	RefusalInterval time.Duration
	// RefusalClients caps the clients whose refusals are counted apart;
	// 0 means DefaultRefusalClients.
	RefusalClients int
	// RegisterFlush, when set, is called once, by AccessLogWith, with a
	// function that writes the refusal summaries still pending and has
	// later refusals logged one by one. Call it when the server has
	// stopped serving, or the last interval's refusals are never logged.
	RegisterFlush func(flush func())
}

// AccessLogWith is AccessLog with its flood bounds set. Refusals the
// gateway gives itself (a 4xx or 503 not from ComfyUI, a redirect to the
// login page) are logged for a client's first one only; the client's
// further refusals are counted and summarised once per RefusalInterval (see
// refusalLog). Observers still see every request.
func AccessLogWith(o AccessLogOptions) func(http.Handler) http.Handler {
	logger, observers := o.Logger, o.Observers
	refusals := newRefusalLog(logger, o.RefusalInterval, o.RefusalClients)
	if o.RegisterFlush != nil {
		o.RegisterFlush(refusals.close)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			// One allocation for both: they live exactly as long as the
			// request. The header is read and set through its canonical
			// key, which skips canonicalising it on every request.
			st := &requestState{}
			info, rec := &st.info, &st.rec
			clientID := firstValue(r.Header, "X-Request-Id")
			*info = Info{ID: requestID(clientID), Method: MethodNone}
			info.idFromClient = info.ID == clientID
			st.idHeader[0] = info.ID
			w.Header()["X-Request-Id"] = st.idHeader[:]
			rec.ResponseWriter = w
			next.ServeHTTP(rec, r.WithContext(WithInfo(r.Context(), info)))

			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			client := host
			if info.Client.Addr.IsValid() {
				client = info.Client.AddrText()
			}
			bytesIn, bytesOut := int64(0), rec.bytes
			ws := status == http.StatusSwitchingProtocols
			if ws {
				bytesIn, bytesOut = rec.wsIn.Load(), rec.wsOut.Load()
			}
			defer func() {
				if len(observers) > 0 {
					c := Completed{Info: info, Status: status, Bytes: bytesOut, BytesIn: bytesIn, Duration: elapsed, WebSocket: ws}
					for _, o := range observers {
						o(c)
					}
				}
			}()
			if isRefusal(r, info, status) && !refusals.first(throttleKey(parseHostAddr(client)), status) {
				return
			}
			ev := logger.Info()
			switch {
			case status >= 500:
				ev = logger.Warn()
			case status == http.StatusOK && isHealthProbe(r):
				// Docker probes /readyz every 30 s; a healthy answer is
				// not news. An unhealthy one still logs at info.
				ev = logger.Debug()
			}
			if info.Client.Addr.IsValid() && info.Client.Addr != info.Client.Peer {
				ev = ev.Str("peer", host)
			}
			host = client
			ev = ev.Str("method", r.Method).
				Str("path", r.URL.EscapedPath()).
				Int("status", status).
				Int64("bytes", bytesOut).
				Float64("duration_ms", float64(elapsed.Microseconds())/1000).
				Str("client", host).
				Str("auth", string(info.Method))
			if info.User != "" {
				// A name from the credential file, vetted by it (1-64
				// characters of [A-Za-z0-9_.-]), or default / guest.
				ev = ev.Str("user", info.User)
			}
			ev = ev.Str("request_id", info.ID)
			if ws {
				ev = ev.Int64("bytes_in", bytesIn).Int64("bytes_out", bytesOut)
			}
			if info.Reason != "" {
				ev = ev.Str("reason", info.Reason)
			}
			if info.Code != "" {
				ev = ev.Str("code", string(info.Code))
			}
			ev.Msg("request")
		})
	}
}

// requestState is what AccessLog keeps per request.
type requestState struct {
	info     Info
	rec      recorder
	idHeader [1]string // the X-Request-Id header's value
}

// firstValue is h.Get(key) for a key already in canonical form.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func isHealthProbe(r *http.Request) bool {
	return r.URL.Path == "/readyz" || r.URL.Path == "/healthz"
}

// requestID keeps a client's id when it is short and plain (so it can be
// correlated with the client's own logs without letting it inject anything
// into ours), and otherwise makes one: the next value of requestSeq, as 16
// hex digits.
func requestID(client string) string {
	if n := len(client); n > 0 && n <= 64 {
		ok := true
		for i := 0; i < n && ok; i++ {
			c := client[i]
			ok = c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		}
		if ok {
			return client
		}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], requestSeq.Add(1))
	var h [16]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// requestSeq numbers generated request ids. It counts up from a random
// start: unique within the process, unlikely to repeat across restarts,
// and, unlike reading crypto/rand per request, nearly free. Ids are labels,
// not secrets.
var requestSeq = func() *atomic.Uint64 {
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	var seq atomic.Uint64
	seq.Store(binary.BigEndian.Uint64(seed[:]))
	return &seq
}()

// recorder captures status and size. Unwrap lets http.ResponseController
// (and so ReverseProxy) reach Flush and Hijack on the real writer, which
// streaming downloads and websocket upgrades need.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// wsIn and wsOut count a hijacked connection's bytes, read from and
	// written to the client; the copy goroutines update them.
	wsIn, wsOut atomic.Int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 || r.status < 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack hands the connection to a websocket upgrade; the log then reports
// 101, the status the client saw.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return &countingConn{Conn: conn, in: &r.wsIn, out: &r.wsOut}, brw, nil
}

// countingConn counts the bytes of a hijacked connection both ways.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
