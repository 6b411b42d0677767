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

	"github.com/portcullis/portcullis/gateway"
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

	ln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return fmt.Errorf("listening for pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ps := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go ps.Serve(ln)
	defer ps.Close()

	// As `portcullis run -access-log=false -watch=false` runs it.
	return gateway.Run(ctx, gateway.RunConfig{Path: *path, Logger: logger, AccessLog: slog.New(slog.DiscardHandler)})
}
