package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// logLine is the part of a gateway log line the flood tests read.
type logLine struct {
	Message  string         `json:"message"`
	Client   string         `json:"client"`
	Status   int            `json:"status"`
	Path     string         `json:"path"`
	Refused  int            `json:"refused"`
	Statuses map[string]int `json:"statuses"`
	Bytes    *int64         `json:"bytes"`
	BytesIn  *int64         `json:"bytes_in"`
	BytesOut *int64         `json:"bytes_out"`
}

func logLines(t *testing.T, g *gateway) []logLine {
	t.Helper()
	var out []logLine
	for _, s := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("log line %q: %v", s, err)
		}
		out = append(out, l)
	}
	return out
}

// TestRefusalFloodIsSummarisedNotLoggedLineByLine: 300 refusals from one
// client (401s, then 429s once it is locked) leave one request line and
// summaries that account for every other refusal; another client's first
// refusal and an error are still logged at once.
func TestRefusalFloodIsSummarisedNotLoggedLineByLine(t *testing.T) {
	hash := lowCostHash(t, "flood-right-token")
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
		c.MaxLoginAttempts = 3
		c.refusalLogInterval = time.Second
	}})
	attacker := clientFrom(t, "127.0.0.2")
	const flood = 300
	start := time.Now()
	for i := 0; i < flood; i++ {
		token := ""
		if i%2 == 0 {
			token = "wrong-guess"
		}
		if s := statusWith(t, attacker, g.URL+"/queue", token).StatusCode; s != 401 && s != 429 {
			t.Fatalf("refusal %d = %d", i, s)
		}
	}
	elapsed := time.Since(start)
	// Another client: its first refusal is logged at once, and so is an
	// error (ComfyUI gone: 502).
	statusWith(t, clientFrom(t, "127.0.0.3"), g.URL+"/queue", "")
	g.Upstream.Close()
	if s := statusWith(t, clientFrom(t, "127.0.0.3"), g.URL+"/queue", hash).StatusCode; s != http.StatusBadGateway {
		t.Fatalf("with ComfyUI gone: %d, want 502", s)
	}

	summarised := func() int {
		n := 0
		for _, l := range logLines(t, g) {
			if l.Message == "refusals not logged one by one" && l.Client == "127.0.0.2" {
				n += l.Refused
			}
		}
		return n
	}
	eventually(t, 10*time.Second, "every refusal not logged is summarised", func() bool { return summarised() == flood-1 })

	var requestLines, summaries, other401, errors int
	statuses := map[string]int{}
	for _, l := range logLines(t, g) {
		switch {
		case l.Message == "request" && l.Client == "127.0.0.2":
			requestLines++
		case l.Message == "refusals not logged one by one" && l.Client == "127.0.0.2":
			summaries++
			for k, v := range l.Statuses {
				statuses[k] += v
			}
		case l.Message == "request" && l.Client == "127.0.0.3" && l.Status == 401:
			other401++
		case l.Message == "request" && l.Status == http.StatusBadGateway:
			errors++
		}
	}
	if requestLines != 1 {
		t.Fatalf("%d request lines for a %d-refusal flood, want 1", requestLines, flood)
	}
	// One summary per interval of the flood, and one for the interval in
	// which it ended.
	if maxSummaries := int(elapsed/time.Second) + 2; summaries > maxSummaries {
		t.Fatalf("%d summaries for a %s flood, want at most %d", summaries, elapsed, maxSummaries)
	}
	if statuses["429"] == 0 || statuses["401"] == 0 {
		t.Fatalf("summaries by status %v, want both 401 and 429", statuses)
	}
	if other401 != 1 || errors != 1 {
		t.Fatalf("another client's first refusal logged %d times, the 502 %d times; want 1 and 1", other401, errors)
	}
	t.Logf("%d refusals in %s: 1 request line, %d summary lines", flood, elapsed.Round(time.Millisecond), summaries)
}

// TestWebsocketBytesAreCountedBothWays: the access line of a proxied
// websocket reports the bytes it carried to and from the client.
func TestWebsocketBytesAreCountedBothWays(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	conn, resp, err := dialWS(t, g, "/ws?clientId=c1&token="+url.QueryEscape(seedToken), http.Header{"Origin": {g.URL}})
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil { // ComfyUI's status frame
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 10_000)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	var line *logLine
	eventually(t, 10*time.Second, "the websocket's access line", func() bool {
		for _, l := range logLines(t, g) {
			if l.Message == "request" && l.Status == http.StatusSwitchingProtocols {
				line = &l
				return true
			}
		}
		return false
	})
	if line.BytesIn == nil || line.BytesOut == nil || line.Bytes == nil {
		t.Fatalf("websocket line without bytes_in, bytes_out and bytes: %+v", line)
	}
	// The client's frame is masked and framed: a little over its payload.
	if *line.BytesIn < int64(len(payload)) {
		t.Fatalf("bytes_in %d, want at least the %d-byte frame the client sent", *line.BytesIn, len(payload))
	}
	if *line.BytesOut == 0 || *line.Bytes != *line.BytesOut {
		t.Fatalf("bytes_out %d, bytes %d: want the status frame ComfyUI sent, counted in both", *line.BytesOut, *line.Bytes)
	}
}

// TestRefusalsPendingAtShutdownAreSummarised: refusals counted for a
// summary whose interval has not passed are written when the gateway
// stops, so a flood just before a restart is in the log.
func TestRefusalsPendingAtShutdownAreSummarised(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.refusalLogInterval = time.Hour }})
	attacker := clientFrom(t, "127.0.0.2")
	const refusals = 5
	for i := range refusals {
		if s := statusWith(t, attacker, g.URL+"/queue", "").StatusCode; s != http.StatusUnauthorized {
			t.Fatalf("refusal %d = %d, want 401", i, s)
		}
	}
	for _, l := range logLines(t, g) {
		if l.Message == "refusals not logged one by one" {
			t.Fatalf("a summary before the interval passed: %+v", l)
		}
	}
	g.Stop()

	lines := logLines(t, g)
	requestLines, summarised, summary, stopped := 0, 0, -1, -1
	for i, l := range lines {
		switch {
		case l.Path == "/queue" && l.Client == "127.0.0.2":
			requestLines++
		case l.Message == "refusals not logged one by one" && l.Client == "127.0.0.2":
			summarised += l.Refused
			summary = i
			if l.Statuses["401"] != refusals-1 {
				t.Errorf("summary statuses = %v, want 401: %d", l.Statuses, refusals-1)
			}
		case l.Message == "stopped":
			stopped = i
		}
	}
	if requestLines != 1 || summarised != refusals-1 {
		t.Fatalf("%d refusals before shutdown left %d request lines and a summary of %d; want 1 and %d",
			refusals, requestLines, summarised, refusals-1)
	}
	if summary > stopped {
		t.Errorf("the summary came after the gateway's last line")
	}
}
