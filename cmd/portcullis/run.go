package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/policies"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "policy file or folder")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	accessLog := fs.Bool("access-log", true, "write one JSON line per request to stdout")
	watch := fs.Bool("watch", true, "reload the policy when its file or folder changes (SIGHUP always reloads)")
	maxSize := maxPolicySizeFlag(fs)
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
	return serve(ctx, serveConfig{path: *path, logger: logger, access: access, noWatch: !*watch, maxPolicySize: int64(*maxSize)})
}

type serveConfig struct {
	path   string
	logger *slog.Logger
	access *slog.Logger
	// onListen is told the bound addresses.
	onListen func(proxy, admin net.Addr)
	// noWatch disables reloading on file changes.
	noWatch bool
	// maxPolicySize caps each policy file; 0 is the default.
	maxPolicySize int64
}

// serve runs the gateway on cfg.path; SIGHUP asks it to reload.
func serve(ctx context.Context, cfg serveConfig) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				cfg.logger.Info("SIGHUP: reloading policy")
				select {
				case reload <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return gateway.Run(ctx, gateway.RunConfig{
		Path: cfg.path, Logger: cfg.logger, AccessLog: cfg.access,
		Watch: !cfg.noWatch, Reload: reload, OnListen: cfg.onListen, MaxPolicySize: cfg.maxPolicySize,
		BuildVersion: buildVersion(),
	})
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
	maxSize := maxPolicySizeFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: portcullis validate -c PATH")
		return exitError(2)
	}
	warnings, err := policies.Check(*path, policies.Options{MaxFileSize: int64(*maxSize)})
	if err != nil {
		n := 0
		for _, e := range flatten(err) {
			fmt.Fprintln(stderr, e)
			n++
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, n)
		return exitError(1)
	}
	// Warnings do not fail validation: the policy loads as written.
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if len(warnings) > 0 {
		fmt.Fprintf(stdout, "%s: ok, %d warning(s)\n", *path, len(warnings))
		return nil
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
