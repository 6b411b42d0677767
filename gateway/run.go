package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// RunConfig configures Run.
type RunConfig struct {
	// Path is the policy file or folder.
	Path string
	// Logger is the operational log; AccessLog gets one line per request.
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// Watch reloads the policy when its file or folder changes.
	Watch bool
	// Reload receives a value for every reload the operator asks for (SIGHUP). May be nil.
	Reload <-chan struct{}
	// OnListen is told the bound addresses.
	OnListen func(proxy, admin net.Addr)
	// MaxPolicySize caps each policy file, in bytes; 0 is policies.DefaultMaxFileSize.
	MaxPolicySize int64
	// BuildVersion is the binary's version (start-up log, /status, portcullis_build_info).
	BuildVersion string
	// ShadowPath, when set, is a candidate policy decided beside the served one (see Shadow),
	// reloaded on the same triggers.
	ShadowPath string
	// TracerProvider, when set, traces requests, the identity providers' calls to their IdPs
	// and the Redis commands made for them. The caller owns it (and flushes it at exit).
	TracerProvider trace.TracerProvider
}

// Run loads the policy, serves it, reloads it on request and on file changes, and drains
// in-flight requests when ctx ends. It is `portcullis run`.
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	metrics := NewMetrics()
	metrics.BuildInfo(cfg.BuildVersion)
	shared := &RedisSessions{}
	opts := policies.Options{Logger: cfg.Logger, Context: ctx, MaxFileSize: cfg.MaxPolicySize, Hooks: policies.Hooks{
		IdPCall: metrics.IdPCall, IdPCache: metrics.IdPCache,
	}, SessionRevocations: shared, SessionStore: shared}
	if cfg.TracerProvider != nil {
		opts.HTTPClient = TracedHTTPClient(cfg.TracerProvider, &http.Client{Timeout: 10 * time.Second}) // policies.Load's default client, traced
	}
	first, err := policies.Load(cfg.Path, opts)
	if err != nil {
		return fmt.Errorf("loading policy %s:\n%w", cfg.Path, err)
	}

	// The redis block is read once: the client is built now, and a reload that changes it
	// is warned about. Kept apart so that the closure below does not pin the first snapshot.
	startRedis := first.Policy.Redis
	var rdb redis.UniversalClient
	if r := startRedis; r != nil {
		rdb = NewRedisClient(r)
		defer rdb.Close()
		if cfg.TracerProvider != nil {
			TraceRedis(rdb, cfg.TracerProvider)
		}
		// Sessions and their logouts are shared through it (the client is closed after the server).
		shared.SetClient(rdb)
	}
	limiters := ratelimit.NewRegistry(ratelimit.RegistryOptions{
		Logger:          cfg.Logger,
		Redis:           rdb,
		RedisTimeout:    redisTimeout(startRedis),
		OnRedisCall:     metrics.RedisCall,
		OnBreakerChange: metrics.RedisBreaker,
		OnRoundTrip:     redisRoundTrips(cfg.TracerProvider),
	})
	defer limiters.Close()

	var shadow *Shadow
	if cfg.ShadowPath != "" {
		// No IdP hooks: the idp metrics are the served policy's.
		sopts := opts
		sopts.Hooks = policies.Hooks{}
		shadow = NewShadow(ShadowOptions{Logger: cfg.Logger, Metrics: metrics, Load: func() (*policies.Snapshot, error) {
			return policies.Load(cfg.ShadowPath, sopts)
		}})
	}
	srv, err := NewServer(ServerOptions{
		Shadow:         shadow,
		TracerProvider: cfg.TracerProvider,
		Logger:         cfg.Logger,
		AccessLog:      cfg.AccessLog,
		Limiters:       limiters,
		Metrics:        metrics,
		OnListen:       cfg.OnListen,
		BuildVersion:   cfg.BuildVersion,
		First:          first,
		Load: func() (*policies.Snapshot, error) {
			snap, err := policies.Load(cfg.Path, opts)
			if err != nil {
				return nil, err
			}
			if !sameRedis(startRedis, snap.Policy.Redis) {
				cfg.Logger.Warn("the redis block changed; it takes effect at the next restart")
			}
			return snap, nil
		},
	})
	if err != nil {
		if shadow != nil {
			_ = shadow.Close()
		}
		return err // NewServer closed first
	}
	defer srv.Close()

	reload := make(chan struct{}, 1)
	poke := func() {
		select {
		case reload <- struct{}{}:
		default: // a reload is already pending; it will read the newest files
		}
	}
	if cfg.Reload != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-cfg.Reload:
					poke()
				}
			}
		}()
	}
	if cfg.Watch {
		w, err := policies.NewWatcher(cfg.Path, cfg.Logger, func() {
			cfg.Logger.Info("policy changed on disk: reloading")
			poke()
		})
		if err != nil {
			cfg.Logger.Warn("watching the policy failed; reload with SIGHUP", "err", err)
		} else {
			defer w.Close()
		}
		if cfg.ShadowPath != "" {
			w, err := policies.NewWatcher(cfg.ShadowPath, cfg.Logger, func() {
				cfg.Logger.Info("shadow policy changed on disk: reloading")
				poke()
			})
			if err != nil {
				cfg.Logger.Warn("watching the shadow policy failed; reload with SIGHUP", "err", err)
			} else {
				defer w.Close()
			}
		}
	}
	return srv.Serve(ctx, reload)
}

// NewRedisClient builds the client of the redis rate-limit policy from the policy's redis block.
func NewRedisClient(r *policies.Redis) redis.UniversalClient {
	addrs := r.Addrs
	if len(addrs) == 0 && r.Addr != "" {
		addrs = []string{r.Addr}
	}
	o := &redis.UniversalOptions{
		Addrs:        addrs,
		Username:     r.Username,
		Password:     r.Password,
		DB:           r.DB,
		DialTimeout:  redisTimeout(r) * 5,
		ReadTimeout:  redisTimeout(r),
		WriteTimeout: redisTimeout(r),
		MaxRetries:   -1, // the breaker decides; a retry doubles the cost of a dead Redis
		// Without it go-redis ignores the per-call deadline on reads and a hung Redis holds each
		// request for the read timeout instead of the limiter's timeout.
		ContextTimeoutEnabled: true,
		PoolSize:              64,
	}
	if r.TLS {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if len(r.Addrs) > 1 {
		o.IsClusterMode = true
	}
	return redis.NewUniversalClient(o)
}

func redisTimeout(r *policies.Redis) time.Duration {
	if r == nil || r.Timeout == 0 {
		return 100 * time.Millisecond
	}
	return time.Duration(r.Timeout)
}

func sameRedis(a, b *policies.Redis) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Addr == b.Addr && strings.Join(a.Addrs, ",") == strings.Join(b.Addrs, ",") &&
		a.Username == b.Username && a.Password == b.Password && a.DB == b.DB && a.TLS == b.TLS
}

// redisRoundTrips is RedisRoundTrips, or nil without tracing.
func redisRoundTrips(tp trace.TracerProvider) func([]context.Context, int) func(error) {
	if tp == nil {
		return nil
	}
	return RedisRoundTrips(tp)
}
