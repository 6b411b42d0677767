package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/policies"
)

// Loader loads a policy snapshot; policies.Load with the server's options in production.
type Loader func() (*policies.Snapshot, error)

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// First is the policy to serve at start, when the caller has loaded it already (Run reads
	// its redis block before it builds the server). NewServer owns it: on error it is closed.
	// nil: NewServer calls Load.
	First *policies.Snapshot
	// Load reads and compiles the policy: on every reload, and at start when First is nil.
	Load Loader
	// Limiters and Metrics as for Options. Metrics defaults to NewMetrics().
	Limiters *ratelimit.Registry
	Metrics  *Metrics
	// DrainTimeout bounds graceful shutdown. Default 30s.
	DrainTimeout time.Duration
	// OnListen, when set, is told the bound addresses (useful with port 0).
	OnListen func(proxy, admin net.Addr)
	// ReloadGrace bounds how long Serve, once drained, waits for a reload still running
	// before it returns and abandons it (see Serve). Default 5s.
	ReloadGrace time.Duration
	// BuildVersion is the binary's version, shown in the start-up log and /status.
	BuildVersion string
	// Shadow, when set, decides a copy of every request with a candidate policy; it is
	// reloaded with the served policy and closed with the server.
	Shadow *Shadow
	// TracerProvider, when set, traces requests (see Options).
	TracerProvider trace.TracerProvider
}

// Server is the gateway with its listeners, admin endpoints and reloads.
type Server struct {
	opts    ServerOptions
	log     *slog.Logger
	gw      *Gateway
	metrics *Metrics

	// startTLS and the addresses are what the listeners were opened with.
	startTLS                bool
	startListen, startAdmin string

	// reloadMu runs one Reload at a time.
	reloadMu sync.Mutex
	// swapMu orders a reload's swap with Close; closed tells that Close ran, so that a reload
	// that was abandoned at shutdown and finishes late closes its snapshot instead of swapping
	// it into a closed gateway.
	swapMu sync.Mutex
	closed bool

	mu          sync.Mutex
	loadedAt    time.Time
	lastErr     error
	lastErrAt   time.Time
	reloadCount int
}

// NewServer builds the gateway serving opts.First, or the policy Load returns. It does not
// listen yet.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.ReloadGrace == 0 {
		opts.ReloadGrace = 5 * time.Second
	}
	snap := opts.First
	opts.First = nil // not kept: the server must not pin the first snapshot once a reload retires it
	if opts.Limiters == nil {
		if snap != nil {
			_ = snap.Close()
		}
		return nil, errors.New("server needs a rate-limit registry")
	}
	if snap == nil {
		var err error
		if snap, err = safeLoad(opts.Logger, opts.Load); err != nil {
			return nil, fmt.Errorf("loading policy: %w", err)
		}
	}
	gw, err := safeNew(opts.Logger, snap, Options{Logger: opts.Logger, AccessLog: opts.AccessLog, Limiters: opts.Limiters, Metrics: opts.Metrics,
		TracerProvider: opts.TracerProvider})
	if err != nil {
		_ = snap.Close()
		return nil, fmt.Errorf("building gateway: %w", err)
	}
	logWarnings(opts.Logger, snap)
	if opts.Shadow != nil {
		gw.SetShadow(opts.Shadow)
	}
	s := &Server{opts: opts, log: opts.Logger, gw: gw, metrics: opts.Metrics, loadedAt: snap.LoadedAt,
		startTLS: snap.TLS != nil, startListen: snap.Policy.Listen, startAdmin: snap.Policy.AdminListen}
	if s.startTLS {
		opts.Metrics.certificateExpiry(func() time.Time {
			if src := gw.Snapshot().TLS; src != nil {
				return src.NotAfter()
			}
			return time.Time{}
		})
	}
	return s, nil
}

// Gateway returns the request handler.
func (s *Server) Gateway() *Gateway { return s.gw }

// errPanic is a panic of the load path turned into an error.
var errPanic = errors.New("internal error (a bug; please report it)")

// errServerClosed is a reload that finished after Close.
var errServerClosed = errors.New("the server is closed")

// safeLoad calls load, turning a panic into an error: a policy must never kill the process,
// whatever the loader (and the libraries it calls) does with it.
func safeLoad(log *slog.Logger, load Loader) (snap *policies.Snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic while loading the policy", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			snap, err = nil, fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	return load()
}

// safeNew is New with a panic of compiling snap turned into an error.
func safeNew(log *slog.Logger, snap *policies.Snapshot, opts Options) (gw *Gateway, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic while compiling the policy", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			gw, err = nil, fmt.Errorf("compiling the policy: %w: %v", errPanic, r)
		}
	}()
	return New(snap, opts)
}

// swap swaps snap in unless the server is closed; on error (a panic of compiling it included)
// snap is closed and the old policy keeps serving.
func (s *Server) swap(snap *policies.Snapshot) (err error) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic while compiling the policy", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("compiling the policy: %w: %v", errPanic, r)
		}
		if err != nil {
			_ = snap.Close()
		}
	}()
	if s.closed {
		return errServerClosed
	}
	return s.gw.Swap(snap)
}

// logWarnings says what a policy that loaded most likely got wrong.
func logWarnings(log *slog.Logger, snap *policies.Snapshot) {
	for _, w := range snap.Warnings {
		log.Warn("policy warning", "version", snap.Version, "warning", w.Error())
	}
}

// Reload loads the policy again and swaps it in. A policy that fails to load or compile, or
// makes either panic, is logged with all its errors and the old one keeps serving. Reloads
// run one at a time. The shadow policy, when there is one, is reloaded too, the same way: the
// returned error is the served policy's.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	defer s.reloadShadow() // after the served policy's, which a slow candidate must not delay
	snap, err := safeLoad(s.log, s.opts.Load)
	if err == nil {
		err = s.swap(snap)
	}
	if errors.Is(err, errServerClosed) {
		s.log.Info("policy reload finished after shutdown; discarded")
		return err
	}
	s.metrics.Reload(err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadCount++
	if err != nil {
		s.lastErr, s.lastErrAt = err, time.Now()
		s.log.Error("policy reload failed; the previous policy keeps serving", "version", s.gw.Snapshot().Version, "err", err)
		return err
	}
	s.lastErr = nil
	s.loadedAt = snap.LoadedAt
	if (snap.TLS != nil) != s.startTLS || snap.Policy.Listen != s.startListen || snap.Policy.AdminListen != s.startAdmin {
		s.log.Warn("listen, admin_listen and turning tls on or off take effect at the next restart")
	}
	s.log.Info("policy reloaded", "version", snap.Version, "consumers", snap.Consumers.Len(), "routes", len(snap.Policy.Routes))
	logWarnings(s.log, snap)
	return nil
}

// reloadShadow reloads the shadow policy, if any; on error the previous candidate keeps deciding.
func (s *Server) reloadShadow() {
	if sh := s.opts.Shadow; sh != nil {
		if err := sh.Reload(); err != nil && !errors.Is(err, errServerClosed) {
			s.log.Error("shadow policy reload failed; the previous candidate keeps deciding", "err", err)
		}
	}
}

// Serve listens on the policy's addresses and serves until ctx is done, then drains in-flight
// requests. reload receives a value for each requested reload (SIGHUP, file change).
//
// Reloads run in a goroutine of their own, one at a time, with requests that come during one
// merged into a single next reload (it reads the newest files): a slow or stuck load never
// delays shutdown or the handling of ctx. Once drained, Serve waits up to ReloadGrace for a
// reload still running, then returns without it: the abandoned reload, if it ever finishes,
// finds the server closed and closes its snapshot instead of swapping it in.
func (s *Server) Serve(ctx context.Context, reload <-chan struct{}) error {
	pol := s.gw.Snapshot().Policy
	pl, err := net.Listen("tcp", pol.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", pol.Listen, err)
	}
	al, err := net.Listen("tcp", pol.AdminListen)
	if err != nil {
		_ = pl.Close()
		return fmt.Errorf("listening on %s (admin): %w", pol.AdminListen, err)
	}
	proxy := &http.Server{
		Handler:           s.gw,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	start := s.gw.Snapshot()
	if fallback := start.TLS; fallback != nil { // not start itself: a closure must not pin a snapshot
		proxy.TLSConfig = &tls.Config{
			MinVersion: tlsVersion(start.Policy.TLS.MinVersion),
			// The certificate of the policy being served: a reload that names other files
			// takes effect at once, and each Source reads its files again when they change.
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if src := s.gw.Snapshot().TLS; src != nil {
					return src.GetCertificate(hello)
				}
				return fallback.GetCertificate(hello)
			},
		}
	}
	admin := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("portcullis listening", "proxy", pl.Addr().String(), "tls", start.TLS != nil, "admin", al.Addr().String(), "build", s.opts.BuildVersion, "version", start.Version)
	if s.opts.OnListen != nil {
		s.opts.OnListen(pl.Addr(), al.Addr())
	}

	errc := make(chan error, 2)
	go func() {
		if proxy.TLSConfig != nil {
			errc <- proxy.ServeTLS(pl, "", "") // HTTP/2 is negotiated as well
			return
		}
		errc <- proxy.Serve(pl)
	}()
	go func() { errc <- admin.Serve(al) }()

	pending := make(chan struct{}, 1)
	stopReloads := make(chan struct{})
	reloaderDone := make(chan struct{})
	go s.reloader(pending, stopReloads, reloaderDone)

	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-reload:
			select {
			case pending <- struct{}{}:
			default: // one is pending already; it will read the newest files
			}
		case err := <-errc:
			serveErr = err
			break loop
		}
	}
	close(stopReloads)

	s.log.Info("shutting down: draining in-flight requests", "timeout", s.opts.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
	defer cancel()
	err = errors.Join(proxy.Shutdown(dctx), admin.Shutdown(dctx))
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(fmt.Errorf("serving: %w", serveErr), err)
	}
	grace := time.NewTimer(s.opts.ReloadGrace)
	defer grace.Stop()
	select {
	case <-reloaderDone:
	case <-grace.C:
		s.log.Warn("shutting down with a policy reload still running: it is abandoned", "waited", s.opts.ReloadGrace)
	}
	return err
}

// reloader runs the reloads asked for on pending, one at a time, until stop is closed.
func (s *Server) reloader(pending <-chan struct{}, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case <-pending:
		}
		select {
		case <-stop: // both were ready: shutting down wins
			return
		default:
		}
		_ = s.Reload()
	}
}

// tlsVersion maps the policy's min_version (validated) to crypto/tls's constant.
func tlsVersion(v string) uint16 {
	if v == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// Close releases the gateway's providers. A reload that finishes afterwards is discarded.
func (s *Server) Close() error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if sh := s.opts.Shadow; sh != nil {
		s.gw.SetShadow(nil)
		err = sh.Close()
	}
	return errors.Join(err, s.gw.Close())
}

// Status is the /status document.
type Status struct {
	// Version is the served policy's version; Build the binary's.
	Version         string    `json:"version"`
	Build           string    `json:"build,omitempty"`
	Source          string    `json:"source"`
	LoadedAt        time.Time `json:"loaded_at"`
	Consumers       int       `json:"consumers"`
	Routes          int       `json:"routes"`
	Reloads         int       `json:"reloads"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
	LastReloadErrAt time.Time `json:"last_reload_error_at,omitzero"`
	// Shadow is the candidate policy and how its decisions compared; nil without --shadow.
	Shadow *ShadowStatus `json:"shadow,omitempty"`
}

// Status reports the served policy and the last reload's outcome.
func (s *Server) Status() Status {
	snap := s.gw.Snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Version: snap.Version, Build: s.opts.BuildVersion, Source: snap.Source, LoadedAt: s.loadedAt,
		Consumers: snap.Consumers.Len(), Routes: len(snap.Policy.Routes), Reloads: s.reloadCount}
	if s.lastErr != nil {
		st.LastReloadError = s.lastErr.Error()
		st.LastReloadErrAt = s.lastErrAt
	}
	if sh := s.opts.Shadow; sh != nil {
		st.Shadow = sh.Status()
	}
	return st
}

// Readiness checks every provider that depends on something remote and the rate-limit store.
// It returns the problems by component; empty means ready.
func (s *Server) Readiness(ctx context.Context) map[string]string {
	problems := map[string]string{}
	for _, p := range s.gw.Snapshot().Providers {
		if r, ok := p.(idp.Readier); ok {
			if err := r.Ready(ctx); err != nil {
				problems["idp:"+p.Name()] = err.Error()
			}
		}
	}
	if err := s.opts.Limiters.Healthy(ctx); err != nil {
		problems["redis"] = err.Error()
	}
	return problems
}

// AdminHandler serves /healthz, /readyz, /metrics and /status.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		problems := s.Readiness(ctx)
		if len(problems) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
