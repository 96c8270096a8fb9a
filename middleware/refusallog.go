package middleware

import (
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of the refusal summary (see refusalLog).
const (
	DefaultRefusalInterval = 10 * time.Second
	DefaultRefusalClients  = 256
)

// refusalLog keeps a flood of refusals from filling the disk. The first
// refusal of a client is logged as usual; further refusals of that client
// are counted, and every interval one summary line per client says how
// many there were by status. A client whose interval passes without a
// further refusal is forgotten, so its next refusal is logged at once
// again.
//
// At most clients clients are tracked; refusals of others while the table
// is full are counted together in one overflow summary. So refusals add at
// most clients first lines and clients summaries per interval, plus the
// overflow line: with the defaults, about 51 lines a second for a flood
// from more than 256 addresses, and one line per 10 s for a flood from one.
//
// close writes what is still counted when the gateway stops, so a flood in
// the last interval before a restart is in the log too.
type refusalLog struct {
	logger   zerolog.Logger
	interval time.Duration
	capacity int
	now      func() time.Time

	mu       sync.Mutex
	clients  map[netip.Addr]*refusalCount
	overflow refusalCount
	timer    *time.Timer
	// closed is set by close: every refusal after it is logged at once,
	// as no summary would be written for it.
	closed bool
}

type refusalCount struct {
	since    time.Time
	total    int
	byStatus map[int]int
}

func (c *refusalCount) add(status int) {
	if c.byStatus == nil {
		c.byStatus = map[int]int{}
	}
	c.total++
	c.byStatus[status]++
}

func newRefusalLog(logger zerolog.Logger, interval time.Duration, capacity int) *refusalLog {
	if interval <= 0 {
		interval = DefaultRefusalInterval
	}
	if capacity <= 0 {
		capacity = DefaultRefusalClients
	}
	return &refusalLog{logger: logger, interval: interval, capacity: capacity, now: time.Now, clients: map[netip.Addr]*refusalCount{}}
}

// isRefusal reports whether an answer is one the gateway gave itself to
// turn a request away: any 4xx or 503 not from ComfyUI, or a browser sent
// to the login page. Other 5xx are errors and always logged; health probes
// are left to their own rule.
func isRefusal(r *http.Request, info *Info, status int) bool {
	if info.Forwarded || isHealthProbe(r) {
		return false
	}
	return status >= 400 && status < 500 || status == http.StatusServiceUnavailable ||
		status == http.StatusFound && info.Method == MethodNone
}

// first reports whether this refusal of client is to be logged now; if not,
// it has been counted for the summary.
func (l *refusalLog) first(client netip.Addr, status int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return true
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(l.interval, l.flush)
	}
	if c, ok := l.clients[client]; ok {
		c.add(status)
		return false
	}
	if len(l.clients) >= l.capacity {
		if l.overflow.total == 0 {
			l.overflow.since = l.now()
		}
		l.overflow.add(status)
		return false
	}
	l.clients[client] = &refusalCount{since: l.now()}
	return true
}

// flush writes the summaries of the intervals that have passed and forgets
// clients that were quiet through theirs.
func (l *refusalLog) flush() {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return // close wrote everything; a timer that fired meanwhile has nothing left
	}
	for key, c := range l.clients {
		if now.Sub(c.since) < l.interval {
			continue
		}
		if c.total == 0 {
			delete(l.clients, key)
			continue
		}
		l.summary(key.String(), c, now)
		l.clients[key] = &refusalCount{since: now}
	}
	if l.overflow.total > 0 && now.Sub(l.overflow.since) >= l.interval {
		l.summary("untracked", &l.overflow, now)
		l.overflow = refusalCount{}
	}
	l.timer = nil
	if len(l.clients) > 0 || l.overflow.total > 0 {
		l.timer = time.AfterFunc(l.interval/2, l.flush)
	}
}

// close writes a summary for every client, and for the overflow, with
// refusals still counted, however little of their interval has passed, and
// from then on has every refusal logged one by one. The gateway calls it
// once it has stopped serving: a summary not written then never would be.
// Calling it again writes nothing.
func (l *refusalLog) close() {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	keys := make([]netip.Addr, 0, len(l.clients))
	for key, c := range l.clients {
		if c.total > 0 {
			keys = append(keys, key)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	for _, key := range keys {
		l.summary(key.String(), l.clients[key], now)
	}
	if l.overflow.total > 0 {
		l.summary("untracked", &l.overflow, now)
	}
	l.clients, l.overflow, l.closed = map[netip.Addr]*refusalCount{}, refusalCount{}, true
}

func (l *refusalLog) summary(client string, c *refusalCount, now time.Time) {
	statuses := make([]int, 0, len(c.byStatus))
	for s := range c.byStatus {
		statuses = append(statuses, s)
	}
	sort.Ints(statuses)
	d := zerolog.Dict()
	for _, s := range statuses {
		d = d.Int(strconv.Itoa(s), c.byStatus[s])
	}
	l.logger.Info().Str("client", client).Int("refused", c.total).Dict("statuses", d).
		Float64("seconds", now.Sub(c.since).Round(time.Millisecond).Seconds()).
		Msg("refusals not logged one by one")
}
