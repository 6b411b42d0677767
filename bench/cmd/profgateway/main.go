// Command profgateway serves a policy the way `portcullis run -access-log=false -watch=false`
// does, with net/http/pprof on a separate listener: the gateway binary has no pprof endpoint,
// and the benchmark must not change gateway code to profile it. Only the bench harness's
// profile mode runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "profgateway:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("c", "", "policy file")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "listen address of /debug/pprof/")
	flag.Parse()
	if *path == "" {
		return errors.New("usage: profgateway -c POLICY [-pprof ADDR]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// As cmd/portcullis's serve builds it.
	metrics := gateway.NewMetrics()
	opts := policies.Options{Logger: logger, Context: ctx, Hooks: policies.Hooks{
		IdPCall: metrics.IdPCall, IdPCache: metrics.IdPCache,
	}}
	snap, err := policies.Load(*path, opts)
	if err != nil {
		return fmt.Errorf("loading policy: %w", err)
	}
	var rdb redis.UniversalClient
	timeout := 100 * time.Millisecond
	if r := snap.Policy.Redis; r != nil {
		if r.Timeout != 0 {
			timeout = time.Duration(r.Timeout)
		}
		rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: []string{r.Addr}, DialTimeout: 5 * timeout, ReadTimeout: timeout, WriteTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, PoolSize: 64,
		})
		defer rdb.Close()
	}
	limiters := ratelimit.NewRegistry(ratelimit.RegistryOptions{
		Logger: logger, Redis: rdb, RedisTimeout: timeout,
		OnRedisCall: metrics.RedisCall, OnBreakerChange: metrics.RedisBreaker,
	})
	defer limiters.Close()
	srv, err := gateway.NewServer(gateway.ServerOptions{
		Logger:    logger,
		AccessLog: slog.New(slog.DiscardHandler),
		Limiters:  limiters,
		Metrics:   metrics,
		Load:      func() (*policies.Snapshot, error) { return snap, nil },
	})
	if err != nil {
		_ = snap.Close()
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return fmt.Errorf("listening for pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	ps := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go ps.Serve(ln)
	defer ps.Close()

	return srv.Serve(ctx, nil) // no reloads
}
