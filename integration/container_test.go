package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/integration/kcfixture"
)

// The tests of this file run the Portcullis image (Containerfile) as a container, as users run
// it: the policy on a volume, ports published, driven from the host; and next to the Keycloak
// container on one network, as examples/compose does. They need a container engine's CLI
// (podman, or PORTCULLIS_CONTAINER_ENGINE) and, for Keycloak, its Docker-compatible API
// (scripts/container-engine.sh sets both up); without them they skip, and fail when CI=true.
// The image is PORTCULLIS_IMAGE when set (CI builds it with `make image`), otherwise built once
// for the package from the current source by scripts/build-image.sh.

// engineCLI runs the container engine's command line.
type engineCLI struct{ bin string }

// containerEngine returns the engine, or ends the test: a skip locally, a failure in CI.
func containerEngine(t *testing.T) engineCLI {
	t.Helper()
	name := os.Getenv("PORTCULLIS_CONTAINER_ENGINE")
	if name == "" {
		name = "podman"
	}
	bin, err := exec.LookPath(name)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if out, infoErr := exec.CommandContext(ctx, bin, "info").CombinedOutput(); infoErr != nil {
			err = fmt.Errorf("%s info: %w: %s", bin, infoErr, lastLines(string(out), 5))
		}
	}
	if err != nil {
		if kcfixture.InCI() {
			t.Fatalf("a container engine is required in CI (scripts/container-engine.sh sets up podman): %v", err)
		}
		t.Skipf("skipping: no container engine (run scripts/container-engine.sh, or set PORTCULLIS_CONTAINER_ENGINE): %v", err)
	}
	return engineCLI{bin: bin}
}

// run runs the engine with args and returns its trimmed stdout.
func (e engineCLI) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(e.bin), strings.Join(args, " "), err, lastLines(stderr.String(), 10))
	}
	return strings.TrimSpace(string(out)), nil
}

// logs is a container's log: its stdout (the access log) and stderr (the operational log).
func (e engineCLI) logs(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.bin, "logs", name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s logs %s: %w: %s", filepath.Base(e.bin), name, err, lastLines(string(out), 5))
	}
	return string(out), nil
}

func (e engineCLI) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.run(context.WithoutCancel(t.Context()), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	imageOnce sync.Once
	imageRef  string
	imageErr  error
)

// portcullisImage is the image under test: PORTCULLIS_IMAGE, or one built for this package run
// and removed after it.
func portcullisImage(t *testing.T, e engineCLI) string {
	t.Helper()
	imageOnce.Do(func() {
		ctx := context.Background()
		if ref := os.Getenv("PORTCULLIS_IMAGE"); ref != "" {
			imageRef = ref
			if _, err := e.run(ctx, "image", "inspect", "--format", "{{.Id}}", ref); err != nil {
				imageErr = fmt.Errorf("PORTCULLIS_IMAGE=%s is not in the engine's images (make image): %w", ref, err)
			}
			return
		}
		imageRef = "localhost/portcullis:it-" + randomName()
		start := time.Now()
		cmd := exec.Command("bash", "../scripts/build-image.sh", imageRef)
		cmd.Env = append(os.Environ(), "ENGINE="+e.bin, "VERSION=it")
		out, err := cmd.CombinedOutput()
		if err != nil {
			imageErr = fmt.Errorf("building the image: %w\n%s", err, lastLines(string(out), 20))
			return
		}
		fmt.Fprintf(os.Stderr, "integration: built %s in %s\n", imageRef, time.Since(start).Round(100*time.Millisecond))
		ref := imageRef
		sharedFixtureStops = append(sharedFixtureStops, func() {
			if _, err := e.run(ctx, "rmi", "-f", ref); err != nil {
				fmt.Fprintf(os.Stderr, "integration: removing %s: %v\n", ref, err)
			}
		})
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageRef
}

func randomName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// gatewayContainer is a running Portcullis container.
type gatewayContainer struct {
	e        engineCLI
	name     string
	URL      string // the published proxy port, http://127.0.0.1:N
	AdminURL string
}

// runGateway starts the image with args (after `run`'s options) and removes the container when
// the test ends, failed or not. The policy must listen on 0.0.0.0:9080 and 0.0.0.0:9091.
func runGateway(t *testing.T, e engineCLI, image string, runOpts []string, args ...string) *gatewayContainer {
	t.Helper()
	g := &gatewayContainer{e: e, name: "portcullis-it-" + randomName()}
	// Published on loopback only, on ports the engine picks.
	opts := append([]string{"run", "-d", "--name", g.name, "-p", "127.0.0.1::9080", "-p", "127.0.0.1::9091"}, runOpts...)
	e.must(t, append(append(opts, image), args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			if logs, err := e.logs(g.name); err == nil {
				t.Logf("container %s's log:\n%s", g.name, lastLines(logs, 40))
			}
		}
		if _, err := e.run(context.Background(), "rm", "-f", "-t", "0", g.name); err != nil {
			t.Errorf("removing container %s: %v", g.name, err)
		}
	})
	g.URL = "http://" + g.port(t, "9080/tcp")
	g.AdminURL = "http://" + g.port(t, "9091/tcp")
	return g
}

// port is the host address a container port is published on.
func (g *gatewayContainer) port(t *testing.T, p string) string {
	t.Helper()
	out := g.e.must(t, "port", g.name, p)
	addr, _, _ := strings.Cut(out, "\n")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("podman port %s %s: got %q, want host:port", g.name, p, out)
	}
	return addr
}

// waitReady polls /readyz until it answers 200 or the container stops.
func (g *gatewayContainer) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for time.Now().Before(deadline) {
		resp, err := client.Get(g.AdminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if state := g.state(t); state != "running" && state != "created" {
			t.Fatalf("container %s is %s before it was ready", g.name, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("container %s: /readyz not 200 within %s (last: %s)", g.name, within, last)
}

func (g *gatewayContainer) state(t *testing.T) string {
	t.Helper()
	return g.e.must(t, "inspect", "--format", "{{.State.Status}}", g.name)
}

// waitRefused polls until a connection to addr is refused.
func (g *gatewayContainer) waitRefused(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("container %s: %s still accepts connections %s after the stop", g.name, addr, within)
}

// containerPetstorePolicy is the petstore policy for the image: listening on all the container's
// interfaces, the upstream on the host.
func containerPetstorePolicy(upstream, extraConsumers string) string {
	p := petstorePolicy(upstream, extraConsumers)
	p = strings.Replace(p, `"listen": "127.0.0.1:0"`, `"listen": "0.0.0.0:9080"`, 1)
	p = strings.Replace(p, `"admin_listen": "127.0.0.1:0"`, `"admin_listen": "0.0.0.0:9091"`, 1)
	p = strings.Replace(p, `"timeout": "2s"`, `"timeout": "60s"`, 1)
	return p
}

// hostUpstream is an upstream on the host that containers on the default network reach as
// host.containers.internal. It listens on all interfaces: the name resolves to an address of
// the engine's bridge, which exists only once the engine made it.
func hostUpstream(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listening for the upstream: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return fmt.Sprintf("http://host.containers.internal:%d", ln.Addr().(*net.TCPAddr).Port)
}

// writePolicyDir writes the policy into a folder the image's non-root user can read, replacing
// the file by a rename as an editor or a deployment tool does.
func writePolicyDir(t *testing.T, dir, policy string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(dir), "petstore.json.new")
	if err := os.WriteFile(tmp, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "petstore.json")); err != nil {
		t.Fatal(err)
	}
}

// TestImagePetstore runs the image with the petstore policy on a volume: the scenario, a reload
// of an edited policy, and a `podman stop` (SIGTERM) that lets a slow request in flight finish.
func TestImagePetstore(t *testing.T) {
	e := containerEngine(t)
	image := portcullisImage(t, e)

	slowEntered := make(chan struct{}, 1)
	slowRelease := make(chan struct{})
	upstream := hostUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/petstore/slow" {
			slowEntered <- struct{}{}
			select {
			case <-slowRelease:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"consumer":%q}`, r.URL.Path, r.Header.Get("X-Consumer-Username"))
	}))

	root := t.TempDir()
	dir := filepath.Join(root, "policy")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writePolicyDir(t, dir, containerPetstorePolicy(upstream, ""))

	// The image's own CMD: run -c /etc/portcullis.
	g := runGateway(t, e, image, []string{"-v", dir + ":/etc/portcullis:ro"})
	g.waitReady(t, 60*time.Second)
	url := g.URL + "/petstore"

	t.Run("scenario", func(t *testing.T) {
		if r := do(t, "GET", url, nil); r.Status != 401 || r.message() != "Missing API key in request" {
			t.Errorf("no key: got %d %q, want 401 Missing API key in request", r.Status, r.Body)
		}
		if r := do(t, "GET", url, map[string]string{"apikey": "john-key"}); r.Status != 200 || !strings.Contains(r.Body, `"consumer":"JohnDoe"`) {
			t.Errorf("john-key: got %d %q, want 200 with consumer JohnDoe upstream", r.Status, r.Body)
		}
		var got []int
		for range 3 {
			got = append(got, do(t, "GET", url, map[string]string{"apikey": "bot-key"}).Status)
		}
		if fmt.Sprint(got) != "[200 200 429]" {
			t.Errorf("bot-key thrice: got %v, want [200 200 429]", got)
		}
	})

	t.Run("reload of the edited volume", func(t *testing.T) {
		if r := do(t, "GET", url, map[string]string{"apikey": "new-key"}); r.Status != 401 {
			t.Fatalf("new-key before the edit: got %d, want 401", r.Status)
		}
		writePolicyDir(t, dir, containerPetstorePolicy(upstream,
			`, { "username": "NewBot", "idps": [ { "idp": "keys", "key": "new-key" } ] }`))
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := do(t, "GET", url, map[string]string{"apikey": "new-key"})
			if r.Status == 200 && strings.Contains(r.Body, `"consumer":"NewBot"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("new-key 30 s after the edit: got %d %q, want 200 as NewBot", r.Status, r.Body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("stop drains", func(t *testing.T) {
		type result struct {
			r   response
			err error
		}
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("GET", url+"/slow", nil)
			req.Header.Set("apikey", "john-key")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			done <- result{r: response{Status: resp.StatusCode, Body: string(b)}, err: err}
		}()
		select {
		case <-slowEntered:
		case <-time.After(30 * time.Second):
			t.Fatal("the slow request did not reach the upstream within 30 s")
		}
		stopped := make(chan error, 1)
		go func() {
			_, err := e.run(context.Background(), "stop", "-t", "30", g.name)
			stopped <- err
		}()
		// SIGTERM has arrived once the proxy listener is closed (the engine refuses connections
		// to its published port); only then may the request end. The log cannot tell: the engine
		// holds the container's lock, and with it `logs`, until the stop completes.
		g.waitRefused(t, strings.TrimPrefix(g.URL, "http://"), 30*time.Second)
		close(slowRelease)
		res := <-done
		if res.err != nil {
			t.Fatalf("the request in flight during stop failed: %v", res.err)
		}
		if res.r.Status != 200 || !strings.Contains(res.r.Body, `"path":"/petstore/slow"`) {
			t.Errorf("the request in flight during stop: got %d %q, want 200 from the upstream", res.r.Status, res.r.Body)
		}
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if code := e.must(t, "inspect", "--format", "{{.State.ExitCode}}", g.name); code != "0" {
			t.Errorf("exit code after stop: got %s, want 0", code)
		}
		if logs, err := e.logs(g.name); err != nil || !strings.Contains(logs, "shutting down: draining in-flight requests") {
			t.Errorf("log after stop: got %v\n%s\nwant the drain line", err, lastLines(logs, 5))
		}
	})
}

// TestImageWithKeycloakContainer runs the image and the Keycloak image on one network, as
// examples/compose does: the gateway reaches Keycloak by its name, and a token fetched from the
// host (through Keycloak's published port, naming the same issuer) passes the gateway.
func TestImageWithKeycloakContainer(t *testing.T) {
	e := containerEngine(t)
	image := portcullisImage(t, e)

	network := "portcullis-it-" + randomName()
	e.must(t, "network", "create", network)
	t.Cleanup(func() {
		if _, err := e.run(context.Background(), "network", "rm", "-f", network); err != nil {
			t.Errorf("removing network %s: %v", network, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), keycloakStartTimeout)
	k, err := kcfixture.StartContainer(ctx, kcfixture.ContainerOptions{Network: network, Alias: "keycloak"})
	cancel()
	if k != nil {
		t.Cleanup(func() {
			if err := k.Stop(); err != nil {
				t.Errorf("stopping the Keycloak container: %v", err)
			}
		})
	}
	k = kcfixture.Require(t, k, err)

	dir := filepath.Join(t.TempDir(), "policy")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The demo's petstore upstream runs in the gateway's container (portcullis demo).
	writePolicyDir(t, dir, `{
  "listen": "0.0.0.0:9080",
  "admin_listen": "0.0.0.0:9091",
  "idps": [ { "name": "corp", "type": "keycloak", "url": "http://keycloak:8080", "realm": "corp",
              "client_id": "gateway", "client_secret": "${env:CORP_SECRET}" } ],
  "consumers": [ { "username": "FetchBot", "idps": [ { "idp": "corp", "subject": "`+kcfixture.FetchBotSubject+`" } ] } ],
  "routes": [ { "name": "petstore", "paths": ["/petstore"], "upstream": { "targets": [ { "url": "http://127.0.0.1:9100" } ] } } ]
}`)
	g := runGateway(t, e, image, []string{"--network", network, "-e", corpSecretEnv, "-v", dir + ":/etc/portcullis:ro"},
		"demo", "-c", "/etc/portcullis/petstore.json")
	// Ready means the gateway read realm corp's discovery document through the network.
	g.waitReady(t, 90*time.Second)

	tok := kcClientToken(t, k, kcfixture.RealmCorp, kcfixture.ClientFetchBot, kcfixture.FetchBotSecret)
	if iss, _ := jwtPart(t, tok, 1)["iss"].(string); iss != "http://keycloak:8080/realms/corp" {
		t.Fatalf("token issuer: got %q, want http://keycloak:8080/realms/corp", iss)
	}
	if r := do(t, "GET", g.URL+"/petstore", nil); r.Status != 401 {
		t.Errorf("no token: got %d %q, want 401", r.Status, r.Body)
	}
	if r := do(t, "GET", g.URL+"/petstore", bearerHeader(tok)); r.Status != 200 || !strings.Contains(r.Body, `"consumer":"FetchBot"`) {
		t.Errorf("fetch-bot's token: got %d %q, want 200 as FetchBot", r.Status, r.Body)
	}
	if r := do(t, "GET", g.URL+"/petstore", bearerHeader(tok+"x")); r.Status != 401 {
		t.Errorf("a forged token: got %d %q, want 401", r.Status, r.Body)
	}
	logs, err := e.logs(g.name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs, kcfixture.GatewaySecret) || strings.Contains(logs, tok) {
		t.Errorf("the container's log holds the client secret or the token:\n%s", logs)
	}
}
