package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "policy file or folder")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	accessLog := fs.Bool("access-log", true, "write one JSON line per request to stdout")
	watch := fs.Bool("watch", true, "reload the policy when its file or folder changes (SIGHUP always reloads)")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: portcullis run -c PATH")
		return exitError(2)
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	access := slog.New(slog.DiscardHandler)
	if *accessLog {
		access = slog.New(slog.NewJSONHandler(stdout, nil))
	}
	return serve(ctx, serveConfig{path: *path, logger: logger, access: access, noWatch: !*watch})
}

type serveConfig struct {
	path   string
	logger *slog.Logger
	access *slog.Logger
	// onListen is told the bound addresses.
	onListen func(proxy, admin net.Addr)
	// noWatch disables reloading on file changes.
	noWatch bool
}

// serve loads the policy, serves it, reloads it on SIGHUP and on file changes, and drains on
// ctx's end.
func serve(ctx context.Context, cfg serveConfig) error {
	metrics := gateway.NewMetrics()
	opts := policies.Options{Logger: cfg.logger, Context: ctx, Hooks: policies.Hooks{
		IdPCall: metrics.IdPCall, IdPCache: metrics.IdPCache,
	}}
	first, err := policies.Load(cfg.path, opts)
	if err != nil {
		return fmt.Errorf("loading policy %s:\n%w", cfg.path, err)
	}

	var rdb redis.UniversalClient
	if r := first.Policy.Redis; r != nil {
		rdb = newRedisClient(r)
		defer rdb.Close()
	}
	limiters := ratelimit.NewRegistry(ratelimit.RegistryOptions{
		Logger:          cfg.logger,
		Redis:           rdb,
		RedisTimeout:    redisTimeout(first.Policy.Redis),
		OnRedisCall:     metrics.RedisCall,
		OnBreakerChange: metrics.RedisBreaker,
	})
	defer limiters.Close()

	loads := 0
	srv, err := gateway.NewServer(gateway.ServerOptions{
		Logger:    cfg.logger,
		AccessLog: cfg.access,
		Limiters:  limiters,
		Metrics:   metrics,
		OnListen:  cfg.onListen,
		Load: func() (*policies.Snapshot, error) {
			loads++
			if loads == 1 {
				return first, nil
			}
			snap, err := policies.Load(cfg.path, opts)
			if err != nil {
				return nil, err
			}
			if !sameRedis(first.Policy.Redis, snap.Policy.Redis) {
				cfg.logger.Warn("the redis block changed; it takes effect at the next restart")
			}
			if snap.Policy.Listen != first.Policy.Listen || snap.Policy.AdminListen != first.Policy.AdminListen {
				cfg.logger.Warn("listen addresses changed; they take effect at the next restart")
			}
			return snap, nil
		},
	})
	if err != nil {
		_ = first.Close()
		return err
	}
	defer srv.Close()

	reload := make(chan struct{}, 1)
	poke := func() {
		select {
		case reload <- struct{}{}:
		default: // a reload is already pending; it will read the newest files
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				cfg.logger.Info("SIGHUP: reloading policy")
				poke()
			}
		}
	}()
	if !cfg.noWatch {
		w, err := policies.NewWatcher(cfg.path, cfg.logger, func() {
			cfg.logger.Info("policy changed on disk: reloading")
			poke()
		})
		if err != nil {
			cfg.logger.Warn("watching the policy failed; reload with SIGHUP", "err", err)
		} else {
			defer w.Close()
		}
	}
	return srv.Serve(ctx, reload)
}

func newRedisClient(r *policies.Redis) redis.UniversalClient {
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

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing -log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "policy file or folder")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: portcullis validate -c PATH")
		return exitError(2)
	}
	if err := policies.Validate(*path, policies.Options{}); err != nil {
		n := 0
		for _, e := range flatten(err) {
			fmt.Fprintln(stderr, e)
			n++
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, n)
		return exitError(1)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// flatten lists the leaves of a tree of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
