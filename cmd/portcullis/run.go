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

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/policies"
)

// runOptions are the flags of run.
type runOptions struct {
	path, logLevel   string
	shadow           string
	accessLog, watch bool
	tracing          bool
	maxSize          byteSize
}

func (o *runOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.path, "c", "", "the policy `PATH`: a JSON file, or a folder of them")
	fs.StringVar(&o.logLevel, "log-level", "info", "`LEVEL` of the operational log: debug, info, warn, error")
	fs.BoolVar(&o.accessLog, "access-log", true, "write one JSON line per request to stdout")
	fs.StringVar(&o.shadow, "shadow", "", "a candidate policy `PATH` decided beside the served one, without side effects; differences are logged and counted")
	fs.BoolVar(&o.watch, "watch", true, "reload the policy when its file or folder changes (SIGHUP always reloads)")
	fs.BoolVar(&o.tracing, "tracing", false, "export OpenTelemetry traces by OTLP, configured by the standard OTEL_* variables (OTEL_TRACES_EXPORTER=otlp does the same)")
	maxPolicySizeVar(fs, &o.maxSize)
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o runOptions
	if _, err := parseFlags("run", o.define, args, stdout, stderr, 0); err != nil {
		return err
	}
	if o.path == "" {
		return usageError("run", stderr, "missing -c PATH")
	}
	logger, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	access := slog.New(slog.DiscardHandler)
	if o.accessLog {
		access = slog.New(slog.NewJSONHandler(stdout, nil))
	}
	tp, err := newTracerProvider(ctx, o.tracing, buildVersion(), os.Getenv)
	if err != nil {
		return fmt.Errorf("setting up tracing: %w", err)
	}
	cfg := serveConfig{path: o.path, logger: logger, access: access, noWatch: !o.watch, maxPolicySize: int64(o.maxSize), shadow: o.shadow}
	if tp != nil {
		otel.SetErrorHandler(otelErrors{log: logger})
		logger.Info("tracing on: exporting spans by otlp")
		defer func() {
			// The spans still buffered are sent before exit, within a bound: a collector that
			// is gone must not hold the shutdown.
			sctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				logger.Warn("flushing traces at exit", "err", err)
			}
		}()
		cfg.tracerProvider = tp
	}
	return serve(ctx, cfg)
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
	// shadow is the candidate policy's path; "" for none.
	shadow string
	// tracerProvider traces requests; nil when tracing is off.
	tracerProvider trace.TracerProvider
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
		BuildVersion: buildVersion(), ShadowPath: cfg.shadow, TracerProvider: cfg.tracerProvider,
	})
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing -log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// validateOptions are the flags of validate.
type validateOptions struct {
	path    string
	maxSize byteSize
}

func (o *validateOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.path, "c", "", "the policy `PATH`, when it is not given as the argument")
	maxPolicySizeVar(fs, &o.maxSize)
}

// cmdValidate checks the policy named by -c or by its one argument.
func cmdValidate(args []string, stdout, stderr io.Writer) error {
	var o validateOptions
	fs, err := parseFlags("validate", o.define, args, stdout, stderr, -1)
	if err != nil {
		return err
	}
	path := o.path
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path == "" && fs.NArg() == 0:
		return usageError("validate", stderr, "missing the policy PATH")
	case fs.NArg() > 0:
		return usageError("validate", stderr, "unexpected argument %q", fs.Arg(0))
	}
	warnings, err := policies.Check(path, policies.Options{MaxFileSize: int64(o.maxSize)})
	if err != nil {
		n := 0
		for _, e := range flatten(err) {
			fmt.Fprintln(stderr, e)
			n++
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, n)
		return exitError(1)
	}
	// Warnings do not fail validation: the policy loads as written.
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if len(warnings) > 0 {
		fmt.Fprintf(stdout, "%s: ok, %d warning(s)\n", path, len(warnings))
		return nil
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
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
