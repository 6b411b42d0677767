package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// Tracing is off unless asked for, by `run -tracing` or by OTEL_TRACES_EXPORTER=otlp (the
// standard variable, for deployments that configure every service through OTEL_*). Everything
// else is the standard OTEL_* variables, read by the SDK and the exporters themselves:
// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _PROTOCOL, _HEADERS, _TIMEOUT, _COMPRESSION,
// _CERTIFICATE, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and _ARG,
// OTEL_BSP_*. A policy setting was not chosen: the exporter is built once at start (as the
// redis client is), and where traces go, with the backend's credentials in
// OTEL_EXPORTER_OTLP_HEADERS, belongs to the deployment, not to the reviewed policy.

// errTracingConflict is `-tracing` with OTEL_TRACES_EXPORTER=none: the operator asked for both.
var errTracingConflict = errors.New("-tracing asks for traces and OTEL_TRACES_EXPORTER=none for none")

// tracingShutdownTimeout bounds the flush of the spans still buffered at exit.
const tracingShutdownTimeout = 5 * time.Second

// newTracerProvider returns the tracer provider that tracing asks for, or nil when tracing is
// off. flag is `run -tracing`; getenv reads the environment.
func newTracerProvider(ctx context.Context, flag bool, version string, getenv func(string) string) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "":
		if !flag {
			return nil, nil
		}
	case "otlp":
	case "none":
		if flag {
			return nil, errTracingConflict
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: portcullis exports traces by otlp only (or none)", exp)
	}
	exporter, err := newExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	// The default service name first: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("portcullis"), semconv.ServiceVersion(version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exporter.Shutdown(ctx)
		return nil, fmt.Errorf("reading the tracing resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	// The sampler is the SDK's default, parent-based always-on, unless OTEL_TRACES_SAMPLER says
	// otherwise; the batcher reads OTEL_BSP_*.
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)), nil
}

// newExporter builds the OTLP exporter of OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL: http/protobuf
// by default, as the specification says, or grpc.
func newExporter(ctx context.Context, getenv func(string) string) (*otlptrace.Exporter, error) {
	proto := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		proto = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	var exp *otlptrace.Exporter
	var err error
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: portcullis exports http/protobuf or grpc", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("building the otlp %s exporter: %w", proto, err)
	}
	return exp, nil
}

// otelErrors sends the SDK's own complaints (an export that failed) to the operational log,
// rather than to the standard logger's plain lines on stderr. The handler is the SDK's one
// global; main owns it.
type otelErrors struct{ log *slog.Logger }

func (h otelErrors) Handle(err error) { h.log.Warn("tracing", "err", err) }

var _ otel.ErrorHandler = otelErrors{}
