package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSink is the OTLP/HTTP traces receiver of the tracing contestant (pc-key-tracing): it
// runs in the harness, on the load CPU, and decodes every export as a collector would, counting
// the spans, so that the contestant pays for encoding and sending its spans as it would in
// production, and the report can tell that they arrived.
type otlpSink struct {
	url     string
	srv     *http.Server
	exports atomic.Int64
	spans   atomic.Int64
	refused atomic.Int64
}

func newOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the otlp receiver: %w", err)
	}
	s := &otlpSink{url: "http://" + ln.Addr().String()}
	ok, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(raw, &req)
		}
		if err != nil {
			s.refused.Add(1)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n := 0
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				n += len(ss.GetSpans())
			}
		}
		s.exports.Add(1)
		s.spans.Add(int64(n))
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(ok)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// note says what the receiver got, for the report.
func (s *otlpSink) note() string {
	return fmt.Sprintf("exporting by OTLP/HTTP to the harness's receiver, which decoded %d spans in %d exports (%d refused) over all of the tracing contestants' runs and legs.",
		s.spans.Load(), s.exports.Load(), s.refused.Load())
}

// Close stops the receiver.
func (s *otlpSink) Close() error { return s.srv.Close() }
