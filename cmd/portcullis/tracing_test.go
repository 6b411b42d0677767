package main

import (
	"errors"
	"strings"
	"testing"
)

// TestNewTracerProvider: which switch turns tracing on, and which environment is refused.
func TestNewTracerProvider(t *testing.T) {
	tests := []struct {
		name    string
		flag    bool
		env     map[string]string
		on      bool
		wantErr string
	}{
		{name: "off by default", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "the flag", flag: true, on: true},
		{name: "OTEL_TRACES_EXPORTER=otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{name: "grpc", flag: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true},
		{name: "traces protocol wins", flag: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, on: true},
		{name: "none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{name: "sdk disabled beats the flag", flag: true, env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		{name: "none with the flag", flag: true, env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, wantErr: "OTEL_TRACES_EXPORTER=none"},
		{name: "an exporter we lack", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: `OTEL_TRACES_EXPORTER="zipkin"`},
		{name: "a protocol we lack", flag: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: `OTEL_EXPORTER_OTLP_PROTOCOL="http/json"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := newTracerProvider(t.Context(), tt.flag, "test", func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
				}
				if strings.Contains(tt.name, "none with") && !errors.Is(err, errTracingConflict) {
					t.Errorf("got %v, want errTracingConflict", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tp != nil; got != tt.on {
				t.Fatalf("tracing on %v, want %v", got, tt.on)
			}
			if tp != nil {
				if err := tp.Shutdown(t.Context()); err != nil {
					t.Errorf("shutting down: %v", err)
				}
			}
		})
	}
}
