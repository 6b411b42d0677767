package kcfixture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// DefaultImage is the Keycloak image of the container path: built locally, from Debian's JRE and
// the Maven Central distribution, by scripts/container-engine.sh. It is augmented at build time
// (`kc.sh build --db=dev-file`) and runs `start --optimized`. PORTCULLIS_KEYCLOAK_IMAGE names
// another image built the same way.
const DefaultImage = "localhost/keycloak:" + Version

// ContainerImage is the image the container path runs.
func ContainerImage() string { return envOr("PORTCULLIS_KEYCLOAK_IMAGE", DefaultImage) }

// ownerLabel marks the fixture's containers with the pid of the test binary that started them,
// so that a later run removes what a killed run (a panic, a -timeout, Ctrl-C) left behind: Ryuk,
// testcontainers' own reaper, cannot run here (its image cannot be pulled).
// The host label keeps one machine (or pid namespace, usually its own hostname) from reaping the
// live containers of another that shares the engine.
const (
	ownerLabel     = "io.portcullis.kcfixture.pid"
	ownerHostLabel = "io.portcullis.kcfixture.host"
)

// engine is the Docker-compatible API the fixture and testcontainers-go use, found as
// testcontainers finds it: DOCKER_HOST, else the default Docker sockets.
type engine struct {
	host   string // DOCKER_HOST form: unix:///run/podman/podman.sock, tcp://host:2375
	local  bool   // on this machine: published ports are on its loopback
	client *http.Client
}

// findEngine locates the engine and checks that it answers /_ping.
func findEngine(ctx context.Context) (*engine, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		candidates := []string{"/var/run/docker.sock"}
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			candidates = append(candidates, filepath.Join(d, "docker.sock"))
		}
		if h, err := os.UserHomeDir(); err == nil {
			candidates = append(candidates, filepath.Join(h, ".docker", "run", "docker.sock"))
		}
		for _, c := range candidates {
			if _, err := os.Stat(c); err == nil {
				host = "unix://" + c
				break
			}
		}
		if host == "" {
			return nil, errors.New("no Docker socket found and DOCKER_HOST is unset (scripts/container-engine.sh prints it)")
		}
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("parsing DOCKER_HOST: %w", err)
	}
	network, addr := "", ""
	switch u.Scheme {
	case "unix":
		network, addr = "unix", u.Path
	case "tcp":
		network, addr = "tcp", u.Host
	default:
		return nil, fmt.Errorf("DOCKER_HOST scheme %q is not supported by the fixture", u.Scheme)
	}
	var d net.Dialer
	// No client timeout: each call's context bounds it (a forced removal takes the engine a while).
	e := &engine{host: host, local: network == "unix", client: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}},
	}}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := e.call(pingCtx, http.MethodGet, "/_ping", nil); err != nil {
		return nil, fmt.Errorf("connecting to the engine at %s: %w", host, err)
	}
	return e, nil
}

// call does one API request and returns the body of a 2xx answer.
func (e *engine) call(ctx context.Context, method, path string, query url.Values) ([]byte, error) {
	u := "http://engine" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &apiError{status: resp.StatusCode, msg: strings.TrimSpace(string(body))}
	}
	return body, nil
}

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("engine answered %d: %s", e.status, e.msg) }

// hasImage reports whether the image is in the engine's local store: the fixture never pulls
// (there is no registry here, and a pull would hide a stale or missing local build).
func (e *engine) hasImage(ctx context.Context, image string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := e.call(ctx, http.MethodGet, "/images/"+image+"/json", nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return fmt.Errorf("image %s is not built (run scripts/container-engine.sh)", image)
	}
	if err != nil {
		return fmt.Errorf("looking up image %s: %w", image, err)
	}
	return nil
}

// reapOrphans removes the fixture's containers whose test binary, on this machine, is gone.
func (e *engine) reapOrphans(ctx context.Context, k *Keycloak) {
	if !e.local {
		return // a remote engine's containers carry pids of other machines
	}
	host := hostname()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	filters, _ := json.Marshal(map[string][]string{"label": {ownerLabel}})
	body, err := e.call(ctx, http.MethodGet, "/containers/json", url.Values{"all": {"1"}, "filters": {string(filters)}})
	if err != nil {
		k.logger.Warn("listing leftover keycloak containers", "err", err)
		return
	}
	var list []struct {
		ID     string            `json:"Id"`
		Labels map[string]string `json:"Labels"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		k.logger.Warn("listing leftover keycloak containers", "err", err)
		return
	}
	for _, c := range list {
		pid, err := strconv.Atoi(c.Labels[ownerLabel])
		if err != nil || pid <= 0 || c.Labels[ownerHostLabel] != host || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if _, err := e.call(ctx, http.MethodDelete, "/containers/"+c.ID, url.Values{"force": {"1"}, "v": {"1"}}); err != nil {
			k.logger.Warn("removing a leftover keycloak container", "id", c.ID[:12], "err", err)
			continue
		}
		k.logger.Info("removed a keycloak container left by an earlier run", "id", c.ID[:12], "pid", pid)
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// containerAvailable checks what the container path needs: an engine and the local image.
func containerAvailable(ctx context.Context) (*engine, error) {
	e, err := findEngine(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.hasImage(ctx, ContainerImage()); err != nil {
		return nil, err
	}
	return e, nil
}

// containerEnv sets what testcontainers-go needs on these machines, unless the user set it.
// testcontainers reads its configuration once, so this runs before its first use.
func containerEnv(k *Keycloak) {
	// Ryuk's image cannot be had here; the fixture terminates its containers itself and reaps
	// those of killed runs (reapOrphans).
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	// With /.dockerenv present testcontainers believes it runs inside a container and reaches
	// published ports through the bridge gateway, which is wrong on a VM that merely carries the
	// file (as these CI machines do) and for any engine on this host: its ports are on loopback.
	if _, ok := os.LookupEnv("TESTCONTAINERS_HOST_OVERRIDE"); !ok {
		if _, err := os.Stat("/.dockerenv"); err == nil {
			k.logger.Info("setting TESTCONTAINERS_HOST_OVERRIDE=localhost: /.dockerenv exists but the engine publishes ports on this host")
			os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "localhost")
		}
	}
}

// ContainerOptions places a Keycloak container on a network of the engine, as a compose file
// would: other containers reach it as http://Alias:8080, which is then its issuer's origin.
type ContainerOptions struct {
	Network string // an existing network
	Alias   string
}

// containerServer is Keycloak in a container run by testcontainers-go.
type containerServer struct {
	k     *Keycloak
	ctr   *testcontainers.DockerContainer
	base  string
	fixed bool // base is a fixed loopback port, kept across stop and start
}

// startContainer runs the Keycloak image with the realms copied in for --import-realm. On a local
// engine the port is bound to a fixed loopback port, so the URL (and with it the issuer) survives
// StopServer/StartServer.
func startContainer(ctx context.Context, e *engine, k *Keycloak, realms string, o ContainerOptions) (*containerServer, string, error) {
	files, err := filepath.Glob(filepath.Join(realms, "*-realm.json"))
	if err != nil || len(files) == 0 {
		return nil, "", fmt.Errorf("finding realm exports in %s: %w", realms, errors.Join(err, errors.New("none found")))
	}
	containerEnv(k)
	e.reapOrphans(ctx, k)

	cmd := []string{"start", "--optimized", "--http-enabled=true", "--import-realm"}
	labels := map[string]string{ownerLabel: strconv.Itoa(os.Getpid()), ownerHostLabel: hostname()}
	var opts []testcontainers.ContainerCustomizer
	fixedURL := ""
	switch {
	case o.Network != "":
		// Inside the network Keycloak is http://alias:8080, and tokens fetched from the host
		// through the published port must name the same issuer.
		cmd = append(cmd, "--hostname=http://"+o.Alias+":8080")
		opts = append(opts, tcnetwork.WithNetworkName([]string{o.Alias}, o.Network))
		if e.local {
			ports, err := freePorts(1)
			if err != nil {
				return nil, "", err
			}
			fixedURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
			opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
				// A loopback address: the admin account (admin/admin) is not offered to the network.
				hc.PortBindings = network.PortMap{
					network.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(ports[0])}},
				}
			}))
		}
		opts = append(opts, testcontainers.WithExposedPorts("8080/tcp"), readyStrategy(wait.ForHTTP(
			"/realms/"+RealmPartners+"/.well-known/openid-configuration").WithPort("8080/tcp").WithStartupTimeout(startupTimeout)))
	case e.local:
		// The host's network, on free loopback ports, as the process path runs: Keycloak must
		// reach the gateways the tests run on this host's loopback (back-channel logout), which
		// from a bridge network it cannot. The URL (and the issuer) survives StopServer/StartServer.
		ports, err := freePorts(2)
		if err != nil {
			return nil, "", err
		}
		fixedURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		cmd = append(cmd, "--http-host=127.0.0.1", "--http-port="+strconv.Itoa(ports[0]),
			"--http-management-port="+strconv.Itoa(ports[1]), "--hostname="+fixedURL)
		opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = "host"
		}), readyStrategy(wait.ForLog("Listening on: ").WithStartupTimeout(startupTimeout)))
	default:
		// A remote engine: its published port, wherever it is.
		cmd = append(cmd, "--hostname-strict=false")
		opts = append(opts, testcontainers.WithExposedPorts("8080/tcp"), readyStrategy(wait.ForHTTP(
			"/realms/"+RealmPartners+"/.well-known/openid-configuration").WithPort("8080/tcp").WithStartupTimeout(startupTimeout)))
	}
	opts = append(opts,
		testcontainers.WithCmd(cmd...),
		testcontainers.WithEnv(map[string]string{
			"KC_BOOTSTRAP_ADMIN_USERNAME": k.AdminUser,
			"KC_BOOTSTRAP_ADMIN_PASSWORD": k.AdminPassword,
		}),
		testcontainers.WithLabels(labels),
	)
	for _, f := range files {
		opts = append(opts, testcontainers.WithFiles(testcontainers.ContainerFile{
			HostFilePath:      f,
			ContainerFilePath: "/opt/keycloak/data/import/" + filepath.Base(f),
			FileMode:          0o644,
		}))
	}
	ctr, err := testcontainers.Run(ctx, ContainerImage(), opts...)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.Background())
		}
		return nil, "", err
	}
	s := &containerServer{k: k, ctr: ctr, base: fixedURL, fixed: fixedURL != ""}
	if err := s.resolveURL(ctx); err != nil {
		_ = ctr.Terminate(context.Background())
		return nil, "", err
	}
	if err := waitRealms(ctx, k.client, s.base, nil); err != nil {
		_ = ctr.Terminate(context.Background())
		return nil, "", fmt.Errorf("waiting for the realms at %s: %w", s.base, err)
	}
	return s, s.base, nil
}

// startupTimeout bounds a Keycloak container's start: testcontainers' default (60 s, for the
// strategy and for the whole wait) is too short for a loaded 2-core machine.
const startupTimeout = 5 * time.Minute

func readyStrategy(w wait.Strategy) testcontainers.CustomizeRequestOption {
	return testcontainers.WithWaitStrategyAndDeadline(startupTimeout, w)
}

// resolveURL asks the engine for the published port, unless it is fixed.
func (s *containerServer) resolveURL(ctx context.Context) error {
	if s.fixed {
		s.k.URL = s.base
		return nil
	}
	ep, err := s.ctr.PortEndpoint(ctx, "8080/tcp", "http")
	if err != nil {
		return fmt.Errorf("finding the Keycloak container's port: %w", err)
	}
	s.base = trimSlash(ep)
	s.k.URL = s.base
	return nil
}

func (s *containerServer) stop(ctx context.Context) error {
	timeout := 30 * time.Second
	return s.ctr.Stop(ctx, &timeout)
}

func (s *containerServer) start(ctx context.Context) error {
	if err := s.ctr.Start(ctx); err != nil {
		return fmt.Errorf("restarting the Keycloak container: %w", err)
	}
	if err := s.resolveURL(ctx); err != nil {
		return err
	}
	return waitRealms(ctx, s.k.client, s.base, nil)
}

func (s *containerServer) close(ctx context.Context) error {
	return s.ctr.Terminate(ctx)
}
