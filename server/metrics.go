package server

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsNamespace prefixes every gateway series.
const metricsNamespace = "comfyui_auth"

// metrics holds the gateway's Prometheus series in a registry of its own, so
// that tests and benchmarks can run many gateways in one process.
//
// Only what nothing else counts is instrumented on the request path: the
// per-request counter and duration (from the access log's observer), the
// bcrypt queue wait (from the verifier's OnWait hook) and upstream errors.
// Everything the verifier, the store and the websocket tracker already count
// is read at scrape time, so the hot path does not count it twice.
type metrics struct {
	reg *prometheus.Registry

	requests       *prometheus.CounterVec
	responses      *prometheus.CounterVec
	duration       prometheus.Histogram
	bcryptWait     prometheus.Histogram
	upstreamErrors *prometheus.CounterVec
	refusals       *prometheus.CounterVec
	users          *prometheus.CounterVec

	// counters caches the child counters by label pair, because
	// WithLabelValues hashes its labels on every call and this runs once per
	// request.
	counters sync.Map // requestKey -> prometheus.Counter
	codes    sync.Map // int -> prometheus.Counter
	refused  sync.Map // middleware.RefusalCode -> prometheus.Counter
	userCtrs sync.Map // user name -> prometheus.Counter

	// usersMu guards named, the named users given a series of their own;
	// once it holds maxUserSeries names, every other name is "other".
	usersMu sync.Mutex
	named   int
}

// maxUserSeries caps the named users counted apart in
// comfyui_auth_user_requests_total: the first 64 names let in since the
// start get a series each, later ones share the series user="other". The
// reserved users default and guest always have their own. A class of a few
// dozen fits; a file of thousands cannot grow Prometheus without bound.
const maxUserSeries = 64

// otherUsers is the user label of the named users past maxUserSeries.
const otherUsers = "other"

type requestKey struct {
	auth    middleware.Method
	outcome string
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "requests_total",
		Help: "Requests answered, by how they were authenticated (auth) and what became of them (outcome: allowed, denied, busy, throttled, forbidden, unprotected).",
	}, []string{"auth", "outcome"})
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "responses_total",
		Help: "Responses by HTTP status code, the gateway's own (401, 403, 429, 503) and ComfyUI's.",
	}, []string{"code"})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "proxied_request_duration_seconds",
		Help: "Time from request to the end of the response for requests let through to ComfyUI (websockets excluded).",
		// 100 µs to about 100 s: the gateway's own cost sits in the first
		// buckets, ComfyUI's /prompt and large /view downloads in the last.
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 11),
	})
	m.bcryptWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "bcrypt_wait_seconds",
		Help:    "Time a raw-token check waited in the queue for a bcrypt worker.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
	})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "upstream_errors_total",
		Help: "Requests ComfyUI could not answer, by the status the client got (502 unreachable, 504 timeout).",
	}, []string{"code"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "refusals_total",
		Help: "Requests the gateway refused itself, by refusal code (wrong_token, locked_out, pool_busy, ...; see README's status table).",
	}, []string{"refusal"})
	m.users = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "user_requests_total",
		Help: "Requests let in, by user: a named user, default (the bare hash lines), guest, or other (named users past the first 64 seen since the start).",
	}, []string{"user"})
	m.reg.MustRegister(m.requests, m.responses, m.duration, m.bcryptWait, m.upstreamErrors, m.refusals, m.users,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe is the access log's observer: one counter pair and, for proxied
// requests, one histogram sample.
func (m *metrics) observe(c middleware.Completed) {
	auth := c.Info.Method
	k := requestKey{auth: auth, outcome: outcome(auth, c.Status)}
	ctr, ok := m.counters.Load(k)
	if !ok {
		ctr, _ = m.counters.LoadOrStore(k, m.requests.WithLabelValues(string(k.auth), k.outcome))
	}
	ctr.(prometheus.Counter).Inc()
	code, ok := m.codes.Load(c.Status)
	if !ok {
		code, _ = m.codes.LoadOrStore(c.Status, m.responses.WithLabelValues(strconv.Itoa(c.Status)))
	}
	code.(prometheus.Counter).Inc()
	if rc := c.Info.Code; rc != "" {
		// The codes are a fixed set of constants, so the label is bounded.
		ctr, ok := m.refused.Load(rc)
		if !ok {
			ctr, _ = m.refused.LoadOrStore(rc, m.refusals.WithLabelValues(string(rc)))
		}
		ctr.(prometheus.Counter).Inc()
	}
	if u := c.Info.User; u != "" {
		m.userCounter(u).Inc()
	}
	if k.outcome == "allowed" && auth != middleware.MethodPublic && !c.WebSocket {
		m.duration.Observe(c.Duration.Seconds())
	}
}

// userCounter is the counter of user name, within maxUserSeries. Names
// past the cap are not remembered, so the map is bounded too; they take the
// lock on each request, which only a file of more than 64 users pays.
func (m *metrics) userCounter(name string) prometheus.Counter {
	if ctr, ok := m.userCtrs.Load(name); ok {
		return ctr.(prometheus.Counter)
	}
	m.usersMu.Lock()
	defer m.usersMu.Unlock()
	if ctr, ok := m.userCtrs.Load(name); ok {
		return ctr.(prometheus.Counter)
	}
	reserved := name == middleware.UserDefault || name == middleware.UserGuest
	if !reserved && m.named >= maxUserSeries {
		return m.users.WithLabelValues(otherUsers)
	}
	if !reserved {
		m.named++
	}
	ctr := m.users.WithLabelValues(name)
	m.userCtrs.Store(name, ctr)
	return ctr
}

// outcome classes a request for requests_total. A request that no auth step
// claimed (auth "none") was refused, unless it succeeded: then it went to an
// unprotected route such as /healthz.
func outcome(auth middleware.Method, status int) string {
	if auth != middleware.MethodNone {
		return "allowed"
	}
	switch {
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status == http.StatusServiceUnavailable:
		return "busy"
	case status == http.StatusForbidden:
		return "forbidden"
	case status < 300:
		return "unprotected"
	}
	return "denied"
}

// upstreamError counts a request ComfyUI did not answer.
func (m *metrics) upstreamError(status int) {
	m.upstreamErrors.WithLabelValues(strconv.Itoa(status)).Inc()
}

// bcryptWaited is the verifier's OnWait hook.
func (m *metrics) bcryptWaited(d time.Duration) { m.bcryptWait.Observe(d.Seconds()) }

// watchVerifier exposes the verifier's own counters, read at scrape time.
func (m *metrics) watchVerifier(v *hashstore.Verifier) {
	gauge := func(name, help string, f func(hashstore.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help},
			func() float64 { return float64(f(v.Stats())) })
	}
	counter := func(name, help string, f func(hashstore.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help},
			func() float64 { return float64(f(v.Stats())) })
	}
	m.reg.MustRegister(
		gauge("bcrypt_in_flight", "bcrypt comparisons running now.",
			func(s hashstore.Stats) int64 { return s.InFlight }),
		gauge("bcrypt_queue_depth", "Raw-token checks waiting for a bcrypt worker now.",
			func(s hashstore.Stats) int64 { return s.Queued }),
		counter("bcrypt_checks_total", "bcrypt comparisons executed.",
			func(s hashstore.Stats) int64 { return s.Checks }),
		counter("bcrypt_shed_total", "Raw-token checks answered 503 without bcrypt (queue full, wait too long, client gone).",
			func(s hashstore.Stats) int64 { return s.Shed }),
		counter("bcrypt_client_busy_total", "Raw-token checks answered 429 without bcrypt because the client already had its share of checks queued or running.",
			func(s hashstore.Stats) int64 { return s.ClientBusy }),
		counter("token_cache_hits_total", "Raw-token checks answered from the success cache.",
			func(s hashstore.Stats) int64 { return s.CacheHits }),
		counter("token_cache_misses_total", "Raw-token checks that missed the success cache and needed bcrypt.",
			func(s hashstore.Stats) int64 { return s.CacheMisses }),
		gauge("token_cache_entries", "Raw tokens in the success cache now.",
			func(s hashstore.Stats) int64 { return s.CacheEntries }),
	)
}

// watchStore exposes credential loads, read at scrape time.
func (m *metrics) watchStore(st *hashstore.Store) {
	m.reg.MustRegister(
		credentialLoads{store: st},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "credentials_last_success_timestamp_seconds",
			Help: "Unix time at which the credentials in force were loaded; 0 when none is loaded.",
		}, func() float64 {
			s := st.Status()
			if !s.Ready {
				return 0
			}
			return float64(s.LastGood.UnixNano()) / 1e9
		}),
	)
}

// watchWebsockets exposes the number of proxied websockets.
func (m *metrics) watchWebsockets(open func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "websockets_open",
		Help: "Websockets being proxied now.",
	}, func() float64 { return float64(open()) }))
}

// watchConns exposes the connection bounds' state.
func (m *metrics) watchConns(l *connLimiter) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "connections_open",
			Help: "Client connections open now (at most --max-conns).",
		}, func() float64 { return float64(l.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "connections_refused_total",
			Help: "Connections refused at the overall or per-client bound.",
		}, func() float64 { return float64(l.refused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "connections_idle_closed_total",
			Help: "Idle keep-alive connections closed to make room at a bound.",
		}, func() float64 { return float64(l.evicted.Load()) }),
	)
}

// credentialLoads reports both results of credential loads from one Status
// read, so ok and failed come from the same instant.
type credentialLoads struct{ store *hashstore.Store }

var credentialLoadsDesc = prometheus.NewDesc(metricsNamespace+"_credential_loads_total",
	"Credential file loads, including the first: ok installed new credentials, failed kept the previous ones (or none).",
	[]string{"result"}, nil)

func (c credentialLoads) Describe(ch chan<- *prometheus.Desc) { ch <- credentialLoadsDesc }

func (c credentialLoads) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Status()
	ch <- prometheus.MustNewConstMetric(credentialLoadsDesc, prometheus.CounterValue, float64(st.Generation), "ok")
	ch <- prometheus.MustNewConstMetric(credentialLoadsDesc, prometheus.CounterValue, float64(st.Failures), "failed")
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// isLoopbackAddr reports whether a listen address only accepts local
// connections, to warn when metrics are exposed beyond the machine.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
