package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// explainOptions are the flags of explain.
type explainOptions struct {
	path, body, remote string
	headers            repeated
	maxSize            byteSize
}

func (o *explainOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.path, "c", "", "the policy `PATH`: a JSON file, or a folder of them")
	fs.Var(&o.headers, "H", "a request header `\"Name: value\"`")
	fs.StringVar(&o.body, "d", "", "the request `BODY`")
	fs.StringVar(&o.remote, "remote-addr", "127.0.0.1:40000", "the client address `HOST:PORT` the request comes from")
	maxPolicySizeVar(fs, &o.maxSize)
}

// cmdExplain evaluates one request against a policy without proxying it and prints the trace.
// It exits 0 when the request would be forwarded and 1 when it would be denied.
func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o explainOptions
	fs, err := parseFlags("explain", o.define, args, stdout, stderr, 2)
	if err != nil {
		return err
	}
	if o.path == "" {
		return usageError("explain", stderr, "missing -c PATH")
	}
	req, err := explainRequest(ctx, fs.Arg(0), fs.Arg(1), o.headers, o.body)
	if err != nil {
		return err
	}
	req.RemoteAddr = o.remote

	snap, err := policies.Load(o.path, policies.Options{Context: ctx, MaxFileSize: int64(o.maxSize)})
	if err != nil {
		return fmt.Errorf("loading policy %s:\n%w", o.path, err)
	}
	limiters := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	defer limiters.Close()
	gw, err := gateway.New(snap, gateway.Options{Limiters: limiters, Metrics: gateway.NewMetrics()})
	if err != nil {
		_ = snap.Close()
		return err
	}
	defer gw.Close()

	e := gw.Explain(req)
	fmt.Fprintf(stdout, "%s %s (policy %s)\n", req.Method, req.URL.RequestURI(), snap.Version)
	for _, s := range e.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(stdout, "  %s %-12s %s\n", mark, s.Phase, s.Detail)
	}
	if e.Forwarded {
		fmt.Fprintln(stdout, "=> forwarded")
		return nil
	}
	fmt.Fprintf(stdout, "=> %d {\"message\":%q}\n", e.Status, e.Message)
	return exitError(1)
}

// explainRequest builds the request to explain. target is a full URL or a path.
func explainRequest(ctx context.Context, method, target string, headers []string, body string) (*http.Request, error) {
	if strings.HasPrefix(target, "/") {
		target = "http://localhost" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("parsing URL %q: want http://host/path or /path", target)
	}
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(method), u.String(), strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	for _, h := range headers {
		name, value, err := cutHeader("-H", h)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(name, "Host") {
			req.Host = value
			continue
		}
		req.Header.Add(name, value)
	}
	return req, nil
}
