package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the portcullis binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "portcullis-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: creating temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", binary, "../cmd/portcullis")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building portcullis:", err)
		return 1
	}
	code := m.Run()
	stopSharedFixtures()
	return code
}

// stopSharedFixtures is extended by files that start fixtures shared by several tests.
var sharedFixtureStops []func()

func stopSharedFixtures() {
	for i := len(sharedFixtureStops) - 1; i >= 0; i-- {
		sharedFixtureStops[i]()
	}
}

// gatewayProc is a running portcullis binary.
type gatewayProc struct {
	t          *testing.T
	cmd        *exec.Cmd
	PolicyPath string
	URL        string // http://proxy-addr
	AdminURL   string
	stdout     *lockedBuffer
	stderr     *lockedBuffer
	exited     chan struct{}
	exitErr    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startGateway writes policy to a temp file and runs `portcullis run -c` on it. The policy
// should listen on 127.0.0.1:0; the bound addresses are read from the start-up log line.
func startGateway(t *testing.T, policy string, env ...string) *gatewayProc {
	t.Helper()
	return startGatewayArgs(t, policy, nil, env...)
}

// startGatewayArgs is startGateway with extra arguments to `portcullis run`.
func startGatewayArgs(t *testing.T, policy string, args []string, env ...string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatalf("writing policy: %v", err)
	}
	return startGatewayPath(t, path, args, env...)
}

// startGatewayPath runs the binary on an existing policy file or folder.
func startGatewayPath(t *testing.T, path string, args []string, env ...string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{t: t, PolicyPath: path, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	g.cmd = exec.Command(binary, append([]string{"run", "-c", path}, args...)...)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout = g.stdout
	pr, pw := io.Pipe()
	g.cmd.Stderr = io.MultiWriter(g.stderr, pw)
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting portcullis: %v", err)
	}
	go func() {
		g.exitErr = g.cmd.Wait()
		pw.Close()
		close(g.exited)
	}()
	t.Cleanup(g.stop)

	type listening struct {
		Msg   string `json:"msg"`
		Proxy string `json:"proxy"`
		Admin string `json:"admin"`
	}
	addrs := make(chan listening, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var l listening
			if !sent && json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "portcullis listening" {
				addrs <- l
				sent = true
			}
		}
	}()
	select {
	case l := <-addrs:
		g.URL, g.AdminURL = "http://"+l.Proxy, "http://"+l.Admin
	case <-g.exited:
		t.Fatalf("portcullis exited before listening: %v\nstderr:\n%s", g.exitErr, g.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("portcullis did not start listening within 60s\nstderr:\n%s", g.stderr)
	}
	return g
}

// stop sends SIGTERM and waits for a graceful exit.
func (g *gatewayProc) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
		g.t.Errorf("portcullis did not exit within 30s of SIGTERM")
	}
}

// reloadSignal sends SIGHUP.
func (g *gatewayProc) reloadSignal() {
	g.t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		g.t.Fatalf("sending SIGHUP: %v", err)
	}
}

// status fetches /status.
func (g *gatewayProc) status() map[string]any {
	g.t.Helper()
	resp, err := http.Get(g.AdminURL + "/status")
	if err != nil {
		g.t.Fatalf("GET /status: %v", err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		g.t.Fatalf("decoding /status: %v", err)
	}
	return st
}

// waitStatus polls /status until cond holds (a reload is asynchronous: a file event or a
// signal). It fails the test after a generous bound.
func (g *gatewayProc) waitStatus(what string, cond func(map[string]any) bool) map[string]any {
	g.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := g.status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("waiting for %s: last /status %v\nstderr:\n%s", what, st, g.stderr)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a readiness check
	}
}

// metric returns the sum of a Prometheus metric's samples whose labels contain all of match.
func (g *gatewayProc) metric(name string, match ...string) float64 {
	g.t.Helper()
	resp, err := http.Get(g.AdminURL + "/metrics")
	if err != nil {
		g.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		ok := true
		for _, m := range match {
			if !strings.Contains(rest, m) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		fields := strings.Fields(line)
		fmt.Sscan(fields[len(fields)-1], &v)
		sum += v
	}
	return sum
}

// upstream is a real HTTP upstream that records what it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"consumer":%q}`, r.URL.Path, r.Header.Get("X-Consumer-Username"))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// response is a read response.
type response struct {
	Status int
	Header http.Header
	Body   string
}

// do sends a request through the gateway.
func do(t *testing.T, method, url string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	for k, v := range header {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// message decodes {"message": ...}.
func (r response) message() string {
	var m struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal([]byte(r.Body), &m)
	return m.Message
}

// errorMsg decodes {"error_msg": ...}, a limit's rejected_msg as APISIX sends it.
func (r response) errorMsg() string {
	var m struct {
		ErrorMsg string `json:"error_msg"`
	}
	_ = json.Unmarshal([]byte(r.Body), &m)
	return m.ErrorMsg
}
