package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis/portcullis/examples"
)

// demoOptions are the flags of demo.
type demoOptions struct{ upstream, policy string }

func (o *demoOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.upstream, "upstream", "127.0.0.1:9100", "`HOST:PORT` of the demo petstore upstream")
	fs.StringVar(&o.policy, "c", "", "the policy `PATH` to serve instead of examples/petstore.json")
}

// cmdDemo runs the petstore scenario: a small upstream on 127.0.0.1:9100 and the gateway with
// examples/petstore.json (from the working directory when present, so that edits hot-reload;
// otherwise the copy built into the binary).
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o demoOptions
	if _, err := parseFlags("demo", o.define, args, stdout, stderr, 0); err != nil {
		return err
	}
	upstreamAddr := &o.upstream
	path := o.policy
	if path == "" {
		path = filepath.Join("examples", "petstore.json")
		if _, err := os.Stat(path); err != nil {
			dir, err := os.MkdirTemp("", "portcullis-demo-")
			if err != nil {
				return fmt.Errorf("creating demo folder: %w", err)
			}
			defer os.RemoveAll(dir)
			b, err := examples.Files.ReadFile("petstore.json")
			if err != nil {
				return fmt.Errorf("reading built-in example: %w", err)
			}
			path = filepath.Join(dir, "petstore.json")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				return fmt.Errorf("writing demo policy: %w", err)
			}
		}
	}

	ln, err := net.Listen("tcp", *upstreamAddr)
	if err != nil {
		return fmt.Errorf("starting the demo upstream on %s: %w", *upstreamAddr, err)
	}
	up := &http.Server{Handler: petstore(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = up.Serve(ln) }()
	defer up.Close()

	logger, err := newLogger(stderr, "info")
	if err != nil {
		return err
	}
	return serve(ctx, serveConfig{
		path: path, logger: logger, access: logger.With("log", "access"),
		onListen: func(proxy, admin net.Addr) {
			fmt.Fprintf(stdout, demoText, path, ln.Addr(), proxy, admin, proxy, proxy, proxy, proxy, admin, admin)
		},
	})
}

const demoText = `
Portcullis demo: the petstore scenario
  policy:   %s (edit it: the gateway reloads it)
  upstream: http://%s (a small built-in petstore)
  gateway:  http://%s   admin: http://%s

Try:
  curl -i http://%s/petstore                          # 401 Missing API key
  curl -i -H 'apikey: john-key' http://%s/petstore    # 200 as JohnDoe, never limited
  curl -i -H 'apikey: bot-key'  http://%s/petstore    # 200, 200, then 429 within 5 s (FetchBot)
  curl -i -H 'apikey: wrong'    http://%s/petstore    # 401 Invalid API key
  curl -s http://%s/status ; curl -s http://%s/metrics | grep portcullis_

Ctrl-C stops it.
`

// petstore is the demo upstream: it lists pets and says who the gateway said is calling.
func petstore() http.Handler {
	pets := []map[string]any{{"id": 1, "name": "Rex", "tag": "dog"}, {"id": 2, "name": "Tom", "tag": "cat"}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"path":     r.URL.Path,
			"consumer": r.Header.Get("X-Consumer-Username"),
			"pets":     pets,
		})
	})
	return mux
}
