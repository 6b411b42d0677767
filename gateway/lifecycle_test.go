package gateway

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/policies"
)

// TestCloseWaitsForRetiredSnapshots: a snapshot retired by a swap while a request still runs
// on it is closed by the time Close returns, which waits for that request; a swap after Close
// is refused.
func TestCloseWaitsForRetiredSnapshots(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	const policy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "u", "idps": [ { "idp": "keys", "key": "k" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`
	gw, up := newTestGateway(t, policy, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "ok")
	})
	old := gw.current.Load()
	served := make(chan *httptest.ResponseRecorder)
	go func() { served <- serve(gw, "GET", "/r", map[string]string{"apikey": "k"}) }()
	<-arrived
	swapPolicy(t, gw, policy, up.URL) // old is retired, but its request is still running

	closed := make(chan error)
	go func() { closed <- gw.Close() }()
	// Release the request once Close has begun, so that Close has it to wait for.
	for {
		gw.mu.Lock()
		begun := gw.closed
		gw.mu.Unlock()
		if begun {
			break
		}
		runtime.Gosched()
	}
	close(release)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	old.inflight.RLock()
	retired := old.closed
	old.inflight.RUnlock()
	if !retired {
		t.Errorf("Close returned before the snapshot retired by the swap was closed")
	}
	if rec := <-served; rec.Code != http.StatusOK {
		t.Errorf("the in-flight request: got %d, want 200", rec.Code)
	}
	if err := gw.Swap(loadPolicy(t, policy, up.URL)); !errors.Is(err, errGatewayClosed) {
		t.Errorf("Swap after Close: got %v, want %v", err, errGatewayClosed)
	}
}

// TestNewServerServesFirst: a server given its first snapshot serves it without loading, and
// loads only to reload.
func TestNewServerServesFirst(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	first, err := policies.Load(serverPolicy(t, "first", up.URL), policies.Options{})
	if err != nil {
		t.Fatal(err)
	}
	next := serverPolicy(t, "next", up.URL)
	loads := 0
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{})
	defer reg.Close()
	srv, err := NewServer(ServerOptions{Limiters: reg, First: first, Load: func() (*policies.Snapshot, error) {
		loads++
		return policies.Load(next, policies.Options{})
	}})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	defer srv.Close()
	if got := srv.Gateway().Snapshot(); got != first || loads != 0 {
		t.Errorf("at start: serving %p after %d loads, want the first snapshot %p after none", got, loads, first)
	}
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := srv.Gateway().Snapshot().Policy.Routes[0].Name; got != "next" || loads != 1 {
		t.Errorf("after a reload: serving route %q after %d loads, want \"next\" after 1", got, loads)
	}
}
