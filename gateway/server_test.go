package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// syncBuilder is a log sink safe for the server's goroutines.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// serverPolicy is a policy on port 0 with one route to upstream, named name.
func serverPolicy(t *testing.T, name, upstream string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".json")
	policy := fmt.Sprintf(`{
  "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
  "routes": [ { "name": %q, "paths": ["/r"], "upstream": { "targets": [ { "url": %q } ] } } ]
}`, name, upstream)
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// scriptedLoader serves the first load from first and hands every later one to next.
type scriptedLoader struct {
	mu    sync.Mutex
	calls int
	first string
	next  func(call int) (*policies.Snapshot, error)
}

func (l *scriptedLoader) load() (*policies.Snapshot, error) {
	l.mu.Lock()
	l.calls++
	n := l.calls
	l.mu.Unlock()
	if n == 1 {
		return policies.Load(l.first, policies.Options{})
	}
	return l.next(n)
}

func (l *scriptedLoader) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// runningServer is a Server inside Serve.
type runningServer struct {
	srv    *Server
	url    string
	reload chan struct{}
	cancel context.CancelFunc
	// served is closed when Serve has returned serveErr.
	served   chan struct{}
	serveErr error
}

func startServer(t *testing.T, load Loader, logw io.Writer) *runningServer {
	t.Helper()
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	t.Cleanup(func() { reg.Close() })
	addrs := make(chan net.Addr, 1)
	srv, err := NewServer(ServerOptions{
		Logger: slogTo(logw), Limiters: reg, Load: load, ReloadGrace: 50 * time.Millisecond,
		OnListen: func(proxy, _ net.Addr) { addrs <- proxy },
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningServer{srv: srv, reload: make(chan struct{}), cancel: cancel, served: make(chan struct{})}
	go func() {
		r.serveErr = srv.Serve(ctx, r.reload)
		close(r.served)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.served
		srv.Close()
	})
	r.url = "http://" + (<-addrs).String()
	return r
}

// requestReload hands a reload request to Serve and fails the test when Serve does not take
// it: the serve loop is blocked.
func (r *runningServer) requestReload(t *testing.T) {
	t.Helper()
	select {
	case r.reload <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not take a reload request within 10s: its loop is blocked")
	}
}

// stop cancels Serve's context and fails the test when Serve does not return.
func (r *runningServer) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.served:
		if r.serveErr != nil {
			t.Errorf("Serve: %v", r.serveErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Serve did not return within 30s of its context ending")
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestServeWhileReloadIsStuck: a reload that never returns does not hold the serve loop:
// later reload requests are taken (and merged), the old policy keeps serving, and ending the
// context ends Serve. The abandoned reload, finishing after Close, is discarded.
func TestServeWhileReloadIsStuck(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "old") }))
	defer up.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	late := serverPolicy(t, "late", up.URL)
	var lateSnap *policies.Snapshot
	l := &scriptedLoader{first: serverPolicy(t, "old", up.URL), next: func(int) (*policies.Snapshot, error) {
		close(entered)
		<-release
		snap, err := policies.Load(late, policies.Options{})
		lateSnap = snap
		return snap, err
	}}
	r := startServer(t, l.load, io.Discard)
	var releaseOnce sync.Once
	unstick := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unstick) // before startServer's cleanup waits for Serve, should the test fail
	old := r.srv.Gateway().Snapshot()

	r.requestReload(t)
	<-entered
	for range 3 {
		r.requestReload(t)
	}
	// The old policy's route (it has no consumers: 401), where an unknown path is 404.
	if got := getStatus(t, r.url+"/r"); got != http.StatusUnauthorized {
		t.Errorf("during the stuck reload: got %d, want 401", got)
	}
	r.stop(t)
	if err := r.srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	unstick()
	// Reload holds reloadMu until it has finished: taking it waits for the stuck reload.
	r.srv.reloadMu.Lock()
	//lint:ignore SA2001 the empty critical section is the wait
	r.srv.reloadMu.Unlock()
	if got := l.count(); got != 2 {
		t.Errorf("loads: got %d, want 2 (start, the stuck reload; the merged request is dropped at shutdown)", got)
	}
	if lateSnap == nil || r.srv.Gateway().Snapshot() != old {
		t.Errorf("a reload finishing after Close was swapped in")
	}
}

// TestReloadsMerge: requests that come during a reload are merged, not one reload each.
func TestReloadsMerge(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	path := serverPolicy(t, "p", up.URL)
	entered, release, second := make(chan struct{}), make(chan struct{}), make(chan struct{})
	l := &scriptedLoader{first: path, next: func(n int) (*policies.Snapshot, error) {
		if n == 2 {
			close(entered)
			<-release
		}
		if n == 3 {
			close(second)
		}
		return policies.Load(path, policies.Options{})
	}}
	r := startServer(t, l.load, io.Discard)
	r.requestReload(t)
	<-entered
	for range 5 {
		r.requestReload(t)
	}
	close(release)
	<-second
	r.stop(t)
	// Start, the reload, one for the five requests during it; the last request may be handed
	// over just after that one took the pending slot, and make one more. Never one each.
	if got := l.count(); got != 3 && got != 4 {
		t.Errorf("loads: got %d, want 3 or 4 (not one per request: 7)", got)
	}
}

// TestLoadPanics: a panic of loading or compiling a policy is a failed load, at start and on
// reload; a reload's leaves the old policy serving.
func TestLoadPanics(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	tests := []struct {
		name string
		load func() (*policies.Snapshot, error)
		want string
	}{
		{name: "loader panics", load: func() (*policies.Snapshot, error) { panic("boom") }, want: "boom"},
		// A snapshot without a policy makes compiling dereference nil.
		{name: "compiling panics", load: func() (*policies.Snapshot, error) { return &policies.Snapshot{}, nil }, want: "compiling the policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" at start", func(t *testing.T) {
			reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
			defer reg.Close()
			_, err := NewServer(ServerOptions{Limiters: reg, Load: tt.load})
			if !errors.Is(err, errPanic) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer: got %v, want a panic error naming %q", err, tt.want)
			}
		})
		t.Run(tt.name+" on reload", func(t *testing.T) {
			var logs syncBuilder
			l := &scriptedLoader{first: serverPolicy(t, "p", up.URL), next: func(int) (*policies.Snapshot, error) { return tt.load() }}
			reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
			defer reg.Close()
			srv, err := NewServer(ServerOptions{Limiters: reg, Load: l.load, Logger: slogTo(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			v := srv.Gateway().Snapshot().Version
			if err := srv.Reload(); !errors.Is(err, errPanic) {
				t.Errorf("Reload: got %v, want a panic error", err)
			}
			if got := srv.Gateway().Snapshot().Version; got != v {
				t.Errorf("serving version %q after the failed reload, want %q", got, v)
			}
			if st := srv.Status(); !strings.Contains(st.LastReloadError, tt.want) {
				t.Errorf("status last_reload_error: got %q, want it to name %q", st.LastReloadError, tt.want)
			}
			if !strings.Contains(logs.String(), "policy reload failed") {
				t.Errorf("log lacks the failed reload:\n%s", logs.String())
			}
		})
	}
}

// TestReloadWarnings: a policy without routes is served, with a warning in the log.
func TestReloadWarnings(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(empty, []byte(`{"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	var logs syncBuilder
	l := &scriptedLoader{first: serverPolicy(t, "p", up.URL), next: func(int) (*policies.Snapshot, error) { return policies.Load(empty, policies.Options{}) }}
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	defer reg.Close()
	srv, err := NewServer(ServerOptions{Limiters: reg, Load: l.load, Logger: slogTo(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if strings.Contains(logs.String(), "policy warning") {
		t.Errorf("a policy with a route warned:\n%s", logs.String())
	}
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if !strings.Contains(logs.String(), `"msg":"policy warning"`) || !strings.Contains(logs.String(), "no routes") {
		t.Errorf("log lacks the warning:\n%s", logs.String())
	}
}
