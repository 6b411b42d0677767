package main

import (
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/portcullis/portcullis/gateway"
	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
	"github.com/portcullis/portcullis/policies"
)

// testOptions are the flags of test.
type testOptions struct {
	path, format string
	maxSize      byteSize
}

func (o *testOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.path, "c", "", "the policy `PATH`: a JSON file, or a folder of them")
	fs.StringVar(&o.format, "format", "text", "the report `FORMAT`: text, or junit (JUnit XML on stdout)")
	maxPolicySizeVar(fs, &o.maxSize)
}

// caseResult is the outcome of one case.
type caseResult struct {
	tc *testCase
	// problems are what differs from the expectation, each "field: got X, want Y"; none when
	// the case passed.
	problems []string
	// trace is the decision's explain trace, for a failing case.
	trace []string
	took  time.Duration
}

// fileResult is the outcome of one test file: its cases, or the error that kept it from running.
type fileResult struct {
	name  string
	err   error
	cases []*caseResult
}

// cmdTest runs the cases of the test files against the policy.
func cmdTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o testOptions
	fs, err := parseFlags("test", o.define, args, stdout, stderr, -1)
	if err != nil {
		return err
	}
	switch {
	case o.path == "":
		return usageError("test", stderr, "missing -c PATH")
	case fs.NArg() == 0:
		return usageError("test", stderr, "missing the test FILE")
	case o.format != "text" && o.format != "junit":
		return usageError("test", stderr, "-format: got %q, want text or junit", o.format)
	}
	// Load once up front: a policy that does not load is one error, not one per case.
	snap, err := loadTestPolicy(ctx, o, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError(1)
	}
	_ = snap.Close()
	var results []*fileResult
	for _, name := range fs.Args() {
		results = append(results, runTestFile(ctx, o, name))
	}
	passed, failed, broken := 0, 0, 0
	for _, fr := range results {
		if fr.err != nil {
			broken++
			continue
		}
		for _, cr := range fr.cases {
			if len(cr.problems) == 0 {
				passed++
			} else {
				failed++
			}
		}
	}
	if o.format == "junit" {
		if err := writeJUnit(stdout, results); err != nil {
			return err
		}
		for _, fr := range results {
			if fr.err != nil {
				writeFileError(stderr, fr)
			}
		}
	} else {
		writeTextReport(stdout, stderr, results)
	}
	summary := fmt.Sprintf("%d passed, %d failed", passed, failed)
	if broken > 0 {
		summary += fmt.Sprintf(", %d file(s) with errors", broken)
	}
	if o.format == "junit" {
		fmt.Fprintln(stderr, summary)
	} else {
		fmt.Fprintln(stdout, summary)
	}
	if failed > 0 || broken > 0 {
		return exitError(1)
	}
	return nil
}

// offlineTransport refuses every call to an identity provider: `portcullis test` never uses
// the network. OIDC and Keycloak providers, which need their issuer, cannot decide then.
type offlineTransport struct{}

func (offlineTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("portcullis test runs offline: not calling %s %s", r.Method, r.URL.Redacted())
}

// loadTestPolicy loads the policy for one case (each case gets its own gateway, so that its
// limits start fresh), offline.
// With the file's issuer key (ti), the oidc and keycloak providers find it in their issuers'
// JWKS, answered in process.
func loadTestPolicy(ctx context.Context, o testOptions, ti *testIssuer) (*policies.Snapshot, error) {
	var rt http.RoundTripper = offlineTransport{}
	if ti != nil {
		rt = ti
	}
	snap, err := policies.Load(o.path, policies.Options{MaxFileSize: int64(o.maxSize), Context: ctx,
		HTTPClient: &http.Client{Transport: rt}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("loading policy %s:\n%w", o.path, err)
	}
	return snap, nil
}

// runTestFile reads a test file and runs its cases.
func runTestFile(ctx context.Context, o testOptions, name string) *fileResult {
	fr := &fileResult{name: name}
	tf, err := readTestFile(name, os.LookupEnv)
	if err != nil {
		fr.err = err
		return fr
	}
	ti, err := newTestIssuer(tf.IssuerKey)
	if err != nil {
		fr.err = fmt.Errorf("%s: %w", name, err)
		return fr
	}
	for i := range tf.Tests {
		start := time.Now()
		cr, err := runCase(ctx, o, &tf.Tests[i], ti)
		if err != nil {
			cr = &caseResult{tc: &tf.Tests[i], problems: []string{err.Error()}}
		}
		cr.took = time.Since(start)
		fr.cases = append(fr.cases, cr)
	}
	return fr
}

// runCase decides the case's request on a fresh gateway and limiter registry, after `after`
// identical requests, exactly as serving decides it (Consume: the limits are spent), and
// compares the decision with the expectation. Its trace is the one the deciding call recorded
// (Mode.Trace: what explain prints), so that it shows the limits as they were spent.
func runCase(ctx context.Context, o testOptions, tc *testCase, ti *testIssuer) (*caseResult, error) {
	snap, err := loadTestPolicy(ctx, o, ti)
	if err != nil {
		return nil, err
	}
	// The limits' clock stands still: the earlier requests and the case are decided at one
	// instant, so that a window ending between them never makes a case flaky.
	now := time.Now()
	limiters := ratelimit.NewRegistry(ratelimit.RegistryOptions{Now: func() time.Time { return now }, SweepInterval: -1})
	defer limiters.Close()
	gw, err := gateway.New(snap, gateway.Options{Limiters: limiters, Metrics: gateway.NewMetrics()})
	if err != nil {
		_ = snap.Close()
		return nil, err
	}
	defer gw.Close()

	for range tc.After {
		r, err := caseRequest(ctx, snap, &tc.Request, ti)
		if err != nil {
			return nil, err
		}
		gw.Decide(r, gateway.Mode{Consume: true})
	}
	r, err := caseRequest(ctx, snap, &tc.Request, ti)
	if err != nil {
		return nil, err
	}
	uri := r.URL.RequestURI()
	trace := &gateway.Explanation{}
	d := gw.Decide(r, gateway.Mode{Consume: true, Trace: trace})

	cr := &caseResult{tc: tc}
	if errors.Is(d.Err, idp.ErrUnavailable) {
		if names := onlineProviders(snap); len(names) > 0 {
			cr.problems = append(cr.problems, fmt.Sprintf("not supported offline yet: %s would have to ask its issuer (portcullis test never calls the network)",
				strings.Join(names, ", ")))
		}
	}
	status := http.StatusOK
	header := d.Header.Clone()
	if ref := d.Refusal(); ref != nil {
		status = ref.Status
		for k, vs := range ref.Header {
			header[k] = append(header[k], vs...)
		}
	}
	want := &tc.Expect
	if status != want.Status {
		cr.problems = append(cr.problems, fmt.Sprintf("status: got %d, want %d", status, want.Status))
	}
	if want.Consumer != nil && d.Consumer != *want.Consumer {
		cr.problems = append(cr.problems, fmt.Sprintf("consumer: got %q, want %q", d.Consumer, *want.Consumer))
	}
	if want.Route != nil && d.Route != *want.Route {
		cr.problems = append(cr.problems, fmt.Sprintf("route: got %q, want %q", d.Route, *want.Route))
	}
	if want.Step != "" && string(d.Step) != want.Step {
		cr.problems = append(cr.problems, fmt.Sprintf("step: got %s, want %s", d.Step, want.Step))
	}
	names := make([]string, 0, len(want.Headers))
	for k := range want.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if got := header.Get(k); got != want.Headers[k] {
			cr.problems = append(cr.problems, fmt.Sprintf("header %s: got %q, want %q", http.CanonicalHeaderKey(k), got, want.Headers[k]))
		}
	}
	if len(cr.problems) > 0 {
		cr.trace = traceLines(r.Method, uri, tc.After, snap.Version, trace, d, status)
	}
	return cr, nil
}

// onlineProviders names the policy's providers that need their issuer to decide.
func onlineProviders(snap *policies.Snapshot) []string {
	var out []string
	for _, p := range snap.Providers {
		if t := p.Type(); t == "oidc" || t == "keycloak" {
			out = append(out, fmt.Sprintf("idp %q (%s)", p.Name(), t))
		}
	}
	return out
}

// traceLines is the explain trace of the decision, as `portcullis explain` prints it.
func traceLines(method, uri string, after int, version string, e *gateway.Explanation, d *gateway.Decision, status int) []string {
	head := fmt.Sprintf("%s %s (policy %s)", method, uri, version)
	if after > 0 {
		head = fmt.Sprintf("%s %s after %d identical request(s) (policy %s)", method, uri, after, version)
	}
	out := []string{head}
	for _, s := range e.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		out = append(out, fmt.Sprintf("  %s %-12s %s", mark, s.Phase, s.Detail))
	}
	if ref := d.Refusal(); ref != nil {
		out = append(out, fmt.Sprintf("=> %d {\"message\":%q}", status, ref.Message))
	} else {
		out = append(out, fmt.Sprintf("=> allowed (%d; the upstream is not called)", status))
	}
	return out
}

// caseRequest builds the request of a case, with its credentials written as the sign and token
// helpers write them.
func caseRequest(ctx context.Context, snap *policies.Snapshot, tr *testRequest, ti *testIssuer) (*http.Request, error) {
	method := tr.Method
	if method == "" {
		method = http.MethodGet
	}
	var headers []string
	for k, v := range tr.Headers {
		headers = append(headers, k+": "+v)
	}
	slices.Sort(headers)
	r, err := explainRequest(ctx, method, tr.URL, headers, tr.Body)
	if err != nil {
		return nil, err
	}
	if r.RemoteAddr, err = remoteAddr(tr.RemoteAddr); err != nil {
		return nil, err
	}
	if tr.APIKey != "" {
		if err := setAPIKey(snap, r, tr.APIKey); err != nil {
			return nil, err
		}
	}
	if b := tr.Basic; b != nil {
		r.SetBasicAuth(b.User, b.Password)
	}
	if t := tr.OIDC; t != nil {
		name, value, err := ti.token(snap, t.IdP, t.Claims)
		if err != nil {
			return nil, err
		}
		r.Header.Set(name, value)
	}
	if j := tr.JWT; j != nil {
		tok, err := signTestJWT(j.Claims, j.Secret, j.PrivateKey, j.Algorithm)
		if err != nil {
			return nil, err
		}
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	if h := tr.HMAC; h != nil {
		date := time.Now().UTC().Format(http.TimeFormat)
		if r.Header.Get("Date") == "" {
			r.Header.Set("Date", date)
		}
		sh := r.Header.Clone()
		sh.Set("Host", r.Host)
		in := local.SignInput{KeyID: h.KeyID, Secret: h.Secret, Algorithm: h.Algorithm, Method: r.Method,
			Target: r.URL.RequestURI(), Header: sh, Headers: h.Headers}
		if in.Algorithm == "" {
			in.Algorithm = "hmac-sha256"
		}
		// Always a Digest, of the empty body too: a provider that validates bodies wants one.
		in.Body = []byte(tr.Body)
		out, err := local.SignHMAC(in)
		if err != nil {
			return nil, fmt.Errorf("signing the request: %w", err)
		}
		if out.Digest != "" {
			r.Header.Set("Digest", out.Digest)
		}
		r.Header.Set("Authorization", out.Authorization)
	}
	return r, nil
}

// remoteAddr is a case's client address as HOST:PORT; "" is 127.0.0.1:40000.
func remoteAddr(s string) (string, error) {
	if s == "" {
		return "127.0.0.1:40000", nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	if net.ParseIP(strings.Trim(s, "[]")) == nil {
		return "", fmt.Errorf("got %q, want an IP address or HOST:PORT", s)
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "40000"), nil
}

// setAPIKey puts key in the header the policy's first key-auth provider reads (apikey unless
// it names another).
func setAPIKey(snap *policies.Snapshot, r *http.Request, key string) error {
	for _, p := range snap.Policy.IdPs {
		if p.Type == "key-auth" {
			name := p.Header
			if name == "" {
				name = "apikey"
			}
			r.Header.Set(name, key)
			return nil
		}
	}
	return errors.New("the request has an apikey but the policy has no key-auth provider")
}

// signTestJWT signs claims as `portcullis token` does: with an HMAC secret (HS256 by default)
// or a PEM private key (its type's usual algorithm by default). iat is now and exp an hour
// later unless the claims set them.
func signTestJWT(claims map[string]any, secret, privateKey, alg string) (string, error) {
	var key any
	if secret != "" {
		key = []byte(secret)
		if alg == "" {
			alg = "HS256"
		}
	} else {
		k, err := jwk.ParseKey([]byte(privateKey), jwk.WithPEM(true))
		if err != nil {
			return "", fmt.Errorf("parsing the jwt private_key: %w", err)
		}
		if private, err := jwk.IsPrivateKey(k); err != nil || !private {
			return "", errors.New("parsing the jwt private_key: the PEM holds no private key")
		}
		if alg == "" {
			if alg, err = defaultAlgorithm(k); err != nil {
				return "", err
			}
		}
		key = k
	}
	tok := jwt.New()
	now := time.Now()
	claims = maps.Clone(claims)
	if claims[jwt.IssuedAtKey] == nil {
		claims[jwt.IssuedAtKey] = now.Unix()
	}
	if claims[jwt.ExpirationKey] == nil {
		claims[jwt.ExpirationKey] = now.Add(time.Hour).Unix()
	}
	names := make([]string, 0, len(claims))
	for k := range claims {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := tok.Set(k, claims[k]); err != nil {
			return "", fmt.Errorf("setting claim %q: %w", k, err)
		}
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(alg), key))
	if err != nil {
		return "", fmt.Errorf("signing the jwt with %s: %w", alg, err)
	}
	return string(signed), nil
}

// writeTextReport prints each failing case with its differences and trace, and each file that
// could not run.
func writeTextReport(stdout, stderr io.Writer, results []*fileResult) {
	for _, fr := range results {
		if fr.err != nil {
			writeFileError(stderr, fr)
			continue
		}
		for _, cr := range fr.cases {
			if len(cr.problems) == 0 {
				continue
			}
			fmt.Fprintf(stdout, "FAIL %s:%d %q: %s\n", fr.name, cr.tc.line, cr.tc.Name, strings.Join(cr.problems, "; "))
			for _, l := range cr.trace {
				fmt.Fprintf(stdout, "    %s\n", l)
			}
		}
	}
}

func writeFileError(w io.Writer, fr *fileResult) {
	for _, e := range flatten(fr.err) {
		fmt.Fprintln(w, e)
	}
}

// The JUnit XML report, as Jenkins, GitLab and GitHub test reporters read it: a testsuite per
// file, a testcase per case, a failure per failing case and an error for a file that could not
// be read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitProblem `xml:"failure,omitempty"`
	Error     *junitProblem `xml:"error,omitempty"`
}

type junitProblem struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",cdata"`
}

func writeJUnit(w io.Writer, results []*fileResult) error {
	var out junitSuites
	for _, fr := range results {
		s := junitSuite{Name: fr.name}
		var took time.Duration
		if fr.err != nil {
			var lines []string
			for _, e := range flatten(fr.err) {
				lines = append(lines, e.Error())
			}
			s.Tests, s.Errors = 1, 1
			s.Cases = append(s.Cases, junitCase{Name: "(test file)", Classname: fr.name, Time: "0",
				Error: &junitProblem{Message: "the test file could not be read", Type: "file", Text: strings.Join(lines, "\n")}})
		}
		for _, cr := range fr.cases {
			took += cr.took
			c := junitCase{Name: cr.tc.Name, Classname: fr.name, Time: seconds(cr.took)}
			if len(cr.problems) > 0 {
				s.Failures++
				c.Failure = &junitProblem{Message: strings.Join(cr.problems, "; "), Type: "decision",
					Text: fmt.Sprintf("%s:%d\n%s", fr.name, cr.tc.line, strings.Join(cr.trace, "\n"))}
			}
			s.Tests++
			s.Cases = append(s.Cases, c)
		}
		s.Time = seconds(took)
		out.Tests += s.Tests
		out.Failures += s.Failures
		out.Errors += s.Errors
		out.Suites = append(out.Suites, s)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
