package kcfixture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Image is the Keycloak container image of the Docker path.
const Image = "quay.io/keycloak/keycloak:" + Version

// dockerReachable answers whether a Docker engine responds to /_ping, cheaply and without
// testcontainers (which may otherwise wait for or panic on a missing engine).
func dockerReachable(ctx context.Context) error {
	network, addr := "", ""
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		u, err := url.Parse(h)
		if err != nil {
			return fmt.Errorf("parsing DOCKER_HOST: %w", err)
		}
		switch u.Scheme {
		case "unix":
			network, addr = "unix", u.Path
		case "tcp":
			network, addr = "tcp", u.Host
		default:
			return fmt.Errorf("DOCKER_HOST scheme %q is not supported by the fixture", u.Scheme)
		}
	} else {
		candidates := []string{"/var/run/docker.sock"}
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			candidates = append(candidates, filepath.Join(d, "docker.sock"))
		}
		if h, err := os.UserHomeDir(); err == nil {
			candidates = append(candidates, filepath.Join(h, ".docker", "run", "docker.sock"))
		}
		for _, c := range candidates {
			if _, err := os.Stat(c); err == nil {
				network, addr = "unix", c
				break
			}
		}
		if network == "" {
			return errors.New("no Docker socket found and DOCKER_HOST is unset")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("connecting to the Docker engine: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")); err != nil {
		return fmt.Errorf("pinging the Docker engine: %w", err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("pinging the Docker engine: %w", err)
	}
	if !strings.Contains(status, " 200 ") {
		return fmt.Errorf("pinging the Docker engine: %s", strings.TrimSpace(status))
	}
	return nil
}

// containerServer is Keycloak in a container run by testcontainers-go.
type containerServer struct {
	k    *Keycloak
	ctr  *testcontainers.DockerContainer
	base string
}

// startContainer runs the Keycloak image with the realms mounted for --import-realm. On a local
// engine the port is bound to a fixed loopback port, so the URL survives StopServer/StartServer.
func startContainer(ctx context.Context, k *Keycloak, realms string) (*containerServer, string, error) {
	files, err := filepath.Glob(filepath.Join(realms, "*-realm.json"))
	if err != nil || len(files) == 0 {
		return nil, "", fmt.Errorf("finding realm exports in %s: %w", realms, errors.Join(err, errors.New("none found")))
	}
	opts := []testcontainers.ContainerCustomizer{
		testcontainers.WithCmd("start-dev", "--import-realm", "--http-port=8080"),
		testcontainers.WithEnv(map[string]string{
			"KC_BOOTSTRAP_ADMIN_USERNAME": k.AdminUser,
			"KC_BOOTSTRAP_ADMIN_PASSWORD": k.AdminPassword,
		}),
		testcontainers.WithExposedPorts("8080/tcp"),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/realms/" + RealmPartners + "/.well-known/openid-configuration").
			WithPort("8080/tcp").WithStartupTimeout(5 * time.Minute)),
	}
	for _, f := range files {
		opts = append(opts, testcontainers.WithFiles(testcontainers.ContainerFile{
			HostFilePath:      f,
			ContainerFilePath: "/opt/keycloak/data/import/" + filepath.Base(f),
			FileMode:          0o644,
		}))
	}
	if dh := os.Getenv("DOCKER_HOST"); dh == "" || strings.HasPrefix(dh, "unix://") {
		ports, err := freePorts(1)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(ports[0])}},
			}
		}))
	}
	ctr, err := testcontainers.Run(ctx, Image, opts...)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.Background())
		}
		return nil, "", err
	}
	s := &containerServer{k: k, ctr: ctr}
	if err := s.resolveURL(ctx); err != nil {
		_ = ctr.Terminate(context.Background())
		return nil, "", err
	}
	return s, s.base, nil
}

func (s *containerServer) resolveURL(ctx context.Context) error {
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
