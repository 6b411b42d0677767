// Package kcfixture runs a real Keycloak for tests, with the realms of
// integration/testdata/realms imported. Start it once per test binary (TestMain) and share it:
// a fresh Keycloak takes tens of seconds to start on a small machine.
//
// Start picks the first of these that works:
//
//  1. KEYCLOAK_URL is set (with KEYCLOAK_ADMIN / KEYCLOAK_ADMIN_PASSWORD, default admin/admin):
//     that server is used; realms it lacks are imported through the admin API.
//  2. The container path: a Docker-compatible engine answers (DOCKER_HOST, else the default
//     Docker sockets, as testcontainers-go finds it) and has the image ContainerImage(), built
//     locally by scripts/container-engine.sh (never pulled): testcontainers-go runs it with
//     `start --optimized --import-realm` on a loopback port.
//  3. The process path: the Keycloak distribution from Maven Central, installed by
//     scripts/fetch-keycloak.sh into ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}: a private
//     copy runs `kc.sh start-dev` on free loopback ports with a fresh database, and is stopped
//     by its process group.
//
// PORTCULLIS_KEYCLOAK=container or =process forces a path: when it cannot run, Start fails
// (ErrForced) instead of falling back, locally too. The path taken is logged, and appended to
// the file PORTCULLIS_KEYCLOAK_REPORT names, if any (CI prints it: `go test` hides the output of
// passing packages).
//
// When none works, Start returns an error wrapping ErrNoKeycloak; Require turns it into a skip,
// or into a failure when CI=true, because CI must really exercise Keycloak.
package kcfixture

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Version is the Keycloak version of the container image and of the distribution.
const Version = "26.5.6"

// Realms, clients, users, roles and permissions of the realm exports. Secrets are test-only.
const (
	RealmCorp     = "corp"
	RealmPartners = "partners"

	// ClientGateway is the confidential client Portcullis uses in realm corp: the resource
	// server of Authorization Services (resource "petstore", scopes read/write), the audience
	// every corp token carries, and the introspection client.
	ClientGateway = "gateway"
	GatewaySecret = "gateway-secret"

	// ClientPortal is a public client with the password grant, for user tokens.
	ClientPortal = "portal-cli"

	// Service-account clients of realm corp (machine consumers). Their tokens have
	// azp = client id and sub = the service account's user id below.
	ClientFetchBot       = "fetch-bot"
	FetchBotSecret       = "fetch-bot-secret"
	FetchBotSubject      = "f37c4b07-0000-4000-8000-000000000003"
	ClientPartnerSvc     = "partner-svc"
	PartnerSvcSecret     = "partner-svc-secret"
	PartnerSvcSubject    = "9a27e500-0000-4000-8000-000000000004"
	ClientNoConsumer     = "no-consumer-svc"
	NoConsumerSecret     = "no-consumer-svc-secret"
	NoConsumerSubject    = "00c0b500-0000-4000-8000-000000000005"
	ClientOtherAudience  = "other-svc" // its tokens carry aud "other-api", not "gateway"
	OtherAudienceSecret  = "other-svc-secret"
	OtherAudienceSubject = "07e25500-0000-4000-8000-000000000006"

	// Users of realm corp.
	UserAlice     = "alice"
	AlicePassword = "alice-password"
	AliceSubject  = "a11ce000-0000-4000-8000-000000000001"
	UserBob       = "bob"
	BobPassword   = "bob-password"
	BobSubject    = "b0b00000-0000-4000-8000-000000000002"

	// Realm roles, client roles (of client gateway) and groups of realm corp.
	// alice: api-user, admin; gateway: petstore-admin, petstore-viewer; group engineering.
	// bob: api-user. fetch-bot: api-user; gateway: petstore-viewer; group bots.
	// partner-svc, no-consumer-svc: api-user.
	RoleAPIUser           = "api-user"
	RoleAdmin             = "admin"
	ClientRolePetViewer   = "petstore-viewer"
	ClientRolePetAdmin    = "petstore-admin"
	GroupEngineering      = "engineering"
	GroupBots             = "bots"
	PermissionPetRead     = "petstore#read"  // granted to fetch-bot and alice
	PermissionPetWrite    = "petstore#write" // granted to alice only
	RealmRolePartner      = "partner"        // realm partners
	ClientPartnersGateway = "portcullis"     // realm partners: audience and introspection client
	PartnersGatewaySecret = "portcullis-secret"
	ClientPartnerApp      = "partner-app" // realm partners: a partner's service account
	PartnerAppSecret      = "partner-app-secret"
	PartnerAppSubject     = "9a2a7000-0000-4000-8000-000000000012"
	UserCarol             = "carol" // realm partners
	CarolPassword         = "carol-password"
	CarolSubject          = "ca201000-0000-4000-8000-000000000011"
)

// ErrNoKeycloak means no way to run Keycloak was found (no KEYCLOAK_URL, no engine with the
// Keycloak image, no Java or Maven for the distribution).
var ErrNoKeycloak = errors.New("no Keycloak available")

// ErrForced means the path PORTCULLIS_KEYCLOAK forces cannot run: a failure, never a skip.
var ErrForced = errors.New("the Keycloak path PORTCULLIS_KEYCLOAK forces is unavailable")

// ErrNotSupported is returned by StopServer/StartServer on a server the fixture does not own.
var ErrNotSupported = errors.New("not supported by this Keycloak fixture")

// Mode says how the fixture got its Keycloak.
type Mode string

const (
	ModeExternal     Mode = "external"  // KEYCLOAK_URL
	ModeContainer    Mode = "container" // testcontainers-go
	ModeDistribution Mode = "process"   // kc.sh from the Maven Central distribution
)

// Keycloak is a running Keycloak with the test realms.
type Keycloak struct {
	// URL is the server's base URL without a trailing slash ("http://127.0.0.1:41234"); a realm's
	// issuer is URL + "/realms/" + realm (Issuer), except for StartContainer's, whose issuer is
	// http://ALIAS:8080/realms/REALM.
	URL string
	// Mode says how it was started.
	Mode Mode
	// AdminUser and AdminPassword are the master realm's administrator.
	AdminUser     string
	AdminPassword string

	client *http.Client
	logger *slog.Logger
	server server

	mu         sync.Mutex
	adminToken string
	adminExp   time.Time
}

// server is the way a Keycloak runs: a process, a container, or somebody else's.
type server interface {
	// stop ends the server, keeping its data for start.
	stop(ctx context.Context) error
	// start starts a stopped server again on the same URL and waits until it is ready.
	start(ctx context.Context) error
	// close stops the server for good and removes what it left.
	close(ctx context.Context) error
}

// Issuer returns a realm's issuer URL.
func (k *Keycloak) Issuer(realm string) string { return k.URL + "/realms/" + realm }

// Start gets a Keycloak with the test realms by the first way that works (see the package doc).
// ctx bounds the whole start-up, including a first download of the distribution.
func Start(ctx context.Context) (*Keycloak, error) {
	k := newKeycloak()
	realms, err := RealmsDir()
	if err != nil {
		return nil, err
	}
	forced := os.Getenv("PORTCULLIS_KEYCLOAK")
	switch forced {
	case "", "container", "process":
	default:
		return nil, fmt.Errorf("PORTCULLIS_KEYCLOAK=%q: want container or process", forced)
	}
	begin := time.Now()

	if u := os.Getenv("KEYCLOAK_URL"); u != "" && forced == "" {
		k.URL = trimSlash(u)
		k.Mode = ModeExternal
		k.server = externalServer{}
		if err := k.importMissingRealms(ctx, realms); err != nil {
			return nil, fmt.Errorf("preparing Keycloak at KEYCLOAK_URL %s: %w", k.URL, err)
		}
		k.ready(begin, "KEYCLOAK_URL")
		return k, nil
	}

	var reasons []error
	if forced != "process" {
		e, err := containerAvailable(ctx)
		if err != nil {
			if forced == "container" {
				return nil, fmt.Errorf("%w: PORTCULLIS_KEYCLOAK=container: %w", ErrForced, err)
			}
			reasons = append(reasons, fmt.Errorf("container: %w", err))
		} else {
			srv, url, err := startContainer(ctx, e, k, realms, ContainerOptions{})
			if err != nil {
				return nil, fmt.Errorf("starting Keycloak in a container (%s): %w", ContainerImage(), err)
			}
			k.URL, k.Mode, k.server = url, ModeContainer, srv
			k.ready(begin, "image "+ContainerImage()+", engine "+e.host)
			return k, nil
		}
	}

	srv, url, err := startDistribution(ctx, k, realms)
	if err == nil {
		k.URL, k.Mode, k.server = url, ModeDistribution, srv
		why := "kc.sh from " + InstallDir()
		if len(reasons) > 0 {
			why += "; no container: " + errors.Join(reasons...).Error()
		}
		k.ready(begin, why)
		return k, nil
	}
	if forced == "process" {
		return nil, fmt.Errorf("%w: PORTCULLIS_KEYCLOAK=process: %w", ErrForced, err)
	}
	if !errors.Is(err, ErrNoKeycloak) {
		return nil, fmt.Errorf("starting the Keycloak distribution: %w", err)
	}
	reasons = append(reasons, fmt.Errorf("process: %w", err))
	return nil, fmt.Errorf("%w (set KEYCLOAK_URL, run scripts/container-engine.sh, or install Java and Maven): %w",
		ErrNoKeycloak, errors.Join(reasons...))
}

// StartContainer runs a Keycloak container on o.Network, reachable from the network's other
// containers as http://o.Alias:8080 (its issuer's origin) and from the host at URL. It needs the
// container path (ErrNoKeycloak otherwise) whatever PORTCULLIS_KEYCLOAK says.
func StartContainer(ctx context.Context, o ContainerOptions) (*Keycloak, error) {
	if o.Network == "" || o.Alias == "" {
		return nil, errors.New("starting a Keycloak container: a network and an alias are required")
	}
	k := newKeycloak()
	realms, err := RealmsDir()
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	e, err := containerAvailable(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoKeycloak, err)
	}
	srv, url, err := startContainer(ctx, e, k, realms, o)
	if err != nil {
		return nil, fmt.Errorf("starting Keycloak in a container (%s): %w", ContainerImage(), err)
	}
	k.URL, k.Mode, k.server = url, ModeContainer, srv
	k.ready(begin, "image "+ContainerImage()+", network "+o.Network+" as "+o.Alias)
	return k, nil
}

func newKeycloak() *Keycloak {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return &Keycloak{
		AdminUser:     envOr("KEYCLOAK_ADMIN", "admin"),
		AdminPassword: envOr("KEYCLOAK_ADMIN_PASSWORD", "admin"),
		client:        &http.Client{Timeout: 30 * time.Second},
		logger:        logger.With("fixture", "keycloak"),
	}
}

// ready logs the path taken and appends it to PORTCULLIS_KEYCLOAK_REPORT.
func (k *Keycloak) ready(begin time.Time, why string) {
	took := time.Since(begin).Round(100 * time.Millisecond)
	k.logger.Info("keycloak ready", "path", string(k.Mode), "url", k.URL, "startup", took.String(), "how", why)
	report := os.Getenv("PORTCULLIS_KEYCLOAK_REPORT")
	if report == "" {
		return
	}
	pkg, _ := os.Getwd()
	if root, err := repoRoot(); err == nil {
		if rel, err := filepath.Rel(root, pkg); err == nil {
			pkg = rel
		}
	}
	line := fmt.Sprintf("%s: Keycloak %s, %s path, ready in %s (%s)\n", pkg, Version, k.Mode, took, why)
	f, err := os.OpenFile(report, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.logger.Warn("writing PORTCULLIS_KEYCLOAK_REPORT", "err", err)
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line)
}

// Stop ends the Keycloak the fixture started and removes its data. It does nothing to an
// external server.
func (k *Keycloak) Stop() error {
	if k == nil || k.server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return k.server.close(ctx)
}

// StopServer stops Keycloak but keeps its data (realms, keys, sessions), for tests of an IdP
// that goes away mid-run. StartServer brings it back on the same URL.
func (k *Keycloak) StopServer(ctx context.Context) error {
	k.mu.Lock()
	k.adminToken = ""
	k.mu.Unlock()
	return k.server.stop(ctx)
}

// StartServer starts a server stopped by StopServer and waits until the realms answer.
func (k *Keycloak) StartServer(ctx context.Context) error { return k.server.start(ctx) }

// Restart is StopServer then StartServer.
func (k *Keycloak) Restart(ctx context.Context) error {
	if err := k.StopServer(ctx); err != nil {
		return err
	}
	return k.StartServer(ctx)
}

// Main is a TestMain body for packages that need Keycloak: it starts the fixture (bounded by
// timeout), stores it or the start error in *kc and *startErr for Require, runs the tests and
// stops the fixture. In CI (CI=true) a Keycloak that cannot be started fails the run.
//
//	var kc *kcfixture.Keycloak
//	var kcErr error
//	func TestMain(m *testing.M) { os.Exit(kcfixture.Main(m, 5*time.Minute, &kc, &kcErr)) }
func Main(m *testing.M, timeout time.Duration, kc **Keycloak, startErr *error) int {
	flag.Parse() // for testing.Short; m.Run parses again, harmlessly
	if testing.Short() {
		*startErr = ErrShort
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	k, err := Start(ctx)
	cancel()
	*kc, *startErr = k, err
	if err != nil {
		fmt.Fprintf(os.Stderr, "kcfixture: %v\n", err)
	} else {
		fmt.Fprintf(os.Stderr, "kcfixture: Keycloak %s at %s (%s)\n", Version, k.URL, k.Mode)
	}
	code := m.Run()
	if err := k.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kcfixture: stopping Keycloak: %v\n", err)
	}
	if err != nil && InCI() && code == 0 {
		fmt.Fprintln(os.Stderr, "kcfixture: CI=true and Keycloak could not be started: failing")
		code = 1
	}
	return code
}

// Require returns the shared Keycloak, or ends the test: a skip locally, a failure in CI.
func Require(tb testing.TB, kc *Keycloak, startErr error) *Keycloak {
	tb.Helper()
	if startErr == nil && kc != nil {
		return kc
	}
	if testing.Short() {
		tb.Skip("skipping: needs Keycloak, and -short asks for no Keycloak")
	}
	if startErr == nil {
		startErr = errors.New("fixture not started (call kcfixture.Main or Start in TestMain)")
	}
	if InCI() || !errors.Is(startErr, ErrNoKeycloak) || errors.Is(startErr, ErrForced) {
		tb.Fatalf("Keycloak is required: %v", startErr)
	}
	tb.Skipf("skipping: needs Keycloak: %v", startErr)
	return nil
}

// ErrShort is the start error of a -short run: the tests that need Keycloak skip, in CI too
// (`make test` never runs with -short; `make test-unit` does).
var ErrShort = errors.New("-short: Keycloak not started")

// InCI reports whether the tests run in CI (CI=true), where Keycloak is mandatory.
func InCI() bool { return os.Getenv("CI") == "true" }

// RealmsDir finds integration/testdata/realms: from the module root above the working
// directory, else beside this source file.
func RealmsDir() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "integration", "testdata", "realms")
	if _, err := os.Stat(filepath.Join(dir, "corp-realm.json")); err != nil {
		return "", fmt.Errorf("finding the realm exports: %w", err)
	}
	return dir, nil
}

// repoRoot is the directory holding go.mod, found upwards from the working directory or from
// this source file.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "scripts", "fetch-keycloak.sh")); err == nil {
				if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
					return d, nil
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("finding the repository root (go.mod beside scripts/fetch-keycloak.sh)")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// externalServer is a Keycloak the fixture does not own.
type externalServer struct{}

func (externalServer) stop(context.Context) error  { return ErrNotSupported }
func (externalServer) start(context.Context) error { return ErrNotSupported }
func (externalServer) close(context.Context) error { return nil }
