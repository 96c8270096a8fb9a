// Package server is the HTTP side of the gateway: the router, the reverse
// proxy to ComfyUI, the health endpoints, and the wiring of the credential
// store and the auth middleware. cmd/comfyui-auth builds a Config and calls
// New and Run.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// Server is one gateway instance.
type Server struct {
	cfg      Config
	upstream *url.URL
	logger   zerolog.Logger
	store    *hashstore.Store // nil when authentication is disabled
	verifier *hashstore.Verifier
	probe    *upstreamProbe
	handler  http.Handler
	trusted  middleware.TrustedProxies
	clients  middleware.ClientResolver // --trusted-proxies and --public-url
	limiter  *middleware.Throttle      // per-client failure throttle, nil when off
	certs    *certReloader             // nil when serving plain HTTP
	sessions *middleware.Sessions      // nil when authentication is disabled
	public   *url.URL                  // --public-url, nil: from Host
	metrics  *metrics
	// untrustedProtoSeen is set once an untrusted peer's X-Forwarded-Proto
	// has been logged, so a busy LAN does not flood the log.
	untrustedProtoSeen atomic.Bool
	// readyzAuth checks a token presented to /readyz (nil with auth off);
	// readyLast is the last readiness logged.
	readyzAuth http.Handler
	readyMu    sync.Mutex
	readyLast  string
	// metricsLn is the separate metrics listener opened by Listen, nil
	// when cfg.MetricsListen is empty.
	metricsLn net.Listener
	// flushRefusals writes the access log's pending refusal summaries; Serve
	// calls it when it stops (see middleware.AccessLogOptions.RegisterFlush).
	flushRefusals func()
	// guestLimit counts guest logins per client (see handleGuestLogin);
	// nil when authentication is disabled.
	guestLimit *middleware.Throttle

	// wsCtx is cancelled at shutdown to close proxied websockets, which
	// http.Server.Shutdown does not track once hijacked.
	wsCtx    context.Context
	wsCancel context.CancelFunc
	// upstreamPool is the proxy's connection pool to ComfyUI, closed when
	// Serve returns.
	upstreamPool *syncTransport
	wsOpen       sync.WaitGroup
	wsCount      atomic.Int64
	// wsAdmitted closes a websocket when the credential line that
	// admitted it leaves the credential file.
	wsAdmitted wsRegistry

	// conns bounds client connections, overall and per client.
	conns *connLimiter

	// comfyUsers maps users to ComfyUI user ids (--comfy-multi-user), nil
	// when off.
	comfyUsers *comfyRegistry
	// queueShare tags prompts with their user and, with
	// --max-queued-prompts, counts them; ownPrompts keeps named users and
	// guests to their own prompts; both nil when neither mode is on.
	// queueKey keys the tags (derived from the session key), and
	// queueKeyKept says whether that key survives a restart.
	queueShare func(http.Handler) http.Handler
	ownPrompts func(http.Handler) http.Handler
	// outputOwners tells whose prompt made each output /view serves; nil
	// when ownPrompts is.
	outputOwners *middleware.OutputOwners
	queueKey     []byte
	queueKeyKept bool
	// wholeReads bounds the requests those two hold whole at once.
	wholeReads *middleware.WholeReads
}

// New validates cfg, loads the credentials and builds the handler. It does
// not listen yet.
func New(cfg Config, logger zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	upstream, _ := parseUpstream(cfg.Upstream)
	s := &Server{cfg: cfg, upstream: upstream, logger: logger, probe: newUpstreamProbe(upstream),
		metrics: newMetrics()}
	s.wsCtx, s.wsCancel = context.WithCancel(context.Background())
	s.trusted, _ = middleware.ParseTrustedProxies(cfg.TrustedProxies) // checked by Validate
	s.public, _ = parsePublicURL(cfg.PublicURL)
	s.clients = middleware.ClientResolver{Trusted: s.trusted, PublicURL: s.public}
	if cfg.TLSCert != "" {
		certs, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, logger.With().Str("component", "tls").Logger())
		if err != nil {
			return nil, err
		}
		s.certs = certs
	}

	if cfg.AuthEnabled {
		var fallback *hashstore.Credentials
		if cfg.Password != "" {
			// Hashing at cost 10 in memory: the hash never leaves the
			// process, so the cost only has to slow an offline attacker who
			// could read memory, and start-up stays fast.
			h, err := bcrypt.GenerateFromPassword([]byte(cfg.Password), 10)
			if err != nil {
				return nil, fmt.Errorf("COMFYUI_PASSWORD cannot be hashed: %w", err)
			}
			fallback = &hashstore.Credentials{Hashes: []string{string(h)}, Username: cfg.Username}
		}
		store, err := hashstore.NewStore(hashstore.StoreOptions{
			Path:         cfg.HashFile,
			PollInterval: cfg.PollInterval,
			Fallback:     fallback,
			Logger:       logger.With().Str("component", "hashstore").Logger(),
		})
		if err != nil {
			return nil, err
		}
		s.store = store
		if cfg.MaxLoginAttempts > 0 {
			s.limiter = middleware.NewThrottle(middleware.ThrottleOptions{
				MaxFailures: cfg.MaxLoginAttempts,
				Window:      cfg.ThrottleWindow,
				BaseLock:    cfg.ThrottleLock,
			})
		}
		s.verifier = hashstore.NewVerifier(store, hashstore.VerifierOptions{
			Workers:  cfg.BcryptWorkers,
			QueueLen: cfg.BcryptQueue,
			MaxWait:  cfg.BcryptMaxWait,
			OnWait:   s.metrics.bcryptWaited,
			Compare:  cfg.bcryptCompare,
		})
		s.metrics.watchVerifier(s.verifier)
		s.metrics.watchStore(s.store)
	}
	if cfg.AuthEnabled {
		sessions, err := s.newSessions()
		if err != nil {
			return nil, err
		}
		s.sessions = sessions
		s.guestLimit = middleware.NewThrottle(middleware.ThrottleOptions{
			MaxFailures: guestLoginBurst,
			Window:      guestLoginWindow,
			BaseLock:    guestLoginLock,
			MaxLock:     guestLoginMaxLock,
		})
	}
	s.setUpComfyUsers()
	s.metrics.watchWebsockets(s.OpenWebsockets)
	s.conns = newConnLimiter(deriveConnLimits(cfg.MaxConns, cfg.MaxConnsPerClient), s.trusted, s.certs != nil,
		logger.With().Str("component", "conns").Logger())
	s.metrics.watchConns(s.conns)
	s.handler = s.routes()
	return s, nil
}

// sessionCookieNames are the gateway's own cookies, stripped before proxying.
var sessionCookieNames = []string{middleware.SessionCookie}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	// Every method, so that no method of these unauthenticated paths falls
	// through to Auth and the proxy: GET and HEAD are answered, the rest
	// get 405 from the gateway (see healthOnly).
	r.Handle("/healthz", healthOnly(http.HandlerFunc(handleHealthz)))
	r.Handle("/readyz", healthOnly(http.HandlerFunc(s.handleReadyz)))

	po := proxyOptions{
		upstream:      s.upstream,
		stripCookies:  sessionCookieNames,
		headerTimeout: s.cfg.UpstreamTimeout,
		onError:       s.upstreamError,
		logger:        s.logger.With().Str("component", "proxy").Logger(),
	}
	if s.comfyUsers != nil {
		po.comfyUser = comfyUserOf
		po.onResponse = s.noteUnknownUser
	}
	if s.store != nil {
		// The gateway's own pages: login, logout, guest status, and the
		// stylesheet and Logout extension they use.
		r.Get(loginPath, s.handleLoginPage)
		r.Head(loginPath, s.handleLoginPage)
		r.Post(loginPath, s.handleLogin)
		r.Get(logoutPath, s.handleLogout)
		r.Get(guestModePath, s.handleGuestMode)
		r.Get(assetPrefix+"*", handleAsset)
		r.Head(assetPrefix+"*", handleAsset)
		po.extensionScript = logoutScriptPath
	}
	proxy, pool := newProxy(po)
	s.upstreamPool = pool
	if s.store != nil {
		s.readyzAuth = middleware.Auth(s.authOptions())(http.HandlerFunc(s.readyzDetails))
	}
	protected := s.protectedChain().Handler(forwarded(proxy))
	r.Handle("/*", protected)
	return chi.Chain(
		middleware.AccessLogWith(middleware.AccessLogOptions{
			Logger:          s.logger,
			Observers:       []func(middleware.Completed){s.metrics.observe},
			RefusalInterval: s.cfg.refusalLogInterval,
			RegisterFlush:   func(flush func()) { s.flushRefusals = flush },
		}),
		middleware.CloseUnreadBody,
		middleware.ResolveClient(s.clients),
	).Handler(proxiedOrOwn{own: r, proxied: protected})
}

// protectedChain is what every request for ComfyUI goes through, in order.
func (s *Server) protectedChain() chi.Middlewares {
	var mws chi.Middlewares
	if s.store != nil {
		mws = append(mws, middleware.Auth(s.authOptions()),
			// Order matters: CSRF and the guest policy read how Auth let
			// the request in, and apply to sessions only.
			middleware.CSRF(s.public))
		guestKey := make([]byte, 32)
		if _, err := rand.Read(guestKey); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		mws = append(mws, middleware.GuestPolicy(middleware.GuestOptions{
			SessionID: func(r *http.Request) ([16]byte, bool) {
				sess, ok := s.sessions.Current(r)
				return sess.ID, ok && sess.Guest
			},
			// Per process: a restart gives guests new client ids,
			// which the frontend takes from ComfyUI's status frame.
			Key: guestKey,
		}))
	} else {
		mws = append(mws, markDisabled)
	}
	if s.comfyUsers != nil {
		mws = append(mws, s.bindComfyUser)
	}
	if s.queueShare != nil {
		mws = append(mws, middleware.BoundWholeReads(s.wholeReads))
	}
	// Own prompts first: it judges the prompt_id a client chose,
	// before the queue share sets one on every prompt.
	if s.ownPrompts != nil {
		mws = append(mws, s.ownPrompts)
	}
	if s.queueShare != nil {
		mws = append(mws, s.queueShare)
	}
	return append(mws, s.trackWebsockets)
}

// proxiedOrOwn sends a request for ComfyUI straight to the protected chain,
// and the gateway's own paths to the router. Nearly every request is for
// ComfyUI, and the router would only find its catch-all route for it; that
// lookup, its route context and the request copy it makes are most of the
// router's cost per request.
//
// It cannot open a way around Auth: a request it does not recognise as for
// ComfyUI goes to the router, which sends every path that is not a gateway
// page to the same protected chain.
type proxiedOrOwn struct {
	own     http.Handler
	proxied http.Handler
}

func (d proxiedOrOwn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if forComfyUI(r) {
		d.proxied.ServeHTTP(w, r)
		return
	}
	d.own.ServeHTTP(w, r)
}

// forComfyUI reports whether the router would give r to its catch-all
// route: a method the router knows, and a path (the one it routes on, the
// raw path when there is one) that is none of the gateway's routes, nor
// below their prefixes. Without credentials the gateway pages are not
// routed, but they are still sent to the router, whose catch-all takes
// them: this only decides which way a request reaches the same chain.
func forComfyUI(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodDelete, http.MethodPatch, http.MethodOptions:
	default:
		return false
	}
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	switch p {
	case "/healthz", "/readyz", loginPath, logoutPath, guestModePath:
		return false
	}
	return strings.HasPrefix(p, "/") && !strings.HasPrefix(p, assetPrefix)
}

// authOptions is how Auth is set up for every protected request (and for a
// token presented to /readyz).
func (s *Server) authOptions() middleware.AuthOptions {
	var throttle middleware.Throttler
	if s.limiter != nil {
		throttle = s.limiter
	}
	return middleware.AuthOptions{
		Throttle:        throttle,
		Trusted:         s.trusted,
		PublicURL:       s.public,
		Hashes:          s.store,
		Verifier:        s.verifier,
		Users:           storeUsers{s.store},
		AcceptHashToken: s.cfg.AcceptHashToken,
		Sessions:        s.sessions,
		LoginPath:       loginPath,
		Logger:          s.logger,
	}
}

func markDisabled(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		middleware.InfoFrom(r).Method = middleware.MethodDisabled
		next.ServeHTTP(w, r)
	})
}

// forwarded marks a request as handed to ComfyUI, whose answer, unlike
// the gateway's own, may come while the request body still streams.
func forwarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := middleware.InfoFrom(r)
		info.Forwarded = true
		info.ProxyHeader = w.Header()
		next.ServeHTTP(w, r)
	})
}

// trackWebsockets ties each proxied websocket to the server's lifetime so
// shutdown can close them, and to the credential line that admitted it so
// removing that line closes it; and counts them.
func (s *Server) trackWebsockets(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !middleware.IsWebSocket(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.wsOpen.Add(1)
		s.wsCount.Add(1)
		defer func() { s.wsCount.Add(-1); s.wsOpen.Done() }()
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.wsCtx, cancel)
		defer stop()
		if s.cfg.beforeWebsocketAdmission != nil {
			s.cfg.beforeWebsocketAdmission()
		}
		release, ok := s.admitWebsocket(r, cancel)
		if !ok {
			// The credentials were reloaded between the check and the
			// upgrade: the line the check named is one of a file no longer
			// in force, so the client retries and is checked against the
			// new one.
			w.Header().Set("Retry-After", "1")
			middleware.Refuse(w, r, http.StatusServiceUnavailable, middleware.CodeCredentialsReloaded, "credentials reloaded",
				"the credential file was reloaded during the websocket upgrade; connect again to be checked against the new one")
			return
		}
		defer release()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// debugWriter turns net/http's error log lines into debug events.
type debugWriter struct{ logger zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.logger.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Store returns the credential store, nil when authentication is disabled.
func (s *Server) Store() *hashstore.Store { return s.store }

// Verifier returns the bcrypt verifier, nil when authentication is disabled.
func (s *Server) Verifier() *hashstore.Verifier { return s.verifier }

// Throttle is the per-client failure throttle every credential check
// consults (Locked before checking, Failed after a wrong one); nil when
// MaxLoginAttempts is 0 or authentication is off.
func (s *Server) Throttle() middleware.Throttler {
	if s.limiter == nil {
		return nil
	}
	return s.limiter
}

// isHTTPS decides the session cookie's Secure flag from the request's
// resolved Client: the connection is TLS, or a proxy in --trusted-proxies
// says so in X-Forwarded-Proto. Anyone else's X-Forwarded-Proto is ignored,
// and said once in the log: it is usually a TLS proxy that is missing from
// --trusted-proxies, whose users would otherwise get cookies without Secure
// and never know why.
func (s *Server) isHTTPS(r *http.Request) bool {
	c := middleware.ClientOf(r, s.clients)
	if c.ProtoIgnored && s.untrustedProtoSeen.CompareAndSwap(false, true) {
		s.logger.Warn().Str("peer", r.RemoteAddr).
			Msg("ignoring X-Forwarded-Proto: https from a peer outside --trusted-proxies, so its session cookies are not marked Secure; if it is your TLS proxy, add its address to --trusted-proxies / COMFYUI_AUTH_TRUSTED_PROXIES, or set an https --public-url")
	}
	return c.HTTPS
}

// MetricsAddr is the metrics listener's address once Listen has opened it,
// nil when metrics are off.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// OpenWebsockets is the number of websockets being proxied now.
func (s *Server) OpenWebsockets() int64 { return s.wsCount.Load() }

// Listen opens the public listener, and the metrics listener when
// configured, with a sentence a person can act on when a port is taken.
// Both are opened here so that a taken port stops the gateway at start.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w (is another ComfyUI or gateway already using the port? set --listen / COMFYUI_AUTH_LISTEN)", s.cfg.Listen, err)
	}
	if s.cfg.MetricsListen != "" && s.metricsLn == nil {
		mln, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cannot listen for metrics on %s: %w (set --metrics-listen / COMFYUI_AUTH_METRICS_LISTEN to a free address, or empty to turn metrics off)", s.cfg.MetricsListen, err)
		}
		s.metricsLn = mln
		if !isLoopbackAddr(s.cfg.MetricsListen) {
			s.logger.Warn().Str("metrics_listen", s.cfg.MetricsListen).
				Msg("metrics are served without authentication on a non-loopback address; make sure only your Prometheus can reach it")
		}
	}
	return ln, nil
}

// idleTimeout closes a keep-alive connection that sent no request for this
// long. Browsers and API clients reconnect for free, and two minutes spans
// any pause between a client's requests that is worth a held socket; it is
// not a setting because no deployment gains from another value.
const idleTimeout = 2 * time.Minute

// Serve runs the gateway on ln until ctx is done, then stops accepting,
// closes websockets, drains in-flight requests within cfg.ShutdownTimeout
// and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	storeCtx, stopStore := context.WithCancel(context.Background())
	defer stopStore()
	if s.store != nil {
		go s.store.Run(storeCtx)
		go s.closeRevokedWebsockets(storeCtx)
		s.checkServerToken()
	}
	if s.verifier != nil {
		defer s.verifier.Close()
	}
	ln = s.conns.listener(ln)
	srv := &http.Server{
		Handler:           s.handler,
		ConnState:         s.conns.connState,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		// No ReadTimeout/WriteTimeout: they would cut slow uploads, long
		// /view downloads and idle websockets. IdleTimeout only closes
		// keep-alive connections between requests.
		IdleTimeout: idleTimeout,
		// Handshake failures and malformed requests from scanners arrive
		// all day on a public port: debug level, in the structured log.
		ErrorLog: log.New(debugWriter{s.logger.With().Str("component", "http").Logger()}, "", 0),
	}
	errc := make(chan error, 2)
	if s.certs != nil {
		srv.TLSConfig = s.certs.tlsConfig()
		// ServeTLS, not Serve on a tls.Listener: it also sets up HTTP/2.
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	var metricsSrv *http.Server
	if s.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", s.metrics.handler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: idleTimeout}
		mln := s.metricsLn
		go func() {
			if err := metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		s.logger.Info().Str("metrics_listen", mln.Addr().String()).Msg("serving Prometheus metrics on /metrics")
		defer metricsSrv.Close()
	}
	s.logger.Info().Str("listen", ln.Addr().String()).Str("upstream", s.upstream.String()).
		Bool("auth", s.store != nil).Bool("tls", s.certs != nil).
		Int("max_conns", s.conns.limits.max).Int("max_conns_per_client", s.conns.limits.perClient).
		Uint64("descriptor_limit", s.conns.limits.fileLimit).Msg("gateway listening")

	select {
	case err := <-errc:
		s.flushRefusals()
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.logger.Info().Dur("timeout", s.cfg.ShutdownTimeout).Int64("websockets", s.wsCount.Load()).
		Msg("shutting down: no new connections, draining in-flight requests")
	drainCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.wsCancel()
	err := srv.Shutdown(drainCtx)
	wsDone := make(chan struct{})
	go func() { s.wsOpen.Wait(); close(wsDone) }()
	select {
	case <-wsDone:
	case <-drainCtx.Done():
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger.Warn().Err(err).Msg("drain bound reached; closing the remaining connections")
		_ = srv.Close()
	}
	// After the drain, so that refusals of the requests it waited for are
	// counted in the summaries, not lost.
	s.flushRefusals()
	if s.sessions != nil {
		_ = s.sessions.Flush() // a logout whose write failed gets one more try; logged on failure
	}
	// In-flight responses finish first: their connections are closed
	// rather than pooled once the pool is closed.
	s.upstreamPool.Close()
	s.logger.Info().Msg("stopped")
	return nil
}
